"""Per-process worker state, the hooks that set it up, and the worker heartbeat.

Expensive things (the Redis client, DSPy, the LM, built modules) are created once per
worker *process*, after the fork: a child that inherited its parent's keep-alive sockets
would fail its first call. ``install_worker_hooks(app)`` warms the runtime in every prefork
child (``worker_process_init``) and in the main process for solo and thread pools
(``worker_init``), so the first job does not pay for importing DSPy.

Each worker also keeps a heartbeat key in Redis (``dspex:worker:<name>``, a short TTL)
saying which queues it consumes; ``dspex-jobs health`` reads these to count live workers
per queue without a broadcast round trip.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from celery import Celery, bootsteps
from celery.signals import worker_init, worker_process_init

from dspex_jobs.app import settings_of
from dspex_jobs.connections import process_redis
from dspex_jobs.errors import DeadlineExceeded, DSPexError, JobCancelled, LMRateLimited
from dspex_jobs.jobs import Job, JobKind
from dspex_jobs.keys import Keys
from dspex_jobs.multitask import (
    STOP_MODES,
    CancelWatch,
    SessionGate,
    Stopped,
    settle_stopped,
)
from dspex_jobs.resilience.breaker import BreakerConfig, CircuitBreaker
from dspex_jobs.resilience.deadletter import DeadLetters
from dspex_jobs.resilience.delayed import DelayedJobs
from dspex_jobs.resilience.guard import LMGuard
from dspex_jobs.resilience.lease import LeaseKeeper
from dspex_jobs.resilience.ratelimit import RateLimiter, RateLimits
from dspex_jobs.runtime.runner import RunOutcome
from dspex_jobs.sessions import SessionStore
from dspex_jobs.settings import Settings
from dspex_jobs.store import ResultStore
from dspex_jobs.streams import StreamWriter
from dspex_jobs.telemetry.catalogue import SESSION_BIND, SESSION_REBIND
from dspex_jobs.telemetry.events import has_handlers
from dspex_jobs.telemetry.lm import session_bound

if TYPE_CHECKING:
    from dspex_jobs.runtime import Runtime

__all__ = ["HEARTBEAT_INTERVAL_S", "WorkerContext", "install_worker_hooks", "worker_context"]

HEARTBEAT_INTERVAL_S = 2.0
"""How often a worker refreshes its heartbeat; the key lives three intervals."""

logger = logging.getLogger("dspex_jobs.worker")


class WorkerContext:
    """Everything one worker process keeps between jobs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.store = ResultStore(process_redis(settings), self.keys, settings.result_ttl_s)
        client = process_redis(settings)
        self.sessions = SessionStore(
            client,
            self.keys,
            max_history=settings.session_max_history,
            max_state_bytes=settings.session_max_state_bytes,
        )
        self.delayed = DelayedJobs(client, self.keys)
        self.gate = SessionGate(client, self.keys, settings.result_ttl_s)
        self.dead_letters = DeadLetters(client, self.keys)
        self.leases = LeaseKeeper(
            client,
            self.keys,
            settings.lease_ttl_s,
            token=f"{socket.gethostname()}:{os.getpid()}:{id(self)}",
        )
        self.guard = LMGuard(
            CircuitBreaker(
                client,
                self.keys,
                BreakerConfig(
                    settings.breaker_failure_threshold,
                    settings.breaker_window_s,
                    settings.breaker_open_s,
                ),
            ),
            RateLimiter(
                client,
                self.keys,
                RateLimits(settings.lm_requests_per_minute, settings.lm_tokens_per_minute),
            ),
        )
        self.worker_name = f"{socket.gethostname()}:{os.getpid()}"
        self.time_limit_s: float | None = None
        """Enforced by :func:`~dspex_jobs.deadlines.run_bounded` where the pool ignores
        Celery's limits (threads, solo); ``None`` in prefork, where Celery enforces them."""
        self._runtime: Runtime | None = None
        self._lock = threading.Lock()

    def runtime(self) -> Runtime:
        """The DSPy runtime of this process, built on first use."""
        if self._runtime is None:
            with self._lock:
                if self._runtime is None:
                    from dspex_jobs.runtime import Runtime

                    self._runtime = Runtime(self.settings, self.guard)
        return self._runtime

    def execute(self, job: Job, worker: str) -> RunOutcome:
        """Run a job: its outputs, the LM usage it caused and the model that answered.

        A session's job binds the session to this worker, runs with the session's state
        (missing inputs from its variables, ``dspy.History`` from its history) and records
        its turn; the state lives in Redis, so any worker can pick a session up.
        """
        if job.kind is JobKind.PING:
            from dspex_jobs.caches import cache_sizes

            # The sizes of this process's caches ride along (docs/caching.md).
            return RunOutcome(
                {"pong": True, "pid": os.getpid(), "caches": cache_sizes(self._runtime)}, {}, None
            )
        if job.kind.queue == "neural":  # embeddings and vector indexes: no DSPy, no LM
            from dspex_jobs.neural.service import run_neural_job

            return RunOutcome(run_neural_job(self.settings, job), {}, None)
        if job.kind in _PROGRAM_KINDS:  # registered programs, batches, optimizations
            from dspex_jobs.programs.execute import run_program_job

            return run_program_job(self, job)
        on_chunk = self.stream_writer(job.id).chunk if job.stream else None
        if job.session_id is None:
            return self._bounded(job, lambda: self.runtime().run(job, on_chunk))
        state = self.sessions.require(job.session_id)
        previous = self.sessions.binding(job.session_id) if _binding_heard() else worker
        self.sessions.bind(job.session_id, worker)
        session_bound(job.session_id, worker, previous)
        # A newer job of the session may interrupt or roll this one back (multitask).
        watch = CancelWatch(self.store.client, self.keys, job.id)
        try:
            outcome = self._bounded(
                job,
                lambda: self.runtime().run(job, watch.wrap(on_chunk) if on_chunk else None, state),
            )
        except Stopped as stop:  # mid-stream: what was streamed is the partial output
            raise settle_stopped(
                self.sessions, job.id, job.session_id, job.inputs, state, stop.mode, stop.partial
            ) from None
        mode = watch.mode()
        if mode is not None:  # flagged during a call that does not stream
            raise settle_stopped(
                self.sessions, job.id, job.session_id, job.inputs, state, mode, outcome.outputs
            )
        self.sessions.record_turn(job.session_id, job.inputs, outcome.outputs)
        return outcome

    def _bounded(self, job: Job, work: Callable[[], RunOutcome]) -> RunOutcome:
        """Run ``work`` within the pool's time limit and the job's deadline (see
        :mod:`dspex_jobs.deadlines`); directly when neither applies."""
        if self.time_limit_s is None and job.deadline_at is None:
            return work()
        from dspex_jobs.deadlines import run_bounded

        return run_bounded(
            work,
            job_id=job.id,
            limit_s=self.time_limit_s,
            deadline_at=job.deadline_at,
            cancelled=lambda: self.cancel_requested(job.id),
        )

    def stream_writer(self, job_id: str) -> StreamWriter:
        """Where a streaming job's chunks and end record go."""
        return StreamWriter(self.store.client, self.keys.stream(job_id), self.settings.result_ttl_s)

    def retry_delay_s(self, attempt: int, error: DSPexError) -> float:
        """Exponential backoff with full jitter, and never less than the provider's Retry-After."""
        backoff = min(
            self.settings.retry_backoff_max_s, self.settings.retry_backoff_s * 2 ** (attempt - 1)
        )
        delay = random.uniform(0, backoff)
        if isinstance(error, LMRateLimited) and error.retry_after_s:
            delay = max(delay, error.retry_after_s)
        return delay

    @property
    def countdown_limit_s(self) -> float:
        """Longest wait held as a Celery countdown; longer waits are parked in Redis.

        A countdown waits unacknowledged in a worker, and one longer than the visibility
        timeout would be redelivered to a second worker while the first still holds it.
        """
        return min(self.settings.retry_backoff_max_s, self.settings.visibility_timeout_s / 4)

    def refusal(self, job: Job, cancelled: bool) -> DSPexError | None:
        """Why the job must not start (cancelled, past its deadline), if it must not."""
        if cancelled:
            return JobCancelled(f"job {job.id} was cancelled before it started", job_id=job.id)
        if job.deadline_at is not None and time.time() > job.deadline_at:
            late_s = time.time() - job.deadline_at
            return DeadlineExceeded(
                f"job {job.id} reached a worker {late_s:.1f} s after its deadline; it was not run",
                job_id=job.id,
            )
        return None

    def has_webhook(self, job: Job) -> bool:
        """Whether the job's end is announced by a webhook (its own, or the default one)."""
        return bool(job.webhook or self.settings.webhook_url)

    def cancel_requested(self, job_id: str) -> bool:
        """Whether the job was cancelled while it ran.

        Not when a newer job of its session interrupts or rolls it back: :meth:`execute`
        settles those itself (partial outputs, session state; :mod:`dspex_jobs.multitask`).
        """
        value = self.store.client.get(self.keys.cancel(job_id))
        return value is not None and value not in _STOP_MODES


