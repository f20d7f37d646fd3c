"""The delivery task (``dspex.webhook.deliver`` on the ``webhooks`` queue) and scheduling.

Webhooks never run on the job's own worker slot: a finished job only records the delivery
and sends a small task (:func:`schedule_job_webhook`, a few Redis commands), and a pool of
its own (``dspex-jobs worker --queue webhooks``: threads, ``DSPEX_WEBHOOKS_CONCURRENCY``)
makes the HTTP requests. Each task is one attempt:

1. the record says ``pending`` (a duplicate task of a delivered one stops here), the budget
   (``DSPEX_WEBHOOK_BUDGET_S`` from scheduling) is not spent, the job's result is stored;
2. the URL passes this worker's allowlist and a signing secret is configured;
3. one of ``DSPEX_WEBHOOK_HOST_CONCURRENCY`` slots of the endpoint's ``host:port`` is free
   (else the task is sent again shortly, without counting an attempt: a dead endpoint
   holds a few threads, never the pool);
4. POST, signed; 2xx is delivered; a timeout, connection error, 408/425/429 or 5xx is
   retried with exponential backoff and jitter (a short wait as a Celery countdown, a long
   one parked in Redis), up to ``DSPEX_WEBHOOK_MAX_ATTEMPTS``; anything else, or an
   exhausted budget, records the delivery as undeliverable (``dspex-jobs webhooks ls
   --failed``, ``replay``).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celery import Celery, Task
from celery.exceptions import Reject

from dspex_jobs.app import settings_of
from dspex_jobs.connections import REDIS_DOWN, process_redis, wait_for_redis
from dspex_jobs.errors import ValidationError
from dspex_jobs.keys import Keys
from dspex_jobs.resilience.delayed import DelayedJobs
from dspex_jobs.settings import Settings
from dspex_jobs.webhooks.signing import ATTEMPT_HEADER, EVENT_HEADER, signature_headers
from dspex_jobs.webhooks.store import PENDING, WebhookStore, outbox_member
from dspex_jobs.webhooks.urls import check_webhook_url

if TYPE_CHECKING:
    from dspex_jobs.jobs import Job
    from dspex_jobs.results import JobResult

__all__ = [
    "DELIVER_TASK",
    "WEBHOOK_QUEUE",
    "deliver",
    "enqueue_webhook",
    "job_event",
    "pipeline_event",
    "register_webhook_tasks",
    "replay",
    "schedule_job_webhook",
    "send_scheduled",
]

logger = logging.getLogger("dspex_jobs.webhooks")

DELIVER_TASK = "dspex.webhook.deliver"
WEBHOOK_QUEUE = "webhooks"
"""The queue of delivery tasks; ``dspex-jobs worker --queue webhooks`` consumes it."""

_USER_AGENT = "dspex-jobs-webhooks/1"
_AFTER_ERROR_S = 30.0
_MAX_ID_CHARS = 300


def register_webhook_tasks(app: Celery) -> None:
    """Register the delivery task on ``app`` (called by :func:`dspex_jobs.tasks.register_tasks`)."""
    app.task(
        name=DELIVER_TASK,
        bind=True,
        ignore_result=True,
        acks_late=True,
        reject_on_worker_lost=True,
        max_retries=None,
    )(deliver)


# -- the job side: record, then send ----------------------------------------------------------


def job_event(job: Job, result: JobResult) -> dict[str, Any]:
    """The JSON body of a job's webhook: what a receiver needs, and no secret.

    Neither the webhook URL (it may hold a token), the inputs, nor any credential is in it.
    """
    timings = result.timings
    return {
        "event": f"job.{result.status.value}",
        "job_id": result.job_id,
        "kind": result.kind,
        "status": result.status.value,
        "outputs": result.outputs,
        "error": result.error.model_dump(mode="json") if result.error else None,
        "timings": {
            "created_at": timings.created_at,
            "started_at": timings.started_at,
            "finished_at": timings.finished_at,
            "queued_s": timings.queued_s,
            "run_s": timings.run_s,
            "total_s": timings.total_s,
        },
        "usage": result.usage,
        "model": result.model,
        "trace_id": result.trace_id,
        "correlation_id": result.correlation_id,
        "session_id": job.session_id,
        "attempt": result.attempt,
    }


def pipeline_event(
    run_id: str,
    pipeline: str,
    outcome: Mapping[str, Any],
    *,
    trace_id: str | None,
    created_at: float,
    outputs: Mapping[str, Any] | None = None,
    usage: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON body of a pipeline run's webhook, shaped like a job's (:func:`job_event`).

    ``outcome`` is what the run ended with (``{"status": ..., "error": ..., "step": ...}``,
    as :meth:`dspex_jobs.pipeline.state.RunStore.finish` stores it).
    """
    status = str(outcome.get("status") or "failed")
    finished_at = float(outcome.get("finished_at") or time.time())
    return {
        "event": f"pipeline.{status}",
        "job_id": run_id,
        "kind": "pipeline",
        "pipeline": pipeline,
        "status": status,
        "outputs": dict(outputs) if outputs is not None else None,
        "error": outcome.get("error"),
        "step": outcome.get("step"),
        "timings": {
            "created_at": created_at,
            "finished_at": finished_at,
            "total_s": max(0.0, finished_at - created_at),
        },
        "usage": dict(usage or {}),
        "trace_id": trace_id,
    }


