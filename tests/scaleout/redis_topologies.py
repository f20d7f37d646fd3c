"""Real Redis topologies for the scale-out tests: a TLS+ACL server, a Sentinel group.

Each is real ``redis-server`` processes on free loopback ports, started here and stopped by
the caller (context managers). The TLS certificates come from a CA made on the spot with the
``openssl`` command; nothing is downloaded.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

from dspex_jobs.embedded import find_redis_server, free_port

MASTER = "dspex-primary"


def tls_unavailable() -> str | None:
    """Why the TLS test cannot run here, or None."""
    if shutil.which("openssl") is None:
        return "no openssl command to make a test CA"
    probe = subprocess.run(
        [find_redis_server(), "--tls-port", "0", "--port", "0", "--test-memory", "0"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    if "tls-port" in (probe.stdout + probe.stderr) and "Bad directive" in (
        probe.stdout + probe.stderr
    ):
        return f"{find_redis_server()} was built without TLS"
    return None


@dataclass
class TLSFiles:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it."""

    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str


def make_tls_files(directory: Path) -> TLSFiles:
    """Make a throwaway CA and the certificates signed by it (EC P-256: fast)."""

    def run(*args: str) -> None:
        subprocess.run(
            ["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=30
        )

    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run(
        "req",
        "-x509",
        "-new",
        *key,
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=dspex test CA",
    )
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        run(
            "req",
            "-new",
            *key,
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN=dspex test {name}",
        )
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        )
    return TLSFiles(
        *(
            str(directory / f)
            for f in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")
        )
    )


