"""Webhooks through a real worker to a real local HTTP server (no network, no mocks).

One in-process worker consumes both ``general`` (the jobs) and ``webhooks`` (the
deliveries), on this module's Redis database (32). Retries are sped up by settings
(backoff 0.1 s, 3 attempts, 2 s timeout), not by faking anything.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from click.testing import CliRunner
from conftest import inprocess_worker, make_settings, redis_db_url
from webhook_receiver import Receiver

from dspex_jobs import Client, ValidationError
from dspex_jobs.cli import main
from dspex_jobs.embedded import EmbeddedRedis
from dspex_jobs.webhooks import WebhookStore, enqueue_webhook, verify_signature

pytestmark = pytest.mark.integration

DB = 32
SECRET = "test-webhook-secret"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture(scope="module")
def app(redis_server: EmbeddedRedis, lm_server: object) -> Iterator[Celery]:
    settings = make_settings(
        redis_db_url(redis_server, DB),
        lm_server.url,  # type: ignore[attr-defined]
        webhook_allowed_hosts=("127.0.0.1",),
        webhook_secret=SECRET,
        webhook_timeout_s=2.0,
        webhook_max_attempts=3,
        webhook_backoff_s=0.1,
        webhook_backoff_max_s=0.4,
        webhook_host_concurrency=2,
    )
    with inprocess_worker(settings, concurrency=6, queues=("general", "webhooks")) as worker_app:
        yield worker_app
    redis.Redis.from_url(settings.redis_url).flushdb()


@pytest.fixture
def client(app: Celery) -> Iterator[Client]:
    with Client(app.dspex_settings, app=app) as c:  # type: ignore[attr-defined]
        yield c


def _store(client: Client) -> WebhookStore:
    return WebhookStore(client._redis, client._keys, client.settings.webhook_record_ttl_s)


def _wait_status(
    client: Client, delivery_id: str, status: str, timeout_s: float = 30.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        record = _store(client).get(delivery_id)
        if record is not None and record["status"] == status:
            return record
        assert time.monotonic() < deadline, f"{delivery_id} is {record and record['status']}"
        time.sleep(0.05)


def _docs_verifier() -> Any:
    """The receiver's verification function exactly as docs/webhooks.md prints it."""
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    code = next(b for b in blocks if "def verify_webhook" in b)
    namespace: dict[str, Any] = {}
    exec(compile(code, str(DOCS), "exec"), namespace)
    return namespace["verify_webhook"]


def test_job_webhook_is_delivered_once_signed_and_complete(
    client: Client, receiver: Receiver
) -> None:
    # Given a job submitted with a webhook
    path = "/hooks/ok"
    handle = client.predict(
        "question -> answer", question="Where do results live?", webhook=receiver.url(path)
    )
    result = handle.result(timeout=60)
    # When the job ends, expect exactly one POST carrying the job's outcome
    (request,) = receiver.wait_for(path, 1)
    body = json.loads(request.body)
    assert body["event"] == "job.succeeded" and body["job_id"] == handle.id
    assert body["kind"] == "predict" and body["status"] == "succeeded"
    assert body["outputs"] == result.outputs and body["error"] is None
    assert body["trace_id"] == result.trace_id and body["usage"] == result.usage
    assert body["timings"]["finished_at"] == result.timings.finished_at
    assert SECRET not in request.body.decode() and path not in request.body.decode()
    record = _wait_status(client, handle.id, "delivered")
    assert record["attempts"] == 1 and request.headers["X-Dspex-Delivery"] == handle.id
    # And nothing left to send it twice (the outbox copy was dropped once the task was sent)
    assert not [
        m for m in client._redis.zrange(client._keys.delayed(), 0, -1) if handle.id.encode() in m
    ]
    assert len(receiver.received(path)) == 1
    # Expect the signature to verify, with the library and with the documented 10 lines
    headers = request.headers
    assert verify_signature(SECRET.encode(), request.body, headers)
    verify_webhook = _docs_verifier()
    assert verify_webhook(SECRET.encode(), request.body, headers)
    # And a tampered body, a wrong secret or a stale timestamp not to
    tampered = request.body.replace(b'"succeeded"', b'"failed"', 1)
    assert not verify_webhook(SECRET.encode(), tampered, headers)
    assert not verify_signature(SECRET.encode(), tampered, headers)
    assert not verify_webhook(b"another secret", request.body, headers)
    assert not verify_signature(SECRET.encode(), request.body, headers, now=time.time() + 3600)