@dataclass(frozen=True, slots=True)
class Scheduled:
    """A recorded delivery whose task is still to be sent (see :func:`send_scheduled`)."""

    delivery_id: str
    member: str


def schedule_job_webhook(app: Celery, job: Job, result: JobResult) -> Scheduled | None:
    """Record the job's webhook (before its result is stored); ``None`` when it has none.

    The job's own ``webhook`` wins over ``DSPEX_WEBHOOK_URL``. A URL this worker's allowlist
    refuses is still recorded, and fails on its first attempt, so it shows in
    ``webhooks ls --failed`` instead of vanishing.
    """
    settings = settings_of(app)
    url = job.webhook or settings.webhook_url
    if not url:
        return None
    return _schedule(
        app,
        settings,
        url,
        job_event(job, result),
        delivery_id=job.id,
        kind=result.kind,
        job_id=job.id,
    )


def send_scheduled(app: Celery, scheduled: Scheduled | None) -> None:
    """Send the delivery task now (after the result is stored) and drop its outbox copy."""
    if scheduled is None:
        return
    app.send_task(
        DELIVER_TASK,
        args=({"id": scheduled.delivery_id},),
        task_id=scheduled.delivery_id,
        queue=WEBHOOK_QUEUE,
        ignore_result=True,
    )  # no result-backend subscription: half the cost
    _store(app).sent(scheduled.member)


def enqueue_webhook(
    app: Celery,
    url: str,
    body: Mapping[str, Any],
    *,
    delivery_id: str,
    kind: str,
    job_id: str | None = None,
) -> bool:
    """Record and send one webhook now: for pipelines, or anything else that ends.

    ``body`` must carry an ``event`` (``pipeline.succeeded``, ...); it is sent as JSON,
    signed, with the retries and budget of every webhook. Call it once the outcome is
    stored (``job_id``, when given, is a job whose stored result the delivery waits for).
    Returns whether the delivery was new (a second call for the same id and event is a
    no-op).
    """
    settings = settings_of(app)
    scheduled = _schedule(
        app, settings, url, body, delivery_id=delivery_id, kind=kind, job_id=job_id
    )
    if scheduled is None:
        return False
    send_scheduled(app, scheduled)
    return True


def _schedule(
    app: Celery,
    settings: Settings,
    url: str,
    body: Mapping[str, Any],
    *,
    delivery_id: str,
    kind: str,
    job_id: str | None,
) -> Scheduled | None:
    member = outbox_member(DELIVER_TASK, WEBHOOK_QUEUE, delivery_id)
    event = str(body.get("event") or "event")
    new = _store(app).schedule(
        delivery_id, url, body, event=event, kind=kind, member=member, job_id=job_id
    )
    return Scheduled(delivery_id, member) if new else None


