"""The webhook a pipeline run sends when it ends: succeeded, failed, cancelled or past its
deadline, exactly one per run, at least once.

The URL is checked when the run is submitted (:func:`check_run_webhook`: the checks and the
``DSPEX_WEBHOOK_URL`` default of job webhooks) and stored on the run. Every way a run ends
goes through :func:`end_run`: a worker's last or failing step (:mod:`.runner`), or the
producer that cancels the run or sees its deadline pass (:mod:`.handle`). It writes the
outcome and records the delivery (the ``pipeline.<status>`` body of
:func:`dspex_jobs.webhooks.pipeline_event`, with its outbox entry) in one ``MULTI``
(:meth:`.state.RunStore.finish`), then sends the delivery task and drops the outbox entry,
as a finishing job does (``dspex_jobs.tasks``: recorded before, sent after). Whoever ends the
run records its webhook; nobody else can, since the outcome is written once; and a process
that dies right after the ``MULTI`` leaves the outbox entry, which a worker's heartbeat sends
about 30 s later.

The delivery id is the run id: ``dspex-jobs webhooks ls`` / ``replay <run id>``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from dspex_jobs.pipeline.state import RunStore
from dspex_jobs.webhooks.delivery import DELIVER_TASK, WEBHOOK_QUEUE, pipeline_event
from dspex_jobs.webhooks.store import WebhookStore, outbox_member
from dspex_jobs.webhooks.urls import check_webhook_url

if TYPE_CHECKING:
    import redis
    from celery import Celery

    from dspex_jobs.pipeline.plan import Plan
    from dspex_jobs.settings import Settings

__all__ = ["WEBHOOK_KIND", "check_run_webhook", "end_run"]

logger = logging.getLogger("dspex_jobs.pipeline")

WEBHOOK_KIND = "pipeline"
"""The ``kind`` of a run's delivery record (``dspex-jobs webhooks ls``)."""


def check_run_webhook(url: str | None, settings: Settings) -> str | None:
    """The URL a run's webhook goes to (``url``, else ``DSPEX_WEBHOOK_URL``), checked.

    Raises:
        ValidationError: ``field="webhook"``: not ``http``/``https``, credentials in it, or a
            host ``DSPEX_WEBHOOK_ALLOWED_HOSTS`` does not list (empty: webhooks are off).
    """
    url = url or settings.webhook_url
    if url is None:
        return None
    check_webhook_url(url, settings.webhook_allowed_hosts)
    return url


def end_run(
    store: RunStore,
    app: Celery,
    run_id: str,
    outcome: Mapping[str, Any],
    *,
    pipeline: str,
    trace_id: str,
    created_at: float,
    webhook: str | None,
    record_ttl_s: int,
    plan: Plan | None = None,
) -> bool:
    """End the run with ``outcome`` unless it already ended, and if this call ended it and
    the run has a webhook, record and send it; whether this call ended the run.

    ``plan`` names the fields a succeeded run's webhook carries as ``outputs`` (every step's
    outputs and the fields written flat; never the inputs); without it, ``outputs`` is null.
    """
    if not webhook:
        return store.finish(run_id, outcome)
    webhooks = WebhookStore(store.client, store.keys, record_ttl_s)
    member = outbox_member(DELIVER_TASK, WEBHOOK_QUEUE, run_id)

    def record_delivery(stored: dict[str, Any]) -> Callable[[redis.client.Pipeline], None]:
        outputs, usage = _read(store, run_id, plan if stored.get("status") == "succeeded" else None)
        body = pipeline_event(
            run_id,
            pipeline,
            stored,
            trace_id=trace_id,
            created_at=created_at,
            outputs=outputs,
            usage=usage,
        )
        return lambda pipe: webhooks.schedule_in(
            pipe, run_id, webhook, body, event=str(body["event"]), kind=WEBHOOK_KIND, member=member
        )

    if not store.finish(run_id, outcome, also=record_delivery):
        return False
    try:
        app.send_task(
            DELIVER_TASK,
            args=({"id": run_id},),
            task_id=run_id,
            queue=WEBHOOK_QUEUE,
            ignore_result=True,
        )
        webhooks.sent(member)
    except Exception as exc:  # the run has ended: the outbox entry sends the webhook later
        logger.warning(
            "pipeline run %s: could not send its webhook now (%s); the outbox sends it shortly",
            run_id,
            exc,
        )
    return True


def _read(
    store: RunStore, run_id: str, plan: Plan | None
) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]]]:
    """The body's ``outputs`` (what the steps wrote, when ``plan`` is given: every step's
    outputs and the fields written flat, never the inputs) and ``usage`` (LM token counts by
    model, summed over the steps, as ``PipelineResult.usage``), in one round trip."""
    fields: list[str] = []
    if plan is not None:
        names = set(plan.nodes)
        for node in plan.nodes.values():
            names.update(node.writes)
            names.update(node.merge)
        fields = sorted(names)
    pipe = store.client.pipeline(transaction=False)
    pipe.hgetall(store.keys.pipeline_steps(run_id))
    if fields:
        pipe.hmget(store.keys.pipeline_context(run_id), fields)
    replies = pipe.execute()
    outputs = None
    if plan is not None:
        values = replies[1] if fields else []
        outputs = {f: json.loads(v) for f, v in zip(fields, values, strict=True) if v is not None}
    usage: dict[str, dict[str, Any]] = {}
    for raw in replies[0].values():
        for model, counts in (json.loads(raw).get("usage") or {}).items():
            merged = usage.setdefault(model, {})
            for key, count in (counts or {}).items():
                if isinstance(count, int | float):
                    merged[key] = merged.get(key, 0) + count
    return outputs, usage