class RedisProcess:
    """One ``redis-server`` (or Sentinel) process with arbitrary options.

    Args:
        args: Options after the binary (a config file path first for Sentinels).
        ready: A redis-py client factory used to wait until the server answers; an
            authentication error counts as answering.
    """

    def __init__(self, args: Sequence[str], ready: Any, directory: Path) -> None:
        self.args = list(args)
        self.ready = ready
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> RedisProcess:
        log = open(self.directory / f"redis-{id(self)}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [find_redis_server(), *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server {self.args} exited: {self.log()[-800:]}")
            client = self.ready()
            try:
                client.ping()
                return self
            except (redis.AuthenticationError, redis.ResponseError):
                return self
            except (redis.ConnectionError, redis.TimeoutError):
                time.sleep(0.05)
            finally:
                client.close()
        self.stop()
        raise RuntimeError(f"redis-server {self.args} did not come up: {self.log()[-800:]}")

    def log(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in self.directory.glob(f"redis-{id(self)}.log")
        )

    def kill(self) -> None:
        """SIGKILL: the abrupt loss of a host."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(5)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


class TLSRedis:
    """A redis-server that speaks only TLS (no plain port), with ``requirepass`` and an ACL
    user ``worker`` that has its own password."""

    def __init__(self, password: str, acl_password: str) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="dspex-tls-"))
        self.files = make_tls_files(self.directory)
        self.port = free_port()
        self.password = password
        self.acl_password = acl_password
        args = [
            "--port",
            "0",
            "--tls-port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            self.files.server_cert,
            "--tls-key-file",
            self.files.server_key,
            "--tls-ca-cert-file",
            self.files.ca,
            "--tls-auth-clients",
            "optional",
            "--requirepass",
            password,
            "--user",
            "worker",
            "on",
            f">{acl_password}",
            "~*",
            "&*",
            "+@all",
            "--databases",
            "4",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
        ]
        self.server = RedisProcess(args, self._ready_client, self.directory)

    def _ready_client(self) -> redis.Redis:
        return redis.Redis(
            port=self.port,
            ssl=True,
            ssl_ca_certs=self.files.ca,
            password=self.password,
            socket_timeout=1,
        )

    def __enter__(self) -> TLSRedis:
        self.server.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def _pairs(args: list[str]) -> list[str]:
    """``["--port", "0", "--tls-port", "1"]`` as config lines ``["port 0", "tls-port 1"]``."""
    return [f"{args[i].lstrip('-')} {args[i + 1]}" for i in range(0, len(args), 2)]


class SentinelGroup:
    """A primary, one replica and three Sentinels (quorum 2) on loopback.

    The primary keeps AOF on and ``min-replicas-to-write 1`` (a write it accepts reached a
    replica within ``min-replicas-max-lag`` seconds, or it is refused); the replica has no
    such rule, so after promotion it accepts writes while it has no replica of its own.
    """

    def __init__(
        self,
        down_after_ms: int = 1000,
        *,
        tls: bool = False,
        password: str | None = None,
        sentinel_password: str | None = None,
    ) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="dspex-sentinel-"))
        self.files = make_tls_files(self.directory) if tls else None
        self.password, self.sentinel_password = password, sentinel_password
        self.primary_port, self.replica_port = free_port(), free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        base = [
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--databases",
            "4",
            *self._tls_args(),
        ]
        if password:
            base += ["--requirepass", password, "--masterauth", password]
        self.primary = RedisProcess(
            [
                *self._port_args(self.primary_port),
                "--dir",
                self._dir("primary"),
                *base,
                "--min-replicas-to-write",
                "1",
                "--min-replicas-max-lag",
                "10",
            ],
            lambda: self.client(self.primary_port),
            self.directory,
        )
        self.replica = RedisProcess(
            [
                *self._port_args(self.replica_port),
                "--dir",
                self._dir("replica"),
                *base,
                "--replicaof",
                "127.0.0.1",
                str(self.primary_port),
            ],
            lambda: self.client(self.replica_port),
            self.directory,
        )
        self.sentinels = []
        for port in self.sentinel_ports:
            conf = self.directory / f"sentinel-{port}.conf"
            lines = [
                *_pairs(self._port_args(port)),
                "bind 127.0.0.1",
                f"dir {self.directory}",
                f"sentinel monitor {MASTER} 127.0.0.1 {self.primary_port} 2",
                f"sentinel down-after-milliseconds {MASTER} {down_after_ms}",
                f"sentinel failover-timeout {MASTER} 4000",
                f"sentinel parallel-syncs {MASTER} 1",
            ]
            if password:
                lines.append(f"sentinel auth-pass {MASTER} {password}")
            if sentinel_password:
                lines += [
                    f"requirepass {sentinel_password}",
                    f"sentinel sentinel-pass {sentinel_password}",
                ]
            lines += _pairs(self._tls_args())
            conf.write_text("\n".join(lines) + "\n")
            self.sentinels.append(
                RedisProcess(
                    [str(conf), "--sentinel"],
                    lambda port=port: self.client(port, sentinel=True),  # type: ignore[misc]
                    self.directory,
                )
            )

    def _port_args(self, port: int) -> list[str]:
        if self.files:
            return ["--port", "0", "--tls-port", str(port)]
        return ["--port", str(port)]

    def _tls_args(self) -> list[str]:
        if not self.files:
            return []
        return [
            "--tls-cert-file",
            self.files.server_cert,
            "--tls-key-file",
            self.files.server_key,
            "--tls-ca-cert-file",
            self.files.ca,
            "--tls-auth-clients",
            "no",
            "--tls-replication",
            "yes",
        ]

    def client(self, port: int, *, sentinel: bool = False, **kwargs: Any) -> redis.Redis:
        """A plain redis-py client to one node (for the test's own checks)."""
        password = self.sentinel_password if sentinel else self.password
        tls = {"ssl": True, "ssl_ca_certs": self.files.ca} if self.files else {}
        return redis.Redis(port=port, socket_timeout=1, password=password, **tls, **kwargs)

    def _dir(self, name: str) -> str:
        path = self.directory / name
        path.mkdir()
        return str(path)

    @property
    def url(self) -> str:
        """The ``sentinel://`` URL (db 1) clients are configured with."""
        return ";".join(f"sentinel://127.0.0.1:{p}/1" for p in self.sentinel_ports)

    def sentinel_view(self) -> list[dict[str, Any]]:
        """``SENTINEL MASTER`` as each Sentinel sees it."""
        views = []
        for port in self.sentinel_ports:
            client = self.client(port, sentinel=True, decode_responses=True)
            try:
                views.append(client.sentinel_master(MASTER))
            except redis.RedisError:
                views.append({})
            finally:
                client.close()
        return views

    def current_primary_port(self) -> int | None:
        """The primary's port as the Sentinels' majority reports it."""
        ports = [int(v["port"]) for v in self.sentinel_view() if v.get("port")]
        return max(set(ports), key=ports.count) if ports else None

    def wait_until_watched(self, timeout_s: float = 20.0) -> None:
        """Until the primary has a good replica (it refuses writes before) and every
        Sentinel knows the replica and the two other Sentinels."""
        deadline = time.monotonic() + timeout_s
        primary = self.client(self.primary_port)
        try:
            while primary.info("replication").get("min_slaves_good_slaves", 0) < 1:
                if time.monotonic() > deadline:
                    raise RuntimeError("the replica never caught up with the primary")
                time.sleep(0.05)
        finally:
            primary.close()
        while time.monotonic() < deadline:
            views = self.sentinel_view()
            if all(
                int(v.get("num-slaves", 0)) >= 1 and int(v.get("num-other-sentinels", 0)) >= 2
                for v in views
            ):
                return
            time.sleep(0.2)
        raise RuntimeError(f"sentinels never saw the whole group: {self.sentinel_view()}")

    def wait_for_promotion(self, timeout_s: float = 30.0) -> float:
        """Until the Sentinels name the replica as primary and it accepts writes; seconds."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.current_primary_port() == self.replica_port:
                client = self.client(self.replica_port)
                try:
                    if client.info("replication")["role"] == "master":
                        return time.monotonic() - started
                except redis.RedisError:
                    pass
                finally:
                    client.close()
            time.sleep(0.1)
        raise RuntimeError(f"no promotion in {timeout_s} s: {self.sentinel_view()}")

    def __enter__(self) -> SentinelGroup:
        try:
            self.primary.start()
            self.replica.start()
            for sentinel in self.sentinels:
                sentinel.start()
            self.wait_until_watched()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for process in (*self.sentinels, self.replica, self.primary):
            process.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