# -- the webhooks worker --------------------------------------------------------------------


class _Context:
    """What a webhooks worker process keeps between deliveries."""

    def __init__(self, settings: Settings) -> None:
        client = process_redis(settings)
        keys = Keys(settings.key_prefix)
        self.settings = settings
        self.store = WebhookStore(client, keys, settings.webhook_record_ttl_s)
        self.delayed = DelayedJobs(client, keys)


_contexts: dict[tuple[int, int], _Context] = {}
_lock = threading.Lock()


def _context(app: Celery) -> _Context:
    key = (os.getpid(), id(app))
    ctx = _contexts.get(key)
    if ctx is None:
        with _lock:
            ctx = _contexts.setdefault(key, _Context(settings_of(app)))
    return ctx


def _store(app: Celery) -> WebhookStore:
    return _context(app).store


def deliver(task: Task[Any, Any], payload: Any) -> None:
    """Make one attempt at a delivery (see the module docstring for the steps)."""
    delivery_id = payload.get("id") if isinstance(payload, dict) else None
    if not isinstance(delivery_id, str) or not 0 < len(delivery_id) <= _MAX_ID_CHARS:
        logger.error("dropped a malformed webhook task: expected {'id': <delivery id>}")
        return
    ctx = _context(task.app)
    attempt = _Attempt(task.app, ctx, delivery_id)
    try:
        attempt.run()
    except REDIS_DOWN as exc:
        logger.warning("Redis unavailable during webhook %s (%s); requeueing it", delivery_id, exc)
        wait_for_redis(ctx.store.client, timeout_s=ctx.settings.visibility_timeout_s)
        raise Reject(f"Redis unavailable: {exc}", requeue=True) from exc
    except Exception:  # a bug must not strand the delivery: look again (the budget ends it)
        logger.exception(
            "webhook %s: unexpected error; trying again in %.0f s", delivery_id, _AFTER_ERROR_S
        )
        if attempt.next_in_s is None:
            attempt._send_later(_AFTER_ERROR_S)


