"""The job lifecycle events (``dspex.job.*``), built in one place for producer and worker.

Each function costs one dict lookup when nobody listens (:func:`has_handlers` first), so the
task body calls them unconditionally. None of them raises: :func:`emit` isolates handlers.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from dspex_jobs.telemetry.catalogue import JOB_FAIL, JOB_RETRY, JOB_START, JOB_STOP, JOB_SUBMIT
from dspex_jobs.telemetry.events import emit, has_handlers

if TYPE_CHECKING:
    from dspex_jobs.errors import DSPexError
    from dspex_jobs.jobs import Job

__all__ = ["failed", "finished", "retried", "started", "submitted"]


def _labels(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "kind": job.kind.value,
        "queue": job.target_queue,
        "trace_id": job.trace_id,
    }


def submitted(job: Job, size_bytes: int = 0) -> None:
    """The producer enqueued ``job``."""
    if has_handlers(JOB_SUBMIT):
        emit(
            JOB_SUBMIT,
            {"size_bytes": float(size_bytes)},
            {**_labels(job), "session_id": job.session_id, "correlation_id": job.correlation_id},
        )


def started(job: Job, worker: str, attempt: int, started_at: float) -> None:
    """A worker holds the job's lease and is about to run it."""
    if has_handlers(JOB_START):
        emit(
            JOB_START,
            {"queue_wait_s": max(0.0, started_at - job.created_at)},
            {**_labels(job), "attempt": attempt, "worker": worker},
        )


def retried(job: Job, worker: str, attempt: int, error: DSPexError, delay_s: float) -> None:
    """A retryable failure: the job runs again in ``delay_s``."""
    if has_handlers(JOB_RETRY):
        emit(
            JOB_RETRY,
            {"delay_s": float(delay_s)},
            {**_labels(job), "attempt": attempt, "worker": worker, "error_code": error.code},
        )


def finished(
    job: Job,
    worker: str,
    attempt: int,
    started_at: float,
    status: str,
    error: DSPexError | None,
    model: str | None,
) -> None:
    """The job's result was stored (``dspex.job.stop``, and ``dspex.job.fail`` if it failed).

    Called from inside the ``except`` block of a failure, so a Sentry handler can capture the
    exception being handled.
    """
    if not (has_handlers(JOB_STOP) or (error is not None and has_handlers(JOB_FAIL))):
        return
    duration_s = max(0.0, time.time() - started_at)
    labels = {**_labels(job), "attempt": attempt, "worker": worker}
    emit(
        JOB_STOP,
        {"duration_s": duration_s, "queue_wait_s": max(0.0, started_at - job.created_at)},
        {**labels, "status": status, "error_code": error.code if error else None, "model": model},
    )
    if error is not None and status == "failed":
        failed(labels, error, duration_s)


def failed(labels: dict[str, Any], error: DSPexError, duration_s: float) -> None:
    """``dspex.job.fail`` for a job described by ``labels``."""
    emit(
        JOB_FAIL,
        {"duration_s": duration_s},
        {
            **labels,
            "error_code": error.code,
            "error_message": error.message,
            "retryable": bool(error.retryable),
        },
    )
