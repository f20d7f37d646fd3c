"""A whole deployment on one machine: Redis, the local LM server and one worker per queue.

The demo, the benchmarks and the integration tests all need the same thing: real
components, started as real processes, stopped cleanly with nothing left behind. Each
worker runs in its own process group so that stopping it also stops its pool children.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from dspex_jobs.embedded import EmbeddedRedis
from dspex_jobs.errors import ConfigurationError
from dspex_jobs.health import check_health
from dspex_jobs.settings import QUEUES, Settings

__all__ = ["LocalStack", "WorkerProcess", "settings_env"]


def _new_log_file(queue: str) -> str:
    """A new, empty log file only we can read: ``mkstemp`` creates it (mode 0600) in one
    step, where ``mktemp`` only names a path that another user could create first."""
    fd, path = tempfile.mkstemp(prefix=f"dspex-worker-{queue}-", suffix=".log")
    os.close(fd)
    return path


class WorkerProcess:
    """One ``dspex-jobs worker --queue <q>`` subprocess.

    Args:
        queue: The workload queue it consumes.
        env: The full environment for the worker (``DSPEX_*`` settings included).
        args: Extra ``dspex-jobs worker`` options (``--pool``, ``--concurrency``, ...).
        log_path: Where its output goes (a temporary file when omitted).
    """

    def __init__(
        self,
        queue: str,
        env: Mapping[str, str],
        args: Sequence[str] = (),
        log_path: str | None = None,
    ) -> None:
        self.queue = queue
        self.env = dict(env)
        self.args = list(args)
        self.log_path = log_path or _new_log_file(queue)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        """Start the worker (it is ready once its heartbeat appears: see :meth:`LocalStack`)."""
        argv = [sys.executable, "-m", "dspex_jobs", "worker", "--queue", self.queue, *self.args]
        with open(self.log_path, "ab") as log:  # argv: this interpreter, our module, no shell
            self.process = subprocess.Popen(
                argv,
                env=self.env,
                stdout=log,  # nosec B603
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        """The worker's main process id."""
        assert self.process is not None, "worker not started"
        return self.process.pid

    def alive(self) -> bool:
        """Whether the main process still runs."""
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 15.0) -> None:
        """Warm shutdown (SIGTERM to the group), then SIGKILL what is left."""
        if self.process is None:
            return
        _signal_group(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout_s)
        _signal_group(self.process.pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.wait(5)
        self.process = None

    def log(self) -> str:
        """Everything the worker printed so far."""
        try:
            return Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""


def settings_env(settings: Settings, names: Sequence[str]) -> dict[str, str]:
    """``DSPEX_*`` variables that give a worker process the same values of ``names``
    (secrets included: this is a child's environment, never a log)."""
    env = {}
    for name in names:
        value = getattr(settings, name)
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        elif isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, tuple):
            value = ",".join(
                "=".join(map(str, v)) if isinstance(v, tuple) else str(v) for v in value
            )
        env[f"DSPEX_{name.upper()}"] = str(value)
    return env


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class LocalStack:
    """Starts what is missing and stops what it started.

    Args:
        redis_url: Use this Redis; an embedded ``redis-server`` is started when ``None``.
        lm: Use this ``dspy.LM`` model (with ``lm_api_base``); the local LM server is
            started when ``None``.
        lm_api_base: Endpoint for ``lm``.
        queues: Start one worker per queue listed.
        worker_args: Extra ``dspex-jobs worker`` options per queue.
        lm_server_options: ``LMServerConfig`` fields for the local LM server (latency, faults).
        env: Extra environment variables for the workers.
        settings: More :class:`Settings` values (TLS files, passwords, Sentinel) for the
            stack's own client and, as ``DSPEX_*`` variables, for its workers.
    """

    def __init__(
        self,
        *,
        redis_url: str | None = None,
        lm: str | None = None,
        lm_api_base: str | None = None,
        queues: Sequence[str] = QUEUES,
        worker_args: Mapping[str, Sequence[str]] | None = None,
        lm_server_options: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        self.redis_url = redis_url
        self.settings_values = dict(settings or {})
        self.lm = lm
        self.lm_api_base = lm_api_base
        self.queues = tuple(queues)
        self.worker_args = dict(worker_args or {})
        self.lm_server_options = dict(lm_server_options or {})
        self.extra_env = dict(env or {})
        self.redis: EmbeddedRedis | None = None
        self.lm_server: Any = None
        self.workers: list[WorkerProcess] = []
        self.settings: Settings | None = None

    def start(self, timeout_s: float = 120.0) -> LocalStack:
        """Start Redis, the LM server and the workers; wait until every queue has a worker."""
        try:
            self._start(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout_s: float) -> None:
        if self.redis_url is None:
            self.redis = EmbeddedRedis().start()
            self.redis_url = self.redis.url
        if self.lm is None:
            from dspex_jobs.lmserver import LMServerConfig, LMServerProcess

            self.lm_server = LMServerProcess(LMServerConfig(**self.lm_server_options)).start()
            self.lm = "openai/extractive-minilm"
            self.lm_api_base = self.lm_server.url
        values: dict[str, Any] = {
            **self.settings_values,
            "redis_url": self.redis_url,
            "lm": self.lm,
        }
        if self.lm_api_base:
            values["lm_api_base"] = self.lm_api_base
        self.settings = Settings.from_env(environ={}, **values)
        for queue in self.queues:
            self.add_worker(queue, self.worker_args.get(queue, ()))
        self.wait_for_workers(timeout_s)

    def worker_env(self) -> dict[str, str]:
        """The environment workers run with: ours, ``DSPEX_`` values replaced by the stack's."""
        assert self.settings is not None, "stack not started"
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DSPEX_")}
        env.update({"DSPEX_REDIS_URL": self.settings.redis_url, "DSPEX_LM": self.settings.lm})
        env.update(settings_env(self.settings, list(self.settings_values)))
        if self.settings.lm_api_base:
            env["DSPEX_LM_API_BASE"] = self.settings.lm_api_base
        env.update(self.extra_env)
        return env

    def add_worker(self, queue: str, args: Sequence[str] = ()) -> WorkerProcess:
        """Start one more worker on ``queue`` (call :meth:`wait_for_workers` to wait for it)."""
        worker = WorkerProcess(queue, self.worker_env(), args).start()
        self.workers.append(worker)
        return worker

    def wait_for_workers(self, timeout_s: float = 120.0) -> None:
        """Block until every started worker's queue has a live worker that answers a ping.

        The ping matters: a prefork child takes jobs only once it has imported DSPy, so a
        heartbeat alone would call a worker ready seconds before it can run anything.

        Raises:
            ConfigurationError: A worker exited, or none came up in time (with its log).
        """
        assert self.settings is not None, "stack not started"
        deadline = time.monotonic() + timeout_s
        wanted = {w.queue for w in self.workers}
        while time.monotonic() < deadline:
            for worker in self.workers:
                if not worker.alive():
                    raise ConfigurationError(
                        f"the {worker.queue} worker exited; its log:\n{worker.log()[-3000:]}"
                    )
            report = check_health(self.settings, tuple(sorted(wanted)))
            if report.ok:
                self._ping(wanted, max(1.0, deadline - time.monotonic()))
                return
            time.sleep(0.1)
        logs = "\n".join(f"--- {w.queue}\n{w.log()[-2000:]}" for w in self.workers)
        raise ConfigurationError(f"workers did not come up in {timeout_s} s:\n{logs}")

    def _ping(self, queues: set[str], timeout_s: float) -> None:
        from dspex_jobs.client import Client

        with Client(self.settings) as client:
            # Pings run on workload queues; a webhooks worker is ready with its heartbeat.
            handles = [client.ping(queue) for queue in sorted(queues) if queue in QUEUES]
            for handle in handles:
                handle.result(timeout=timeout_s)

    def stop(self) -> None:
        """Stop workers, then the LM server, then Redis. Safe to call twice."""
        for worker in self.workers:
            worker.stop()
        self.workers.clear()
        if self.lm_server is not None:
            self.lm_server.stop()
            self.lm_server = None
        if self.redis is not None:
            self.redis.stop()
            self.redis = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
