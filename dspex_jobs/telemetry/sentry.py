"""Sentry: errors from producers and workers, tagged with the job, never carrying secrets.

``DSPEX_SENTRY_DSN`` turns it on (:func:`init_sentry`, called by workers at start and by
:class:`~dspex_jobs.client.Client`). The Celery integration propagates Sentry's trace from the
producer's ``send_task`` to the worker, so a failing job links to the request that sent it.

Why a ``dspex.job.fail`` handler as well: our tasks declare typed failures as expected
(``throws=(DSPexError,)``, so Celery logs them in one line), and Sentry's Celery integration
skips exceptions listed in ``throws``. The handler reports each failed job once, with tags
``job.kind``, ``job.queue``, ``job.id``, ``trace_id`` and ``error.code`` and a fingerprint per
(kind, error code), so a thousand failures of one kind make one issue, not a thousand.

Scrubbing, before anything leaves the process: values under any key that looks like a
credential (Sentry's deny list plus ``api_key``, ``authorization``, ``lm_api_key``, ...) and
under ``DSPEX_SENTRY_SCRUB_FIELDS`` (job input fields you name), the configured API key
wherever it appears in a string, ``Bearer`` tokens, and passwords in URLs.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from typing import Any

from dspex_jobs.telemetry.catalogue import JOB_FAIL
from dspex_jobs.telemetry.context import current
from dspex_jobs.telemetry.events import attach, detach

__all__ = ["FILTERED", "HANDLER_ID", "SENSITIVE_KEYS", "Scrubber", "init_sentry"]

HANDLER_ID = "dspex-sentry"
"""The id of the ``dspex.job.fail`` handler."""

FILTERED = "[Filtered]"
"""What a scrubbed value becomes (Sentry's own marker)."""

SENSITIVE_KEYS = (
    "api_key",
    "apikey",
    "authorization",
    "password",
    "passwd",
    "secret",
    "token",
    "access_token",
    "refresh_token",
    "lm_api_key",
    "sentry_dsn",
    "flower_password",
    "cookie",
    "x-api-key",
    "x_api_key",
    "credentials",
    "dsn",
)
"""Keys whose values are never sent (compared lower-case, ``-`` and ``_`` alike)."""

_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s/]+@")
_CONTEXT_TAGS = {
    "job_id": "job.id",
    "trace_id": "trace_id",
    "kind": "job.kind",
    "queue": "job.queue",
    "run_id": "pipeline.run_id",
}


class Scrubber:
    """``before_send``: removes secrets from an event (and adds the job's trace tags)."""

    def __init__(self, fields: tuple[str, ...] = (), secrets: tuple[str, ...] = ()) -> None:
        self.keys = {_norm(k) for k in (*SENSITIVE_KEYS, *fields)}
        self.secrets = tuple(s for s in secrets if s and len(s) >= 4)

    def __call__(self, event: dict[str, Any], hint: Any = None) -> dict[str, Any]:
        tags = event.setdefault("tags", {})
        context = current()
        for name, tag in _CONTEXT_TAGS.items():
            if context.get(name) is not None:
                tags.setdefault(tag, str(context[name]))
        scrubbed: dict[str, Any] = self.scrub(event)
        return scrubbed

    def scrub(self, value: Any, key: str | None = None) -> Any:
        """A copy of ``value`` with every secret replaced by :data:`FILTERED`."""
        if key is not None and _norm(key) in self.keys and value not in (None, "", {}, []):
            return FILTERED
        if isinstance(value, Mapping):
            return {k: self.scrub(v, str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.scrub(v) for v in value]
        if isinstance(value, str):
            return self._scrub_text(value)
        return value

    def _scrub_text(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, FILTERED)
        if "earer" in text or "asic" in text:
            text = _BEARER.sub(lambda m: f"{m.group(1)} {FILTERED}", text)
        if "@" in text:
            text = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}{FILTERED}@", text)
        return text


def _norm(key: str) -> str:
    return key.lower().replace("-", "_")


def init_sentry(settings: Any, *, transport: Any = None, **options: Any) -> bool:
    """Turn Sentry on if ``settings.sentry_dsn`` is set; whether it did.

    Args:
        settings: The process's :class:`~dspex_jobs.settings.Settings`.
        transport: A ``sentry_sdk.transport.Transport`` to send through instead of HTTP
            (tests).
        **options: More ``sentry_sdk.init`` options.
    """
    if settings.sentry_dsn is None:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.logging import ignore_logger
    from sentry_sdk.scrubber import DEFAULT_DENYLIST, EventScrubber

    secrets = tuple(s for s in (settings.lm_api_key_value(),) if s)
    fields = tuple(settings.sentry_scrub_fields)
    scrubber: Any = Scrubber(fields, secrets)
    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        environment=settings.sentry_environment,
        traces_sample_rate=settings.sentry_traces_sample_rate,
        send_default_pii=False,
        integrations=[CeleryIntegration(propagate_traces=True)],
        event_scrubber=EventScrubber(
            denylist=[*DEFAULT_DENYLIST, *SENSITIVE_KEYS, *fields], recursive=True
        ),
        before_send=scrubber,
        before_send_transaction=scrubber,
        transport=transport,
        **options,
    )
    # Failed jobs are reported once, by the handler below, not again from their log line.
    ignore_logger("dspex_jobs.tasks")
    detach(HANDLER_ID)
    attach(HANDLER_ID, JOB_FAIL, _report_failure)
    return True


def _report_failure(
    name: str, measurements: Mapping[str, float], metadata: Mapping[str, Any]
) -> None:
    import sentry_sdk

    with sentry_sdk.new_scope() as scope:
        for key, tag in (
            ("kind", "job.kind"),
            ("queue", "job.queue"),
            ("job_id", "job.id"),
            ("trace_id", "trace_id"),
            ("error_code", "error.code"),
            ("worker", "worker"),
        ):
            if metadata.get(key) is not None:
                scope.set_tag(tag, str(metadata[key]))
        scope.set_context(
            "job",
            {
                "attempt": metadata.get("attempt"),
                "retryable": metadata.get("retryable"),
                "duration_s": measurements.get("duration_s"),
            },
        )
        scope.fingerprint = [
            "dspex.job.fail",
            str(metadata.get("kind")),
            str(metadata.get("error_code")),
        ]
        error = sys.exc_info()[1]
        if error is not None:
            sentry_sdk.capture_exception(error)
        else:  # refused before running (cancelled, past its deadline): no exception to show
            sentry_sdk.capture_message(
                f"job failed: [{metadata.get('error_code')}] {metadata.get('error_message')}",
                level="error",
            )
