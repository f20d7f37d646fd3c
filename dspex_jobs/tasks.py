"""Thin task bodies: decode the envelope, run it, store the result.

One Celery task per job kind (``dspex.predict``, ``dspex.chain_of_thought``, ``dspex.ping``),
so Flower shows what each job is and ``task_routes`` sends each kind to its queue. All
kinds share :func:`run_job`. This module is imported by producers too (to register the
task names), so DSPy is imported only inside the body, and only for kinds that need it.

A message that is not a valid envelope is logged and dropped, never retried, and never
takes the worker down. A retryable failure (rate limit, timeout, provider 5xx) is retried
with exponential backoff; anything else is stored as a failure with its stable code.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Celery, Task
from pydantic import ValidationError as PydanticValidationError

from dspex_jobs.errors import DSPexError, JobFailed
from dspex_jobs.jobs import Job, JobKind
from dspex_jobs.results import JobErrorInfo, JobResult, JobStatus, Timings

__all__ = ["register_tasks", "run_job"]

logger = logging.getLogger("dspex_jobs.tasks")


def register_tasks(app: Celery) -> None:
    """Register one task per job kind on ``app``."""
    for kind in JobKind:
        app.task(
            name=kind.task_name,
            bind=True,
            ignore_result=True,  # results live in our store (dspex_jobs.store), written once
            acks_late=True,
            reject_on_worker_lost=True,
            # Typed failures are expected outcomes: logged in one line, not as a traceback.
            throws=(DSPexError,),
        )(run_job)
    app.task(name=CLEANUP_TASK, bind=True)(cleanup_sessions)


CLEANUP_TASK = "dspex.sessions.cleanup"
"""The periodic task (celery beat) that removes stale session bindings."""


def cleanup_sessions(task: Task[Any, Any]) -> int:
    """Remove bindings to dead workers or expired sessions; return how many were removed."""
    from dspex_jobs.worker import worker_context

    ctx = worker_context(task.app)
    client = ctx.store.client
    removed = ctx.sessions.cleanup(
        lambda worker: bool(client.exists(ctx.keys.worker_heartbeat(worker)))
    )
    logger.info("session cleanup removed %d stale binding(s)", removed)
    return removed


def run_job(task: Task[Any, Any], payload: Any) -> dict[str, Any] | None:
    """Run one job envelope and store its result. The return value is a summary for Flower."""
    from dspex_jobs.worker import worker_context  # per-process state, built once

    ctx = worker_context(task.app)
    started_at = time.time()
    job = _decode(payload, ctx.settings.max_payload_bytes)
    if job is None:
        return None
    attempt = int(task.request.retries or 0) + 1
    worker = str(task.request.hostname or ctx.worker_name)
    ctx.store.mark_running(job.id, worker, attempt, JobStatus.RUNNING)
    try:
        outputs, usage = ctx.execute(job, worker)
    except DSPexError as error:
        if error.retryable and attempt <= ctx.settings.job_max_retries:
            ctx.store.mark_running(job.id, worker, attempt, JobStatus.RETRYING)
            raise task.retry(countdown=ctx.retry_delay_s(attempt, error), exc=error) from error
        _finish(ctx, job, worker, attempt, started_at, error=error)
        raise
    except Exception as exc:  # anything unclassified is a permanent failure of this job
        logger.exception("job %s (%s) failed", job.id, job.kind.value)
        failure = JobFailed(f"{type(exc).__name__}: {exc}", job_id=job.id)
        _finish(ctx, job, worker, attempt, started_at, error=failure)
        raise failure from exc
    _finish(ctx, job, worker, attempt, started_at, outputs=outputs, usage=usage)
    return {"job_id": job.id, "status": "succeeded", "outputs": sorted(outputs)}


def _decode(payload: Any, max_payload_bytes: int) -> Job | None:
    if not isinstance(payload, dict):
        logger.error("dropped a malformed message: expected a job envelope, got %s",
                     type(payload).__name__)
        return None
    try:
        return Job.model_validate(payload)
    except PydanticValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'envelope'}: {e['msg']}" for e in exc.errors()
        )
        logger.error("dropped a malformed job envelope (id=%r): %s", payload.get("id"), problems)
        return None


def _finish(
    ctx: Any,
    job: Job,
    worker: str,
    attempt: int,
    started_at: float,
    *,
    outputs: dict[str, Any] | None = None,
    usage: dict[str, dict[str, Any]] | None = None,
    error: DSPexError | None = None,
) -> None:
    if error is not None:
        logger.warning("job %s failed: [%s] %s", job.id, error.code, error.message)
    if job.stream:
        ctx.stream_writer(job.id).end(outputs, error)
    result = JobResult(
        job_id=job.id,
        kind=job.kind.value,
        status=JobStatus.FAILED if error else JobStatus.SUCCEEDED,
        outputs=outputs,
        error=JobErrorInfo.from_error(error) if error else None,
        usage=usage or {},
        timings=Timings(created_at=job.created_at, started_at=started_at, finished_at=time.time()),
        worker=worker,
        attempt=attempt,
        correlation_id=job.correlation_id,
        trace_id=job.trace_id,
    )
    ctx.store.save(result)
