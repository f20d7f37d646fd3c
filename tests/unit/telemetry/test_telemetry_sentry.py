"""Sentry: a failed job is reported once, tagged with its job and trace, with no secrets.

The SDK sends through a transport of the test's own (no network)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import sentry_sdk
from sentry_sdk.transport import Transport

from dspex_jobs import telemetry
from dspex_jobs.errors import LMTimeout
from dspex_jobs.jobs import Job
from dspex_jobs.settings import Settings
from dspex_jobs.telemetry import jobs as job_events
from dspex_jobs.telemetry.context import job_context
from dspex_jobs.telemetry.sentry import FILTERED, HANDLER_ID, Scrubber, init_sentry

API_KEY = "sk-live-0123456789abcdef"
PATIENT = "-".join(("P", "778"))  # built, so the value is not in the source lines Sentry sends


class CaptureTransport(Transport):
    """Keeps every envelope instead of sending it."""

    def __init__(self) -> None:
        super().__init__()
        self.envelopes: list[Any] = []

    def capture_envelope(self, envelope: Any) -> None:
        self.envelopes.append(envelope)

    def events(self) -> list[dict[str, Any]]:
        return [
            item.payload.json
            for envelope in self.envelopes
            for item in envelope.items
            if item.type == "event"
        ]


@pytest.fixture
def transport() -> Iterator[CaptureTransport]:
    settings = Settings.from_env(
        environ={},
        sentry_dsn="http://public@127.0.0.1:9/1",
        lm_api_key=API_KEY,
        sentry_scrub_fields=("patient_id",),
    )
    capture = CaptureTransport()
    assert init_sentry(settings, transport=capture)
    yield capture
    telemetry.detach(HANDLER_ID)
    sentry_sdk.init()  # no DSN: the SDK sends nothing from here on


def test_off_without_a_dsn() -> None:
    assert init_sentry(Settings.from_env(environ={})) is False
    assert HANDLER_ID not in telemetry.attached()


def test_failed_job_is_captured_with_tags_and_without_secrets(
    transport: CaptureTransport,
) -> None:
    job = Job(kind="predict", signature="q -> a", inputs={"q": "x"}, trace_id="trace-42")
    # Given a job that fails with an error whose text and context hold secrets
    with job_context(job_id=job.id, trace_id=job.trace_id, kind="predict", queue="general"):
        sentry_sdk.set_extra("inputs", {"patient_id": PATIENT, "q": "fine"})
        sentry_sdk.set_extra("headers", {"Authorization": f"Bearer {API_KEY}"})
        try:
            raise LMTimeout(
                f"timed out calling https://user:hunter2@lm.example/v1 with key {API_KEY}",
                job_id=job.id,
            )
        except LMTimeout as error:
            job_events.finished(job, "w1", 1, job.created_at, "failed", error, None)
    sentry_sdk.flush()
    # Expect one event, tagged with the job, and no secret anywhere in it
    events = transport.events()
    assert len(events) == 1
    event = events[0]
    assert event["tags"]["job.kind"] == "predict"
    assert event["tags"]["job.queue"] == "general"
    assert event["tags"]["trace_id"] == "trace-42"
    assert event["tags"]["error.code"] == LMTimeout.code
    text = json.dumps(event)
    for secret in (API_KEY, "hunter2", PATIENT):
        assert secret not in text
    assert FILTERED in text


def test_scrubber_keeps_what_is_not_secret() -> None:
    scrub = Scrubber(fields=("ssn",), secrets=("s3cr3t-value",))
    out = scrub.scrub(
        {
            "api_key": "k",
            "ssn": "1",
            "tokens": 12,
            "model": "m",
            "msg": "Bearer abc.def and s3cr3t-value",
            "url": "redis://:pw@h:6379/0",
        }
    )
    assert out == {
        "api_key": FILTERED,
        "ssn": FILTERED,
        "tokens": 12,
        "model": "m",
        "msg": f"Bearer {FILTERED} and {FILTERED}",
        "url": f"redis://:{FILTERED}@h:6379/0",
    }
