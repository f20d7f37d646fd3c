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

import contextlib
import logging
import time
import traceback
from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject, SoftTimeLimitExceeded, TimeLimitExceeded
from celery.signals import task_failure
from celery.utils import worker_direct
from pydantic import ValidationError as PydanticValidationError

from dspex_jobs.connections import REDIS_DOWN, wait_for_redis
from dspex_jobs.errors import (
    DeadlineExceeded,
    DSPexError,
    JobCancelled,
    JobFailed,
    OptimizeTimeLimit,
    PayloadError,
)
from dspex_jobs.jobs import Job, JobKind
from dspex_jobs.multitask import STOP_MODES
from dspex_jobs.protocol import check_out, is_claim
from dspex_jobs.resilience.guard import RateLimitWait
from dspex_jobs.results import JobErrorInfo, JobResult, JobStatus, Timings
from dspex_jobs.telemetry import jobs as job_events
from dspex_jobs.telemetry.context import job_context
from dspex_jobs.telemetry.otel import job_span
from dspex_jobs.webhooks.delivery import (
    register_webhook_tasks,
    schedule_job_webhook,
    send_scheduled,
)

__all__ = ["register_tasks", "run_job"]

logger = logging.getLogger("dspex_jobs.tasks")


def register_tasks(app: Celery) -> None:
    """Register one task per job kind on ``app``, and the pipeline tasks
    (``dspex.pipeline.step``, ``dspex.pipeline.merge``: :mod:`dspex_jobs.pipeline.tasks`)."""
    for kind in JobKind:
        app.task(
            name=kind.task_name,
            bind=True,
            ignore_result=True,  # results live in our store (dspex_jobs.store), written once
            acks_late=True,
            reject_on_worker_lost=True,
            # Our own budget (DSPEX_JOB_MAX_RETRIES) decides; Celery's default of 3 would
            # make task.retry() re-raise the error instead, and the job end unrecorded.
            max_retries=None,
            # Typed failures are expected outcomes: logged in one line, not as a traceback.
            throws=(DSPexError,),
        )(run_job)
    app.task(name=CLEANUP_TASK, bind=True)(cleanup_sessions)
    from dspex_jobs.pipeline.tasks import register_pipeline_tasks  # light: no DSPy

    register_pipeline_tasks(app)
    from dspex_jobs.optimize.schedule import register_schedule_tasks  # light: no DSPy

    register_schedule_tasks(app)  # dspex.optimize.nightly, sent by celery beat
    register_webhook_tasks(app)  # dspex.webhook.deliver, on the webhooks queue

    def on_failure(sender: Any = None, exception: Any = None, args: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is app and isinstance(exception, TimeLimitExceeded):
            settle_hard_time_limit(sender, args, exception)

    task_failure.connect(on_failure, weak=False, dispatch_uid=f"dspex-hard-limit-{id(app)}")


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
    try:
        return _run_job(task, ctx, payload)
    except REDIS_DOWN as exc:
        # Redis went away mid-job: nothing about the job itself is wrong. Wait for Redis,
        # then put the message back rather than let Celery acknowledge a failure.
        logger.warning(
            "Redis unavailable while running a job (%s); requeueing it once Redis answers again",
            exc,
        )
        wait_for_redis(ctx.store.client, timeout_s=ctx.settings.visibility_timeout_s)
        raise Reject(f"Redis unavailable: {exc}", requeue=True) from exc


def _run_job(task: Task[Any, Any], ctx: Any, payload: Any) -> dict[str, Any] | None:
    started_at = time.time()
    job = _decode(payload, ctx)
    if job is None:
        return None
    # Every log line and event of this job carries its ids (dspex_jobs.telemetry.context).
    labels = {"job_id": job.id, "kind": job.kind.value, "queue": job.target_queue}
    with (
        job_context(trace_id=job.trace_id, **labels),
        job_span(job.kind.task_name, job.trace_id, labels),
    ):  # OpenTelemetry, if installed
        return _run_decoded(task, ctx, job, started_at)


def _run_decoded(
    task: Task[Any, Any],
    ctx: Any,
    job: Job,
    started_at: float,
) -> dict[str, Any] | None:
    run = _Run(task, ctx, job, started_at)
    finished, cancelled, held_for_s = ctx.store.begin(
        job.id, run.worker, run.attempt, ctx.leases.token, ctx.leases.ttl_ms
    )
    if finished:
        # A redelivered copy (acks_late) of a job that already finished: never run it twice.
        logger.info("job %s already finished; dropped a redelivered copy", job.id)
        run.release_session()  # in case the first copy died before it could
        return None
    refusal = ctx.refusal(job, cancelled)
    if refusal is not None and not held_for_s:
        run.finish(error=refusal)
        return None
    if held_for_s:
        # Another worker runs this job right now (a copy redelivered after the visibility
        # timeout): look again once its lease would have lapsed.
        logger.info("job %s is running elsewhere; parked a copy for %.1f s", job.id, held_for_s)
        ctx.delayed.park(task.name, job.to_wire(), job.target_queue, held_for_s + 0.5)
        return None
    ctx.leases.hold(job.id)
    try:
        return _run_leased(task, ctx, job, run)
    finally:
        if run.saved:
            ctx.leases.forget(job.id)  # deleted together with the result
        else:
            with contextlib.suppress(*REDIS_DOWN):  # a lapsed lease expires by itself
                ctx.leases.release(job.id)


def _run_leased(task: Task[Any, Any], ctx: Any, job: Job, run: _Run) -> dict[str, Any] | None:
    job_events.started(job, run.worker, run.attempt, run.started_at)
    try:
        outcome = ctx.execute(job, run.worker)
    except RateLimitWait as wait:
        ctx.delayed.park(task.name, job.to_wire(), job.target_queue, wait.wait_s)
        ctx.store.mark_running(job.id, run.worker, run.attempt, JobStatus.PENDING)
        return None
    except REDIS_DOWN:
        raise
    except JobCancelled as error:  # cancelled while it ran (dspex_jobs.deadlines): no dead letter
        # An interrupted session job keeps its partial outputs (dspex_jobs.multitask).
        run.finish(outputs=error.details.get("outputs"), error=error)
        return None
    except DSPexError as error:
        if error.retryable and run.attempt <= ctx.settings.retries_for(job.kind.value):
            run.retry(error)
            return None
        run.fail(error)
        raise
    except SoftTimeLimitExceeded as exc:  # the pool's soft limit (prefork); not retried
        stopped = DeadlineExceeded(
            f"job {job.id} ran past its worker's soft time limit and was stopped: {exc}",
            job_id=job.id,
        )
        run.fail(stopped)
        raise stopped from exc
    except Exception as exc:  # anything unclassified is a permanent failure of this job
        logger.exception("job %s (%s) failed", job.id, job.kind.value)
        failure = JobFailed(f"{type(exc).__name__}: {exc}", job_id=job.id)
        run.fail(failure)
        raise failure from exc
    if not run.finish(
        outputs=outcome.outputs, usage=outcome.usage, model=outcome.model, unless_cancelled=True
    ):
        run.finish(
            error=JobCancelled(
                f"job {job.id} was cancelled while it ran; its outputs were discarded",
                job_id=job.id,
            )
        )
        return None
    return {
        "job_id": job.id,
        "status": "succeeded",
        "outputs": sorted(outcome.outputs),
        "trace_id": job.trace_id,
    }


class _Run:
    """One delivery of a job to this worker, and the ways it can end."""

    def __init__(self, task: Task[Any, Any], ctx: Any, job: Job, started_at: float) -> None:
        self.task = task
        self.ctx = ctx
        self.job = job
        self.started_at = started_at
        self.attempt = job.attempt + int(task.request.retries or 0)
        self.worker = str(task.request.hostname or ctx.worker_name)
        self.saved = False

    def retry(self, error: DSPexError) -> None:
        """Try again later: a short wait as a Celery countdown, a long one parked in Redis."""
        delay_s = self.ctx.retry_delay_s(self.attempt, error)
        self.ctx.store.mark_running(self.job.id, self.worker, self.attempt, JobStatus.RETRYING)
        job_events.retried(self.job, self.worker, self.attempt, error, delay_s)
        if delay_s <= self.ctx.countdown_limit_s:
            raise self.task.retry(countdown=delay_s, exc=error) from error
        later = self.job.model_copy(update={"attempt": self.attempt + 1})
        self.ctx.delayed.park(self.task.name, later.to_wire(), self.job.target_queue, delay_s)

    def fail(self, error: DSPexError) -> None:
        """A permanent failure, or retries exhausted: store it and keep a dead letter."""
        self.ctx.dead_letters.record(
            self.job.to_wire(),
            str(self.task.name),
            self.job.target_queue,
            error,
            traceback.format_exc(),
            self.worker,
            self.attempt,
        )
        self.finish(error=error)

    def finish(
        self,
        *,
        outputs: dict[str, Any] | None = None,
        usage: dict[str, dict[str, Any]] | None = None,
        model: str | None = None,
        error: DSPexError | None = None,
        unless_cancelled: bool = False,
    ) -> bool:
        """Store the result (and end the job's stream) so the producer wakes.

        With ``unless_cancelled``, first make sure nobody cancelled the job while it ran:
        if someone did, store nothing and return ``False`` (the caller stores the
        cancellation). The check rides in the same round trip as the write, except for jobs
        that record something before their result (a stream's end, a webhook), which look
        first.
        """
        job = self.job
        if unless_cancelled and (job.stream or self.ctx.has_webhook(job)):
            if self.ctx.cancel_requested(job.id):
                return False
            unless_cancelled = False
        if error is not None:
            logger.warning("job %s failed: [%s] %s", job.id, error.code, error.message)
        if job.stream:
            self.ctx.stream_writer(job.id).end(outputs, error)
        if isinstance(error, JobCancelled):
            status = JobStatus.CANCELLED
        else:
            status = JobStatus.FAILED if error else JobStatus.SUCCEEDED
        self.saved = True
        result = JobResult(
            job_id=job.id,
            kind=job.kind.value,
            status=status,
            outputs=outputs,
            error=JobErrorInfo.from_error(error) if error else None,
            usage=usage or {},
            timings=Timings(
                created_at=job.created_at, started_at=self.started_at, finished_at=time.time()
            ),
            worker=self.worker,
            attempt=self.attempt,
            model=model,
            correlation_id=job.correlation_id,
            trace_id=job.trace_id,
        )
        # Recorded before the result, sent after it: a finished job never loses its webhook.
        webhook = _after_finish(
            "record the webhook of", job, schedule_job_webhook, self.task.app, job, result
        )
        if not unless_cancelled:
            self.ctx.store.save(result)
        elif self.ctx.store.save_unless_cancelled(result, STOP_MODES) is None:
            return False  # nothing was recorded before (no stream, no webhook)
        # Both also sit in the delayed set (dspex_jobs.webhooks.store, .multitask), so a
        # failure here delays them; it must never fail a job whose result is stored.
        _after_finish("send the webhook of", job, send_scheduled, self.task.app, webhook)
        _after_finish("release the session of", job, self.release_session)
        job_events.finished(
            job, self.worker, self.attempt, self.started_at, status.value, error, model
        )
        return True

    def release_session(self) -> None:
        """Hand the job's session to its next waiting job (dspex_jobs.multitask)."""
        if self.job.session_id is None:
            return
        nxt = self.ctx.gate.release(self.job.session_id, self.job.id)
        if nxt is None:
            return
        message = nxt.message()
        # Strict affinity keeps the session on this worker, which is bound to it.
        queue = worker_direct(self.worker) if nxt.affinity == "strict" else message["queue"]
        self.task.app.send_task(
            message["task"],
            args=(message["payload"],),
            task_id=nxt.id,
            queue=queue,  # type: ignore[arg-type]  # a Queue routes too
            ignore_result=True,
        )  # results live in our store
        self.ctx.gate.sent(nxt)


def settle_hard_time_limit(task: Task[Any, Any], args: Any, exc: BaseException) -> None:
    """Store the failure of a job whose pool child Celery killed at the hard time limit.

    Runs in the worker's main process (the ``task_failure`` signal of the timeout). Celery
    acknowledges the message (``acks_on_failure_or_timeout``), so it is not redelivered and
    ``reject_on_worker_lost`` does not apply; without this the job would have no result and
    its producer would wait forever. A result already stored (the job ended just in time)
    is kept: :meth:`ResultStore.save` writes one result per job.
    """
    from dspex_jobs.jobs import JobKind
    from dspex_jobs.worker import worker_context

    try:
        ctx = worker_context(task.app)
        job = _decode(args[0] if args else None, ctx)
        if job is None or ctx.store.get(job.id) is not None:
            return
        state = ctx.store.state(job.id) or {}
        limit_s = exc.args[0] if exc.args else None  # Celery passes the limit in seconds
        message = (
            f"job {job.id} ran past its worker's hard time limit ({limit_s} s); its "
            "pool process was killed and nothing was stored"
        )
        error: DSPexError = (
            OptimizeTimeLimit(message, job_id=job.id, time_limit_s=limit_s)
            if job.kind is JobKind.OPTIMIZE
            else DeadlineExceeded(message, job_id=job.id)
        )
        run = _Run(task, ctx, job, float(state.get("at") or time.time()))
        run.attempt = int(state.get("attempt") or run.attempt)
        run.worker = str(state.get("worker") or run.worker)
        run.fail(error)
    except Exception:  # never let the handler take the worker's main process down
        logger.exception(
            "could not store the hard time limit failure of task %s",
            getattr(task.request, "id", None),
        )


def _after_finish(what: str, job: Job, step: Any, *args: Any) -> Any:
    """Run a follow-up of a finished job; log (never raise) what is not Redis being down."""
    try:
        return step(*args)
    except REDIS_DOWN:
        raise
    except Exception:
        logger.exception("could not %s job %s", what, job.id)
        return None


def _decode(payload: Any, ctx: Any) -> Job | None:
    if is_claim(payload):  # a large job waits in Redis (dspex_jobs.protocol, claim checks)
        try:
            payload = check_out(
                ctx.store.client,
                payload,
                key_prefix=ctx.keys.payload(""),
                max_payload_bytes=ctx.settings.max_payload_bytes,
                max_decompressed_bytes=ctx.settings.max_decompressed_bytes,
            )
        except PayloadError as error:
            logger.error("dropped job %r: [%s] %s", payload.get("id"), error.code, error.message)
            return None
    if not isinstance(payload, dict):
        logger.error(
            "dropped a malformed message: expected a job envelope, got %s", type(payload).__name__
        )
        return None
    try:
        return Job.model_validate(payload)
    except PydanticValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'envelope'}: {e['msg']}" for e in exc.errors()
        )
        logger.error("dropped a malformed job envelope (id=%r): %s", payload.get("id"), problems)
        return None
