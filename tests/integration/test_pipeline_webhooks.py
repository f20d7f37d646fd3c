"""Pipeline webhooks through a real worker to a real local HTTP server (no network, no mocks).

One in-process worker consumes ``general`` (the pipeline's native steps: no LM) and
``webhooks`` (the deliveries), on this module's Redis database (56). Every way a run ends
(it succeeds, a step fails, the producer cancels it, its deadline passes) sends exactly one
signed POST, even when the process that ended the run could not send the delivery task.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from conftest import inprocess_worker, make_settings, redis_db_url
from webhook_receiver import Received, Receiver

from dspex_jobs import Client, JobCancelled, ValidationError
from dspex_jobs.embedded import EmbeddedRedis
from dspex_jobs.errors import PipelineDeadlineExceeded, PipelineStepFailed
from dspex_jobs.pipeline import Native, Pipeline
from dspex_jobs.router import default_registry
from dspex_jobs.webhooks import WebhookStore, verify_signature

pytestmark = pytest.mark.integration

DB = 56
SECRET = "test-pipeline-webhook-secret"
NO_LM = "http://127.0.0.1:9/v1"
"""The steps are native: no LM is called, so none is started (a closed port)."""
QUIET_S = 0.5
"""How long a test listens after the first POST for a second one that must not come."""


def _fail(message: str = "boom") -> str:
    raise ValueError(message)


def _sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def _constant(value: Any) -> Any:
    return value


_OPERATIONS = {"tests.pw.fail": _fail, "tests.pw.sleep": _sleep, "tests.pw.constant": _constant}


@pytest.fixture(scope="module", autouse=True)
def operations() -> Iterator[None]:
    registry = default_registry()
    for name, function in _OPERATIONS.items():
        registry.register(name, function, replace=True)
    yield
    for name in _OPERATIONS:
        registry.unregister(name)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture(scope="module")
def app(redis_server: EmbeddedRedis) -> Iterator[Celery]:
    settings = make_settings(
        redis_db_url(redis_server, DB),
        NO_LM,
        webhook_allowed_hosts=("127.0.0.1",),
        webhook_secret=SECRET,
        webhook_timeout_s=2.0,
        webhook_max_attempts=3,
        webhook_backoff_s=0.1,
        webhook_backoff_max_s=0.4,
    )
    with inprocess_worker(settings, concurrency=4, queues=("general", "webhooks")) as worker_app:
        yield worker_app
    redis.Redis.from_url(settings.redis_url).flushdb()


@pytest.fixture
def client(app: Celery) -> Iterator[Client]:
    with Client(app.dspex_settings, app=app) as c:  # type: ignore[attr-defined]
        yield c


def _one_post(client: Client, receiver: Receiver, path: str, run_id: str) -> dict[str, Any]:
    """The one POST ``path`` gets for the run, after checking it is signed, delivered once,
    and that no second one follows."""
    (request,) = receiver.wait_for(path, 1)
    _check_signed(request, run_id)
    store = WebhookStore(client._redis, client._keys, client.settings.webhook_record_ttl_s)
    deadline = time.monotonic() + 10
    while (record := store.get(run_id)) is None or record["status"] != "delivered":
        assert time.monotonic() < deadline, record
        time.sleep(0.05)
    assert record["kind"] == "pipeline" and record["attempts"] == 1
    time.sleep(QUIET_S)
    assert len(receiver.received(path)) == 1
    # And nothing left in the outbox to send it a second time
    assert not [
        m for m in client._redis.zrange(client._keys.delayed(), 0, -1) if run_id.encode() in m
    ]
    body: dict[str, Any] = json.loads(request.body)
    assert body["job_id"] == run_id and body["kind"] == "pipeline"
    assert body["event"] == f"pipeline.{body['status']}"
    assert request.headers["X-Dspex-Event"] == body["event"]
    assert SECRET not in request.body.decode() and path not in request.body.decode()
    return body


def _check_signed(request: Received, run_id: str) -> None:
    assert request.headers["X-Dspex-Delivery"] == run_id
    assert verify_signature(SECRET.encode(), request.body, request.headers)
    tampered = request.body.replace(b"pipeline", b"pipelinE", 1)
    assert not verify_signature(SECRET.encode(), tampered, request.headers)


def test_a_succeeded_run_sends_one_signed_webhook_with_its_outputs(
    client: Client, receiver: Receiver
) -> None:
    # Given a two-step pipeline run with a webhook
    path = "/hooks/pipeline-ok"
    pipeline = Pipeline(
        [
            Native("tests.pw.constant", name="first", outputs=["a"], inputs={"value": "seed"}),
            Native("tests.pw.constant", name="second", outputs=["b"], inputs={"value": "a"}),
        ],
        name="hooked",
    )
    handle = client.run(pipeline, seed="s-1", webhook=receiver.url(path))
    result = handle.result(timeout=30)
    # When it succeeds, expect one POST with what it produced, and not its inputs
    body = _one_post(client, receiver, path, handle.id)
    assert body["status"] == "succeeded" and body["pipeline"] == "hooked"
    assert body["error"] is None and body["trace_id"] == result.trace_id
    assert body["outputs"] == {
        "a": "s-1",
        "b": "s-1",
        "first": result.outputs_of("first"),
        "second": result.outputs_of("second"),
    }
    assert "seed" not in body["outputs"]
    assert body["timings"]["created_at"] == pytest.approx(result.created_at)
    assert body["timings"]["finished_at"] == pytest.approx(result.finished_at)


def test_a_failed_step_sends_one_webhook_naming_the_step(
    client: Client, receiver: Receiver
) -> None:
    # Given a run whose second step fails (and a third that never runs)
    path = "/hooks/pipeline-failed"
    pipeline = Pipeline(
        [
            Native("tests.pw.constant", name="fine", outputs=["a"], value=1),
            Native("tests.pw.fail", name="broken", outputs=["b"], message="disk on fire"),
            Native("tests.pw.constant", name="never", outputs=["c"], value=3),
        ]
    )
    handle = client.run(pipeline, webhook=receiver.url(path))
    with pytest.raises(PipelineStepFailed):
        handle.result(timeout=30)
    # Expect one POST carrying the run's error and the failed step, no outputs
    body = _one_post(client, receiver, path, handle.id)
    assert body["status"] == "failed" and body["step"] == "broken"
    assert body["error"]["code"] == "pipeline_step_failed"
    assert "disk on fire" in body["error"]["message"] and body["outputs"] is None


def test_a_cancelled_run_sends_one_webhook_even_when_its_step_stops_later(
    client: Client, receiver: Receiver
) -> None:
    # Given a run in its long first step
    path = "/hooks/pipeline-cancelled"
    pipeline = Pipeline(
        [
            Native("tests.pw.sleep", name="long", outputs=["a"], seconds=10.0),
            Native("tests.pw.constant", name="next", outputs=["b"], value=2),
        ]
    )
    handle = client.run(pipeline, webhook=receiver.url(path))
    while handle.status()["long"].state.value != "running":
        time.sleep(0.02)
    # When the producer cancels it (the worker's step stops a moment later)
    assert handle.cancel() is True and handle.cancel() is False
    with pytest.raises(JobCancelled):
        handle.result(timeout=5)
    deadline = time.monotonic() + 5
    while handle.status()["long"].state.value == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    # Expect one POST, from whoever ended the run
    body = _one_post(client, receiver, path, handle.id)
    assert body["status"] == "cancelled" and body["error"]["code"] == "job_cancelled"


def test_a_run_past_its_deadline_sends_one_webhook(client: Client, receiver: Receiver) -> None:
    # Given a run whose deadline passes in its first step (the worker and the waiting
    # producer both notice: only the one that ends the run sends the webhook)
    path = "/hooks/pipeline-deadline"
    pipeline = Pipeline(
        [
            Native("tests.pw.sleep", name="long", outputs=["a"], seconds=10.0),
            Native("tests.pw.constant", name="next", outputs=["b"], value=2),
        ],
        timeout_s=0.5,
    )
    handle = client.run(pipeline, webhook=receiver.url(path))
    with pytest.raises(PipelineDeadlineExceeded):
        handle.result(timeout=10)
    body = _one_post(client, receiver, path, handle.id)
    assert body["status"] == "failed"
    assert body["error"]["code"] == "pipeline_deadline_exceeded"


def test_run_refuses_unsafe_webhooks_and_uses_the_default(
    client: Client, receiver: Receiver
) -> None:
    pipeline = Pipeline([Native("tests.pw.constant", name="only", outputs=["a"], value=1)])
    # Expect a URL job webhooks refuse to be refused here too, before anything is stored
    before = client._redis.dbsize()
    for url, why in [
        ("ftp://127.0.0.1/x", "only http and https"),
        ("http://example.com/x", "not in DSPEX_WEBHOOK_ALLOWED_HOSTS"),
        ("http://user:pw@127.0.0.1/x", "credentials"),
    ]:
        with pytest.raises(ValidationError, match=why) as caught:
            client.run(pipeline, webhook=url)
        assert caught.value.details["field"] == "webhook"
    assert client._redis.dbsize() == before
    # And DSPEX_WEBHOOK_URL to be used when run() names none
    path = "/hooks/pipeline-default"
    settings = client.settings.model_copy(update={"webhook_url": receiver.url(path)})
    with Client(settings, app=client.app) as producer:
        handle = producer.run(pipeline)
        handle.result(timeout=30)
    assert _one_post(client, receiver, path, handle.id)["status"] == "succeeded"
    # And a run without any webhook to record no delivery at all
    plain = client.run(pipeline)
    plain.result(timeout=30)
    assert client._redis.exists(client._keys.webhook(plain.id)) == 0


def test_a_producer_that_cannot_send_the_task_still_gets_the_webhook_delivered(
    client: Client, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a producer whose broker connection is down (a closed port), but whose Redis for
    # run state works: it can end a run, not send the delivery task
    from dspex_jobs.app import make_app

    path = "/hooks/pipeline-outbox"
    pipeline = Pipeline([Native("tests.pw.sleep", name="long", outputs=["a"], seconds=10.0)])
    handle = client.run(pipeline, webhook=receiver.url(path))
    while handle.status()["long"].state.value != "running":
        time.sleep(0.02)
    dead = make_app(client.settings.model_copy(update={"redis_url": "redis://127.0.0.1:9/0"}))
    with (
        Client(client.settings, app=dead) as cut_off,
        caplog.at_level(logging.WARNING, logger="dspex_jobs.pipeline"),
    ):
        # When it cancels the run, expect the run to end, and the delivery recorded with it
        assert cut_off.pipeline_run(handle.id).cancel() is True
    with pytest.raises(JobCancelled):
        handle.result(timeout=5)
    outbox = [
        m for m in client._redis.zrange(client._keys.delayed(), 0, -1) if handle.id.encode() in m
    ]
    assert "could not send its webhook now" in caplog.text
    assert len(outbox) == 1 and not receiver.received(path)
    # And when its outbox entry falls due (30 s later; here made due now), expect a worker's
    # heartbeat to send it: one delivery, as if the producer had sent it
    client._redis.zadd(client._keys.delayed(), {outbox[0]: time.time()})
    body = _one_post(client, receiver, path, handle.id)
    assert body["status"] == "cancelled"
