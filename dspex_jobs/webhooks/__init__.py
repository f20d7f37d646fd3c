"""Webhooks: a signed JSON POST to the app when a job (or a pipeline) ends.

- :mod:`.urls`: which URLs may be called (``http``/``https``, allowlisted hosts only).
- :mod:`.signing`: HMAC-SHA256 signatures with a timestamp; :func:`verify_signature`.
- :mod:`.store`: delivery records, the outbox, per-host slots (Redis).
- :mod:`.sender`: one bounded HTTP attempt.
- :mod:`.delivery`: the ``dspex.webhook.deliver`` task on the ``webhooks`` queue, and the
  functions a finishing job (or pipeline) calls.

See ``docs/webhooks.md``. Nothing here imports DSPy: producers import :mod:`.urls`.
"""

from dspex_jobs.webhooks.delivery import (
    DELIVER_TASK,
    WEBHOOK_QUEUE,
    enqueue_webhook,
    job_event,
    pipeline_event,
    replay,
)
from dspex_jobs.webhooks.signing import sign, verify_signature
from dspex_jobs.webhooks.store import WebhookStore
from dspex_jobs.webhooks.urls import WebhookTarget, check_webhook_url

__all__ = [
    "DELIVER_TASK",
    "WEBHOOK_QUEUE",
    "WebhookStore",
    "WebhookTarget",
    "check_webhook_url",
    "enqueue_webhook",
    "job_event",
    "pipeline_event",
    "replay",
    "sign",
    "verify_signature",
]