def test_retried_after_two_500s_then_delivered(client: Client, receiver: Receiver) -> None:
    # Given an endpoint that fails twice with 500
    path = "/hooks/flaky"
    receiver.statuses[path] = [500, 503]
    handle = client.predict("question -> answer", question="Retried?", webhook=receiver.url(path))
    handle.result(timeout=60)
    # Expect three attempts of the same delivery, then delivered
    requests = receiver.wait_for(path, 3)
    record = _wait_status(client, handle.id, "delivered")
    assert record["attempts"] == 3
    assert [r.headers["X-Dspex-Attempt"] for r in requests] == ["1", "2", "3"]
    assert {r.headers["X-Dspex-Delivery"] for r in requests} == {handle.id}
    assert len({r.body for r in requests}) == 1  # the same body each time, signed again


def test_failed_after_the_budget_listed_and_replayed(
    client: Client, receiver: Receiver, app: Celery
) -> None:
    # Given an endpoint that answers 500 to every attempt
    path = "/hooks/dead"
    receiver.statuses[path] = [500] * 3
    handle = client.predict("question -> answer", question="Dead?", webhook=receiver.url(path))
    handle.result(timeout=60)
    # Expect three attempts, then undeliverable, listed by the CLI
    record = _wait_status(client, handle.id, "failed")
    assert record["attempts"] == 3 and "500" in record["last_error"]
    env = {"DSPEX_REDIS_URL": client.settings.redis_url}
    listed = CliRunner().invoke(main, ["webhooks", "ls", "--failed"], env=env)
    assert listed.exit_code == 0 and handle.id in listed.output
    # When the endpoint recovers and the delivery is replayed from the CLI
    replayed = CliRunner().invoke(main, ["webhooks", "replay", handle.id], env=env)
    assert replayed.exit_code == 0, replayed.output
    # Expect it delivered, and gone from the failed list
    _wait_status(client, handle.id, "delivered")
    assert len(receiver.received(path)) == 4
    listed = CliRunner().invoke(main, ["webhooks", "ls", "--failed"], env=env)
    assert handle.id not in listed.output


def test_failed_and_refused_jobs_send_their_error(client: Client, receiver: Receiver) -> None:
    # Given a job that misses its deadline (it fails on the worker without running)
    path = "/hooks/failed"
    handle = client.submit(
        "predict",
        "question -> answer",
        {"question": "Late?"},
        deadline_s=1e-6,
        webhook=receiver.url(path),
    )
    # Expect a job.failed webhook with the stable error code
    (request,) = receiver.wait_for(path, 1)
    body = json.loads(request.body)
    assert body["event"] == "job.failed" and body["job_id"] == handle.id
    assert body["outputs"] is None and body["error"]["code"] == "deadline_exceeded"


def test_redirect_to_another_host_is_refused(client: Client, receiver: Receiver) -> None:
    # Given an endpoint that redirects to a host outside the allowlist
    path = "/hooks/redirect"
    receiver.redirects[path] = "http://localhost:1/elsewhere"
    ok = enqueue_webhook(
        client.app,
        receiver.url(path),
        {"event": "test.redirect"},
        delivery_id="redirect-1",
        kind="test",
    )
    assert ok
    # Expect one attempt, never followed, and the delivery failed for good
    record = _wait_status(client, "redirect-1", "failed")
    assert record["attempts"] == 1 and "redirect" in record["last_error"]
    assert len(receiver.received(path)) == 1