def _binding_heard() -> bool:
    """Whether anyone listens to session (re)binds: only then is the old binding read."""
    return has_handlers(SESSION_BIND) or has_handlers(SESSION_REBIND)


_STOP_MODES = frozenset(mode.encode() for mode in STOP_MODES)

_PROGRAM_KINDS = frozenset({JobKind.PROGRAM, JobKind.PROGRAM_BATCH, JobKind.OPTIMIZE})
"""Kinds run by :mod:`dspex_jobs.programs.execute` (registered programs, the optimizer)."""

_contexts: dict[tuple[int, int], WorkerContext] = {}
_contexts_lock = threading.Lock()


def worker_context(app: Celery) -> WorkerContext:
    """The :class:`WorkerContext` of this process for ``app`` (created after any fork)."""
    key = (os.getpid(), id(app))
    ctx = _contexts.get(key)
    if ctx is None:
        with _contexts_lock:
            ctx = _contexts.get(key)
            if ctx is None:
                ctx = _contexts[key] = WorkerContext(settings_of(app))
    return ctx


def install_worker_hooks(app: Celery, *, warm_runtime: bool = True) -> None:
    """Warm each worker process's runtime and keep a heartbeat. Call once per worker app.

    ``warm_runtime=False`` for workers that never run DSPy (the webhooks pool): they start
    in a fraction of the time and memory.
    """

    def warm(**_: Any) -> None:
        if not warm_runtime:
            return
        try:
            worker_context(app).runtime()
        except Exception:  # a broken LM setting must fail jobs, not kill the pool
            logger.exception("could not warm the DSPy runtime; jobs will retry building it")

    worker_process_init.connect(warm, weak=False, dispatch_uid=f"dspex-warm-child-{id(app)}")

    def warm_main(sender: Any = None, **_: Any) -> None:
        # Prefork children warm themselves after the fork; other pools run jobs here.
        if getattr(sender, "app", None) is app and not _is_prefork(sender.pool_cls):
            # This pool ignores Celery's time limits: our jobs enforce the soft one themselves.
            limit = getattr(sender, "soft_time_limit", None) or getattr(sender, "time_limit", None)
            worker_context(app).time_limit_s = float(limit) if limit else None
            warm()

    worker_init.connect(warm_main, weak=False, dispatch_uid=f"dspex-warm-main-{id(app)}")
    app.steps["worker"].add(Heartbeat)
    from dspex_jobs.telemetry.setup import install_worker_telemetry

    install_worker_telemetry(app)  # logs, metrics, Sentry, alerts: each only if configured