class _Attempt:
    """One delivery task: check, claim, POST, then record what happened."""

    def __init__(self, app: Celery, ctx: _Context, delivery_id: str) -> None:
        self.app = app
        self.ctx = ctx
        self.settings = ctx.settings
        self.store = ctx.store
        self.id = delivery_id
        self.next_in_s: float | None = None
        """When to look again; sent only after the lease is dropped, so the next task
        never finds this one's lease still held (and gives up)."""

    def run(self) -> None:
        """The attempt, then its follow-up task, if any."""
        try:
            self._run()
        finally:
            if self.next_in_s is not None:
                self._send_later(self.next_in_s)

    def _run(self) -> None:
        record = self.store.get(self.id)
        if record is None or record["status"] != PENDING:
            return  # unknown, expired, or a duplicate of a finished delivery
        if time.time() - record["created_at"] > self.settings.webhook_budget_s:
            self._give_up(record, f"budget of {self.settings.webhook_budget_s:g} s spent")
            return
        if record.get("job_id") and not self.store.result_stored(record["job_id"]):
            self._defer("the job's result")
            return
        try:
            target = check_webhook_url(record["url"], self.settings.webhook_allowed_hosts)
        except ValidationError as exc:
            self.store.failed(self.id, f"refused by this worker: {exc}")
            return
        if self.settings.webhook_secret is None:
            self.store.failed(
                self.id,
                "DSPEX_WEBHOOK_SECRET is not set on the webhooks "
                "worker: webhooks are never sent unsigned",
            )
            return
        hold_s = self.settings.webhook_timeout_s * 2 + 1
        if not self.store.take_lease(self.id, int(hold_s * 1000) + 5000):
            return  # another copy of this task is attempting it right now
        try:
            if not self.store.acquire_host(
                target.origin, self.id, self.settings.webhook_host_concurrency, hold_s
            ):
                self._defer(f"a free slot for {target.origin}")
                return
            try:
                self._post(record, target)
            finally:
                self.store.release_host(target.origin, self.id)
        finally:
            self.store.drop_lease(self.id)

    def _post(self, record: dict[str, Any], target: Any) -> None:
        from dspex_jobs.webhooks.sender import post_webhook

        attempt = self.store.begin_attempt(self.id)
        body = record["body"].encode()
        secret = self.settings.webhook_secret
        assert secret is not None
        headers = {
            "Content-Type": "application/json",
            "User-Agent": _USER_AGENT,
            EVENT_HEADER: record["event"],
            ATTEMPT_HEADER: str(attempt),
            "Connection": "close",
            **signature_headers(secret.get_secret_value().encode(), body, self.id),
        }
        outcome = post_webhook(
            target,
            body,
            headers,
            timeout_s=self.settings.webhook_timeout_s,
            max_response_bytes=self.settings.webhook_max_response_bytes,
            allowed_hosts=self.settings.webhook_allowed_hosts,
        )
        if outcome.ok:
            self.store.delivered(self.id, outcome.status or 200)
            logger.info("webhook %s delivered (%s, attempt %d)", self.id, record["event"], attempt)
            return
        error = outcome.error or "failed"
        if not outcome.retryable:
            self.store.failed(self.id, error, outcome.status)
            logger.warning("webhook %s undeliverable: %s", self.id, error)
            return
        if attempt >= self.settings.webhook_max_attempts:
            self.store.failed(self.id, f"{error} (after {attempt} attempts)", outcome.status)
            logger.warning(
                "webhook %s undeliverable after %d attempts: %s", self.id, attempt, error
            )
            return
        delay_s = self._backoff_s(attempt, outcome.retry_after_s)
        if time.time() + delay_s - record["created_at"] > self.settings.webhook_budget_s:
            self.store.failed(
                self.id,
                f"{error} (budget of {self.settings.webhook_budget_s:g} s spent)",
                outcome.status,
            )
            return
        self.store.will_retry(self.id, delay_s, error, outcome.status)
        logger.info(
            "webhook %s attempt %d failed (%s); retrying in %.1f s",
            self.id,
            attempt,
            error,
            delay_s,
        )
        self.next_in_s = delay_s

    def _backoff_s(self, attempt: int, retry_after_s: float | None) -> float:
        """Exponential with equal jitter; a Retry-After wins, up to the cap."""
        cap = self.settings.webhook_backoff_max_s
        base = min(cap, self.settings.webhook_backoff_s * 2 ** (attempt - 1))
        delay: float = base / 2 + random.uniform(0, base / 2)
        if retry_after_s is not None:
            delay = max(delay, min(cap, retry_after_s))
        return delay

    def _defer(self, waiting_for: str) -> None:
        """Look again shortly without counting an attempt (backing off as it repeats)."""
        count = self.store.deferred(self.id, waiting_for)
        self.next_in_s = min(10.0, 0.25 * 1.5 ** min(count, 20)) * random.uniform(0.75, 1.25)

    def _give_up(self, record: dict[str, Any], why: str) -> None:
        last = record.get("last_error") or record.get("waiting_for") or "never attempted"
        self.store.failed(
            self.id, f"{why} after {record.get('attempts', 0)} attempt(s); last: {last}"
        )

    def _send_later(self, delay_s: float) -> None:
        limit = min(self.settings.webhook_backoff_max_s, self.settings.visibility_timeout_s / 4)
        if delay_s <= limit:
            self.app.send_task(
                DELIVER_TASK,
                args=({"id": self.id},),
                task_id=self.id,
                queue=WEBHOOK_QUEUE,
                countdown=delay_s,
                ignore_result=True,
            )
        else:
            self.ctx.delayed.park(DELIVER_TASK, {"id": self.id}, WEBHOOK_QUEUE, delay_s)


def replay(app: Celery, delivery_id: str) -> bool:
    """Deliver again from scratch (attempts and budget reset); whether the delivery exists."""
    if not _store(app).reset(delivery_id):
        return False
    app.send_task(
        DELIVER_TASK,
        args=({"id": delivery_id},),
        task_id=delivery_id,
        queue=WEBHOOK_QUEUE,
        ignore_result=True,
    )
    return True
