"""The result store's one-round-trip save: a cancel that lands while a job runs wins.

Store-level cases against real Redis, then a job cancelled mid-LM-call on a real worker
(threads pool, no time limit: the cancel is seen only when the result is saved). Redis DB 9.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from celery import Celery
from conftest import inprocess_worker, make_settings, redis_db_url

from dspex_jobs.client import Client
from dspex_jobs.embedded import EmbeddedRedis
from dspex_jobs.errors import JobCancelled
from dspex_jobs.keys import Keys
from dspex_jobs.lmserver import LMServerConfig, LocalLMServer
from dspex_jobs.multitask import STOP_MODES
from dspex_jobs.results import JobResult, JobStatus, Timings
from dspex_jobs.store import ResultStore

pytestmark = pytest.mark.integration

DB = 9


@pytest.fixture
def store(redis_server: EmbeddedRedis) -> Iterator[ResultStore]:
    client = redis.Redis.from_url(redis_db_url(redis_server, DB))
    client.flushdb()
    yield ResultStore(client, Keys(), result_ttl_s=60)
    client.close()


def _result(job_id: str) -> JobResult:
    now = time.time()
    return JobResult(
        job_id=job_id,
        kind="ping",
        status=JobStatus.SUCCEEDED,
        outputs={"a": 1},
        timings=Timings(created_at=now, started_at=now, finished_at=now),
        worker="test",
    )


def test_saves_when_nobody_cancelled(store: ResultStore) -> None:
    assert store.save_unless_cancelled(_result("j1"), STOP_MODES) is True
    found = store.get("j1")
    assert found is not None and found.outputs == {"a": 1}
    assert store.wait("j1", timeout_s=1) == found  # the waiting producer is woken too


def test_writes_nothing_when_the_job_was_cancelled(store: ResultStore) -> None:
    store.request_cancel("j2")
    store.client.set(store.keys.lease("j2"), "me")
    assert store.save_unless_cancelled(_result("j2"), STOP_MODES) is None
    assert store.get("j2") is None
    assert store.client.exists(store.keys.done("j2")) == 0
    assert store.client.exists(store.keys.lease("j2")) == 1  # untouched: the caller goes on


def test_a_sessions_interrupt_is_not_a_cancellation(store: ResultStore) -> None:
    store.client.set(store.keys.cancel("j3"), "interrupt")
    assert store.save_unless_cancelled(_result("j3"), STOP_MODES) is True
    assert store.get("j3") is not None


def test_a_second_result_is_counted_not_stored(store: ResultStore) -> None:
    assert store.save_unless_cancelled(_result("j4"), STOP_MODES) is True
    again = _result("j4").model_copy(update={"outputs": {"a": 2}})
    assert store.save_unless_cancelled(again, STOP_MODES) is False
    found = store.get("j4")
    assert found is not None and found.outputs == {"a": 1}
    assert int(store.client.get(store.keys.duplicate_results()) or 0) == 1


@pytest.fixture(scope="module")
def slow_app(redis_server: EmbeddedRedis) -> Iterator[Celery]:
    with LocalLMServer(LMServerConfig(latency_ms=1500)) as lm:
        settings = make_settings(redis_db_url(redis_server, DB), lm.url)
        with inprocess_worker(settings, concurrency=1) as app:  # type: ignore[misc]
            yield app


def test_a_job_cancelled_during_its_lm_call_ends_cancelled(slow_app: Celery) -> None:
    with Client(slow_app.dspex_settings, app=slow_app) as client:  # type: ignore[attr-defined]
        # Given a Predict whose LM call takes 1.5 s
        handle = client.predict("question -> answer", question="Stop me?")
        deadline = time.monotonic() + 30
        while handle.status() is not JobStatus.RUNNING:
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.02)
        # When it is cancelled while the call runs
        handle.cancel()
        # Expect it to end cancelled, its outputs discarded
        with pytest.raises(JobCancelled, match="outputs were discarded"):
            handle.result(timeout=30)
        assert handle.status() is JobStatus.CANCELLED