def _is_prefork(pool_cls: Any) -> bool:
    return "prefork" in str(getattr(pool_cls, "__module__", pool_cls))


def _load() -> dict[str, int]:
    """Jobs this worker runs and holds now: ``dspex-jobs metrics`` sums them per queue, so
    an autoscaler never scales a queue to zero under a job that is still running."""
    from celery.worker import state

    return {"active": len(state.active_requests), "reserved": len(state.reserved_requests)}


class Heartbeat(bootsteps.StartStopStep):
    """Refreshes ``dspex:worker:<name>`` with the queues this worker consumes."""

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, parent: Any) -> None:
        settings = settings_of(parent.app)
        client = process_redis(settings)
        key = Keys(settings.key_prefix).worker_heartbeat(parent.hostname)
        queues = sorted(parent.app.amqp.queues.consume_from or parent.app.amqp.queues)
        record = {
            "name": parent.hostname,
            "queues": queues,
            "pid": os.getpid(),
            "concurrency": parent.concurrency,
            "pool": str(getattr(parent.pool_cls, "__module__", parent.pool_cls)),
        }
        if "neural" in queues:  # where its model runs ("cpu", "cuda"), for `dspex-jobs health`
            from dspex_jobs.neural.device import worker_device

            record["device"] = worker_device(settings.neural_device)
        ttl_ms = int(HEARTBEAT_INTERVAL_S * 3 * 1000)
        delayed = DelayedJobs(client, Keys(settings.key_prefix))

        def beat() -> None:
            while True:
                try:
                    client.set(key, json.dumps({**record, "at": time.time(), **_load()}), px=ttl_ms)
                    delayed.release_due(parent.app)  # parked retries and rate-limited jobs
                except Exception as exc:  # Redis away for a moment: health will notice
                    logger.warning("heartbeat failed: %s", exc)
                if self._stop.wait(HEARTBEAT_INTERVAL_S):
                    break
            try:
                client.delete(key)
            except Exception:
                logger.debug("could not remove heartbeat %s", key)

        self._thread = threading.Thread(target=beat, name="dspex-heartbeat", daemon=True)
        self._thread.start()

    def stop(self, parent: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    shutdown = stop
