"""A job's breaker and rate-limit check runs when its first LM call is due, not before the job.

So an answer from the shared LM cache is served while the endpoint's breaker is open and
takes no request token, while every call that would reach the LM is still checked. Real
DSPy, the worker's runtime and guard against real Redis (database 39) and the local LM
server, whose request counter shows what reached it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from conftest import lm_requests, make_settings, redis_db_url

from dspex_jobs.embedded import EmbeddedRedis
from dspex_jobs.errors import CircuitOpen
from dspex_jobs.jobs import Job, JobKind
from dspex_jobs.resilience.breaker import BreakerState, endpoint_id
from dspex_jobs.resilience.guard import RateLimitWait
from dspex_jobs.worker import WorkerContext

pytestmark = pytest.mark.integration

QUESTION = "Which city is the capital of France? Paris is the capital of France."


def _job(question: str = QUESTION, **lm: Any) -> Job:
    return Job(
        kind=JobKind.PREDICT,
        signature="question -> answer",
        inputs={"question": question},
        lm=lm,
    )


@pytest.fixture
def worker(redis_server: EmbeddedRedis, lm_server: object) -> Iterator[Any]:
    """A factory of worker contexts on a clean database, with the shared LM cache on."""
    url = redis_db_url(redis_server, 39)
    client = redis.Redis.from_url(url)
    client.flushdb()

    def make(**settings: Any) -> WorkerContext:
        return WorkerContext(
            make_settings(url, lm_server.url, lm_cache=True, **settings)  # type: ignore[attr-defined]
        )

    yield make
    client.flushdb()
    client.close()


def test_an_open_breaker_fails_new_calls_fast_and_serves_cached_answers(
    worker: Any, lm_server: Any
) -> None:
    ctx = worker(breaker_failure_threshold=1, breaker_open_s=1.0)
    runtime = ctx.runtime()
    answered = runtime.run(_job())  # fills the shared cache
    lm = runtime.lms.get()
    endpoint = endpoint_id(lm.model, lm.kwargs.get("api_base"))
    breaker = ctx.guard.breaker
    assert breaker is not None
    # Given the endpoint's breaker open
    assert breaker.record_failure(endpoint) is BreakerState.OPEN
    before = lm_requests(lm_server.url)
    # Expect: the cached question is answered, from the cache
    assert runtime.run(_job()).outputs == answered.outputs
    # Expect: a new question, and the cached one asked with cache=False, fail fast
    with pytest.raises(CircuitOpen):
        runtime.run(_job("Which river runs through Paris?"))
    with pytest.raises(CircuitOpen):
        runtime.run(_job(cache=False))
    assert lm_requests(lm_server.url) == before
    # When the breaker half-opens, a cached answer does not take the probe...
    time.sleep(1.1)
    assert runtime.run(_job()).outputs == answered.outputs
    # ...the next call that reaches the LM is the probe, and its success closes the breaker
    runtime.run(_job("Which river runs through Paris?"))
    assert lm_requests(lm_server.url) == before + 1
    assert [b["state"] for b in breaker.states()] == ["closed"]


def test_answers_from_the_cache_take_no_request_token(worker: Any, lm_server: Any) -> None:
    # Given a shared limit of two LM requests a minute
    runtime = worker(lm_requests_per_minute=2).runtime()
    before = lm_requests(lm_server.url)
    runtime.run(_job())  # a miss: the first token
    # When the same question comes back many times
    for _ in range(5):
        runtime.run(_job())
    # Expect: only the calls that reach the LM took tokens: one more question fits...
    runtime.run(_job("Which river runs through Paris?"))
    assert lm_requests(lm_server.url) == before + 2
    # ...and the third LM request of the minute must wait
    with pytest.raises(RateLimitWait):
        runtime.run(_job("Which tower stands in Paris?"))
    assert lm_requests(lm_server.url) == before + 2


def test_a_streaming_job_is_checked_inside_dspys_streaming_thread(worker: Any) -> None:
    # Given the endpoint's breaker open (DSPy streams from a thread of its own, and the
    # check travels there in dspy.context)
    ctx = worker(breaker_failure_threshold=1, breaker_open_s=60.0)
    runtime = ctx.runtime()
    lm = runtime.lms.get()
    assert ctx.guard.breaker is not None
    ctx.guard.breaker.record_failure(endpoint_id(lm.model, lm.kwargs.get("api_base")))
    chunks: list[tuple[str, str, bool]] = []
    # Expect: a streaming job that needs the LM fails fast, having streamed nothing
    with pytest.raises(CircuitOpen):
        runtime.run(_job("Which river runs through Paris?"), on_chunk=lambda *c: chunks.append(c))
    assert chunks == []
