"""Resilience through a real worker: fallbacks, dead letters, idempotency, deadlines, cancel."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from celery import Celery
from conftest import LM_MODEL, inprocess_worker, make_settings, redis_db_url

from dspex_jobs import (
    Client,
    DeadlineExceeded,
    JobCancelled,
    JobStatus,
    LMAuthError,
    LMUnavailable,
)
from dspex_jobs.embedded import EmbeddedRedis
from dspex_jobs.keys import Keys
from dspex_jobs.resilience.deadletter import DeadLetters
from dspex_jobs.stack import LocalStack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def app(redis_server: EmbeddedRedis, lm_server: object) -> Iterator[Celery]:
    # The worker's own LM is a dead endpoint; jobs name fallbacks or the live server.
    settings = make_settings(
        redis_db_url(redis_server, 13), "http://127.0.0.1:1/v1", job_max_retries=0
    )
    with inprocess_worker(settings) as worker_app:
        yield worker_app


@pytest.fixture
def client(app: Celery) -> Iterator[Client]:
    with Client(app.dspex_settings, app=app) as c:  # type: ignore[attr-defined]
        yield c


def test_a_retryable_failure_falls_back_to_the_next_model(client: Client) -> None:
    # Given an unreachable primary and a fallback model (unreachable too, on this worker)
    handle = client.predict(
        "question -> answer", question="anyone?", lm={"fallbacks": ["openai/also-dead"]}
    )
    # Expect the fallback tried after the primary's retryable failure: its error is the last
    with pytest.raises(LMUnavailable) as info:
        handle.result(timeout=60)
    assert "openai/also-dead" in str(info.value)


def test_permanent_failures_are_dead_lettered_and_can_be_replayed(
    client: Client, app: Celery
) -> None:
    letters = DeadLetters(redis.Redis.from_url(client.settings.redis_url), Keys())
    before = len(letters)
    handle = client.predict("question -> answer", question="dead?")
    with pytest.raises(Exception):  # noqa: B017 - the dead endpoint's exact class is DSPy's
        handle.result(timeout=60)
    letter = letters.get(handle.id)
    assert letter is not None and len(letters) == before + 1
    assert letter["envelope"]["inputs"] == {"question": "dead?"}
    assert "Traceback" in letter["traceback"] and letter["error"]["code"]
    # Replayed, it runs again (and fails again, into the store once more)
    assert letters.replay(app, handle.id)
    with pytest.raises(Exception):  # noqa: B017
        client.job(handle.id).result(timeout=60)
    assert letters.get(handle.id) is not None


def test_idempotency_key_returns_the_first_job(client: Client) -> None:
    first = client.submit("ping", idempotency_key="order-42")
    again = client.submit("ping", idempotency_key="order-42")
    other = client.submit("ping", idempotency_key="order-43")
    assert again.id == first.id != other.id
    assert again.result(timeout=30).ok


def test_a_job_past_its_deadline_is_not_run(client: Client, app: Celery) -> None:
    # Given a job whose deadline passes while it waits (sent straight to the queue)
    handle = client.submit("ping", deadline_s=0.0)
    time.sleep(0.05)
    with pytest.raises(DeadlineExceeded, match="not run"):
        handle.result(timeout=30)


def test_cancelled_before_it_starts(client: Client, app: Celery) -> None:
    # Given a job on a queue nobody consumes yet, cancelled, then moved to a live queue
    handle = client.ping(queue="optimizer")
    handle.cancel()
    conn = redis.Redis.from_url(client.settings.redis_url)
    conn.lmove("optimizer", "general", "RIGHT", "LEFT")
    with pytest.raises(JobCancelled):
        handle.result(timeout=30)
    assert handle.status() is JobStatus.CANCELLED


def test_auth_errors_are_permanent_and_not_retried(
    redis_server: EmbeddedRedis, lm_server: object
) -> None:
    # A worker process of its own: a second in-process worker would share Celery's module
    # state (and Redis connections) with this module's worker and can take it down.
    url = redis_db_url(redis_server, 14)
    redis.Redis.from_url(url).flushdb()
    stack = LocalStack(
        redis_url=url,
        lm=LM_MODEL,
        lm_api_base=lm_server.url,  # type: ignore[attr-defined]
        queues=["general"],
        worker_args={"general": ["--concurrency", "1"]},
        env={"DSPEX_LM_API_KEY": "wrong", "DSPEX_JOB_MAX_RETRIES": "5"},
    )
    with stack, Client(stack.settings) as c:
        handle = c.predict("question -> answer", question="let me in")
        with pytest.raises(LMAuthError):
            handle.result(timeout=60)
        letter = DeadLetters(redis.Redis.from_url(url), Keys()).get(handle.id)
        assert letter is not None and letter["attempt"] == 1