def test_a_dead_endpoint_never_delays_other_webhooks(client: Client, receiver: Receiver) -> None:
    # Given more deliveries than the pool has threads (6) to an endpoint that never answers
    # in time (3 s > the 2 s timeout) ...
    with Receiver() as slow:
        slow.delays_s["/hooks/slow"] = 3.0
        slow_ids = [f"slow-{i}" for i in range(8)]
        for delivery_id in slow_ids:
            enqueue_webhook(
                client.app,
                slow.url("/hooks/slow"),
                {"event": "test.slow"},
                delivery_id=delivery_id,
                kind="test",
            )
        slow.wait_for("/hooks/slow", 2)  # its deliveries are now hanging
        # When a webhook for a healthy endpoint is sent after them
        enqueue_webhook(
            client.app,
            receiver.url("/hooks/fast"),
            {"event": "test.fast"},
            delivery_id="fast-1",
            kind="test",
        )
        _wait_status(client, "fast-1", "delivered")
        # Expect it delivered before a single slow attempt even timed out: it never waited
        # for a thread a hanging delivery held
        slow_records = [_store(client).get(i) for i in slow_ids]
        assert all(
            r is not None and r["status"] == "pending" and not r.get("last_error")
            for r in slow_records
        ), slow_records
        # And the slow endpoint held no more than its 2 host slots of the pool
        host = client._keys.webhook_host(f"127.0.0.1:{slow.port}")
        assert client._redis.zcard(host) <= 2


def test_submit_refuses_unsafe_webhooks_before_enqueueing(client: Client) -> None:
    for url, why in [
        ("ftp://127.0.0.1/x", "only http and https"),
        ("http://example.com/x", "not in DSPEX_WEBHOOK_ALLOWED_HOSTS"),
        ("http://user:pw@127.0.0.1/x", "credentials"),
        ("not a url", "only http and https"),
    ]:
        with pytest.raises(ValidationError, match=why) as caught:
            client.predict("question -> answer", question="x", webhook=url)
        assert caught.value.details["field"] == "webhook"
    with (
        Client(make_settings(client.settings.redis_url)) as off,
        pytest.raises(ValidationError, match="webhooks are off"),
    ):
        off.predict("question -> answer", question="x", webhook="http://127.0.0.1/x")


def test_time_budget_spent_means_undeliverable(client: Client, receiver: Receiver) -> None:
    # Given a delivery recorded longer ago than DSPEX_WEBHOOK_BUDGET_S (an hour)
    enqueue_webhook(
        client.app,
        receiver.url("/hooks/late"),
        {"event": "test.late"},
        delivery_id="late-1",
        kind="test",
    )
    _wait_status(client, "late-1", "delivered")
    store = _store(client)
    assert store.reset("late-1")
    client._redis.hset(client._keys.webhook("late-1"), "created_at", repr(time.time() - 7200))
    # When its task runs again
    client.app.send_task("dspex.webhook.deliver", args=({"id": "late-1"},), queue="webhooks")
    # Expect no new attempt: undeliverable, saying why
    record = _wait_status(client, "late-1", "failed")
    assert "budget" in record["last_error"] and len(receiver.received("/hooks/late")) == 1


def test_malformed_delivery_tasks_are_dropped_and_the_worker_goes_on(
    client: Client,
    receiver: Receiver,
) -> None:
    # Given junk on the webhooks queue
    for junk in ({"id": 5}, "not a dict", {"id": "x" * 1000}, {"id": "no-such-delivery"}):
        client.app.send_task("dspex.webhook.deliver", args=(junk,), queue="webhooks")
    # Expect the next real delivery to go through as usual
    enqueue_webhook(
        client.app,
        receiver.url("/hooks/after-junk"),
        {"event": "test.after"},
        delivery_id="after-junk",
        kind="test",
    )
    _wait_status(client, "after-junk", "delivered")
