"""Live progress of an optimization, and its cooperative cancellation.

The worker's :class:`ProgressReporter` is ticked by every metric call (the wrapped metric,
:mod:`.metrics`) and by phase changes. At most every ``DSPEX_OPTIMIZER_PROGRESS_INTERVAL_S``
it publishes one record three ways:

- Celery task state ``PROGRESS`` with the record as ``meta`` (``AsyncResult(id).info``), and a
  ``task-progress`` event, so Flower shows it;
- a Redis key (``dspex:optimize:<id>:progress``) that :class:`~.handle.OptimizeHandle` and
  ``dspex-jobs optimize --follow`` read;
- the telemetry event ``dspex.optimizer.progress`` (measurements: ``metric_calls``,
  ``elapsed_s``, ``best_score`` when known; metadata: ``job_id``, ``phase``, ``optimizer``).

On the same tick it reads the job's cancel flag; once set, the next metric call raises
:class:`OptimizationStopped` (a ``BaseException``, so DSPy's per-example error handling does
not swallow it) and the optimization stops at once.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from dspex_jobs.keys import Keys
from dspex_jobs.telemetry import emit

__all__ = ["PROGRESS_EVENT", "OptimizationStopped", "Progress", "ProgressReporter", "read_progress"]

PROGRESS_EVENT = "dspex.optimizer.progress"
"""Emitted with every published progress record."""

FINAL_PHASES = frozenset({"done", "cancelled", "failed"})
"""Phases after which nothing more is published."""

logger = logging.getLogger("dspex_jobs.optimize")


class OptimizationStopped(BaseException):
    """Raised inside the optimizer when its job was cancelled."""


@dataclass
class Progress:
    """One progress record (what Flower's ``meta`` and ``--follow`` show)."""

    job_id: str
    optimizer: str
    phase: str = "queued"
    metric_calls: int = 0
    budget: int | None = None
    trials_done: int = 0
    trials_total: int | None = None
    best_score: float | None = None
    started_at: float = field(default_factory=time.time)
    elapsed_s: float = 0.0
    eta_s: float | None = None
    resumed: bool = False
    attempt: int = 1

    def fraction(self) -> float | None:
        """Done of budget (0..1), when a budget is known."""
        if self.trials_total:
            return min(1.0, self.trials_done / self.trials_total)
        if self.budget:
            return min(1.0, self.metric_calls / self.budget)
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able."""
        return asdict(self)


class ProgressReporter:
    """Counts, publishes (throttled) and checks for cancellation, thread-safely."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        progress: Progress,
        *,
        interval_s: float,
        ttl_s: int,
        task: Any = None,
    ) -> None:
        self.client = client
        self.keys = keys
        self.progress = progress
        self.interval_s = interval_s
        self.ttl_s = ttl_s
        self.task = task
        self.cancelled = False
        self.deadline: float | None = None  # time.monotonic() after which it stops
        self.timed_out = False
        self._lock = threading.Lock()
        self._publishing = threading.Lock()  # one publish at a time: no stale overwrite
        self._closed = False  # a final phase was published: later ticks publish nothing
        self._last = 0.0

    def phase(self, name: str, **updates: Any) -> None:
        """Enter a phase (published at once); ``done``, ``cancelled`` and ``failed`` are
        final."""
        with self._lock:
            self.progress.phase = name
            for key, value in updates.items():
                setattr(self.progress, key, value)
        self.publish(force=True)
        if name in FINAL_PHASES:
            self._closed = True

    def metric_call(self) -> None:
        """One metric call done; raises :class:`OptimizationStopped` once cancelled or past
        the deadline."""
        with self._lock:
            self.progress.metric_calls += 1
        self._check_deadline()
        if self.cancelled:
            raise OptimizationStopped()
        self.publish()
        if self.cancelled:
            raise OptimizationStopped()

    def check_stop(self) -> None:
        """Raise :class:`OptimizationStopped` if cancelled or past the deadline (no Redis)."""
        self._check_deadline()
        if self.cancelled:
            raise OptimizationStopped()

    def _check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.timed_out = True
            raise OptimizationStopped()

    def trial(self, score: float | None = None) -> None:
        """One trial (candidate program) done, with its score."""
        with self._lock:
            self.progress.trials_done += 1
            if score is not None and (
                self.progress.best_score is None or score > self.progress.best_score
            ):
                self.progress.best_score = score
        self.publish(force=True)

    def check_cancel(self) -> None:
        """Raise :class:`OptimizationStopped` if the job was cancelled (reads Redis) or ran
        past its deadline."""
        self._check_deadline()
        if self.cancelled or self.client.exists(self.keys.cancel(self.progress.job_id)):
            self.cancelled = True
            raise OptimizationStopped()

    def publish(self, *, force: bool = False) -> None:
        """Publish the record if ``interval_s`` passed since the last one (or ``force``)."""
        now = time.monotonic()
        if self._closed or (not force and now - self._last < self.interval_s):
            return
        with self._publishing:
            self._publish(force, now)

    def _publish(self, force: bool, now: float) -> None:
        with self._lock:
            if self._closed or (not force and now - self._last < self.interval_s):
                return
            self._last = now
            p = self.progress
            p.elapsed_s = round(time.time() - p.started_at, 3)
            done = p.fraction()
            p.eta_s = round(p.elapsed_s * (1 - done) / done, 1) if done else None
            record = p.to_dict()
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.set(self.keys.optimize_progress(p.job_id), json.dumps(record), ex=self.ttl_s)
            pipe.exists(self.keys.cancel(p.job_id))
            _, cancelled = pipe.execute()
            self.cancelled = self.cancelled or bool(cancelled)
        except redis.RedisError as exc:  # progress is best effort; the job goes on
            logger.warning("could not publish optimizer progress: %s", exc)
        if self.task is not None:
            try:
                self.task.update_state(task_id=p.job_id, state="PROGRESS", meta=record)
                self.task.send_event("task-progress", **record)
            except Exception as exc:
                logger.debug("could not report task state: %s", exc)
        measurements = {
            "metric_calls": float(record["metric_calls"]),
            "elapsed_s": float(record["elapsed_s"]),
        }
        if record["best_score"] is not None:
            measurements["best_score"] = float(record["best_score"])
        emit(
            PROGRESS_EVENT,
            measurements,
            {"job_id": p.job_id, "phase": record["phase"], "optimizer": p.optimizer},
        )


def read_progress(client: redis.Redis, keys: Keys, job_id: str) -> Progress | None:
    """The latest published record of an optimization, if any."""
    raw = client.get(keys.optimize_progress(job_id))
    if raw is None:
        return None
    return Progress(**json.loads(raw))
