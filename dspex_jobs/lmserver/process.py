"""The LM server as a child process: ``python -m dspex_jobs.lmserver ...``.

Use this where the server must not share the test's (or worker's) process: load tests,
fault tests that kill things, workers that fork. It has the same contract as
:class:`~dspex_jobs.lmserver.server.LocalLMServer`: ``start()`` returns once the model is
loaded and ``/health`` answers 200, ``url`` is the ``api_base`` for ``dspy.LM``, ``stop()``
ends it (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from types import TracebackType
from typing import IO, Any

from dspex_jobs.lmserver.config import LMServerConfig, LMServerStartError
from dspex_jobs.lmserver.server import READY_LINE_PREFIX

__all__ = ["LMServerProcess"]

_STDERR_TAIL_CHARS = 4000


class LMServerProcess:
    """The LM server in a subprocess of this one.

    Args:
        config: Server options (passed as command-line flags).
        ready_timeout_s: How long :meth:`start` waits for the ready line and ``/health``.
        python: The interpreter to run (this one by default).
        env: Environment of the child; this process's when None.

    Example:
        >>> with LMServerProcess(LMServerConfig(rate_limit_rate=0.5, seed=1)) as server:
        ...     print(server.url)  # doctest: +SKIP
    """

    def __init__(
        self,
        config: LMServerConfig | None = None,
        *,
        ready_timeout_s: float = 120.0,
        python: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.config = config or LMServerConfig()
        self.ready_timeout_s = ready_timeout_s
        self.python = python or sys.executable
        self.env = env
        self._proc: subprocess.Popen[str] | None = None
        self._stderr: IO[bytes] | None = None
        self._url: str | None = None

    @property
    def argv(self) -> list[str]:
        """The command line that starts the server."""
        return [
            self.python,
            "-m",
            "dspex_jobs.lmserver",
            "--stop-on-stdin-eof",
            *self.config.to_argv(),
        ]

    @property
    def url(self) -> str:
        """The ``api_base`` for ``dspy.LM``: ``http://host:port/v1``."""
        if self._url is None:
            raise RuntimeError("LMServerProcess is not running; call start() first.")
        return self._url

    @property
    def pid(self) -> int | None:
        """The child's process id, while it runs."""
        return self._proc.pid if self._proc is not None else None

    def start(self) -> LMServerProcess:
        """Spawn the server and wait until it answers.

        Returns:
            This object, for chaining.

        Raises:
            LMServerStartError: The child exited or did not become ready within
                ``ready_timeout_s``; the message carries the end of its stderr.
        """
        if self._proc is not None:
            return self
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        # The child holds the read end of stdin: if this process dies, the pipe closes
        # and the server stops instead of lingering as an orphan.
        # argv list (this interpreter, our module), no shell.
        self._proc = subprocess.Popen(  # nosec B603
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
        )
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(
            target=_pump, args=(self._proc.stdout, lines), daemon=True, name="lm-server-stdout"
        ).start()
        deadline = time.monotonic() + self.ready_timeout_s
        try:
            self._url = self._wait_for_line(lines, deadline)
            self._wait_for_health(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_for_line(self, lines: queue.Queue[str | None], deadline: float) -> str:
        assert self._proc is not None
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.1)
            except queue.Empty:
                line = ""
            if line is None or (not line and self._proc.poll() is not None):
                raise self._failure(f"exited with status {self._proc.wait()} before it was ready")
            if line.startswith(READY_LINE_PREFIX):
                return line[len(READY_LINE_PREFIX) :].strip()
        raise self._failure(f"printed no ready line within {self.ready_timeout_s:g} s")

    def _wait_for_health(self, deadline: float) -> None:
        assert self._url is not None and self._proc is not None
        health = self._url.removesuffix("/v1") + "/health"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise self._failure(f"exited with status {self._proc.returncode}")
            try:
                # bandit B310: http://127.0.0.1:<port>/health, printed by our own child
                with urllib.request.urlopen(health, timeout=2.0) as response:  # nosec B310
                    if json.load(response).get("status") == "ok":
                        return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(0.1)
        raise self._failure(f"did not answer {health} within {self.ready_timeout_s:g} s")

    def _failure(self, what: str) -> LMServerStartError:
        return LMServerStartError(
            f"The LM server ({' '.join(self.argv)}) {what}.\n--- its stderr ---\n"
            f"{self.stderr_tail()}",
            argv=self.argv,
        )

    def stderr_tail(self, chars: int = _STDERR_TAIL_CHARS) -> str:
        """The end of the child's stderr so far."""
        if self._stderr is None:
            return ""
        self._stderr.flush()
        self._stderr.seek(0, os.SEEK_END)
        size = self._stderr.tell()
        self._stderr.seek(max(0, size - chars))
        return self._stderr.read().decode("utf-8", errors="replace")

    def stop(self, grace_s: float = 15.0) -> int | None:
        """Terminate the child (SIGTERM, SIGKILL after ``grace_s``) and wait for it.

        Returns:
            Its exit status, or None when it was not running.
        """
        proc, self._proc = self._proc, None
        status: int | None = None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(grace_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            status = proc.returncode
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        self._url = None
        return status

    def __enter__(self) -> LMServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _pump(stream: Any, lines: queue.Queue[str | None]) -> None:
    """Read the child's stdout to its end (so it never blocks on a full pipe)."""
    try:
        for line in stream:
            lines.put(line)
    except (OSError, ValueError):
        pass
    finally:
        lines.put(None)
