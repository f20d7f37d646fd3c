"""Breaker, rate limit, delayed jobs, dead letters and leases against a real Redis."""

from __future__ import annotations

import time

import pytest
import redis
from conftest import make_settings

from dspex_jobs.app import make_app
from dspex_jobs.errors import CircuitOpen, LMAuthError, LMUnavailable
from dspex_jobs.health import queue_depth
from dspex_jobs.keys import Keys
from dspex_jobs.resilience.breaker import BreakerConfig, BreakerState, CircuitBreaker
from dspex_jobs.resilience.deadletter import DeadLetters
from dspex_jobs.resilience.delayed import DelayedJobs
from dspex_jobs.resilience.guard import LMGuard, RateLimitWait
from dspex_jobs.resilience.lease import LeaseKeeper
from dspex_jobs.resilience.ratelimit import RateLimiter, RateLimits

pytestmark = pytest.mark.integration

EP = "openai/m@http://127.0.0.1:9/v1"


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def test_breaker_opens_fails_fast_probes_once_and_closes(client: redis.Redis) -> None:
    breaker = CircuitBreaker(
        client, Keys(), BreakerConfig(failure_threshold=3, window_s=30, open_s=0.5)
    )
    # Given closed, two failures keep it closed and the third opens it
    assert breaker.allow(EP).allowed
    assert [breaker.record_failure(EP) for _ in range(3)] == [
        BreakerState.CLOSED,
        BreakerState.CLOSED,
        BreakerState.OPEN,
    ]
    # While open, calls are refused with the time left
    decision = breaker.allow(EP)
    assert not decision.allowed and 0 < decision.retry_in_s <= 0.5
    # After open_s exactly one caller gets the half-open probe
    time.sleep(0.6)
    first, second = breaker.allow(EP), breaker.allow(EP)
    assert first.allowed and first.probe and first.state is BreakerState.HALF_OPEN
    assert not second.allowed
    # A failed probe reopens; a later successful probe closes
    assert breaker.record_failure(EP) is BreakerState.OPEN
    time.sleep(0.6)
    assert breaker.allow(EP).probe
    assert breaker.record_success(EP) is BreakerState.CLOSED
    assert breaker.allow(EP).allowed
    assert [b["state"] for b in breaker.states()] == ["closed"]


def test_another_worker_sees_the_same_breaker(client: redis.Redis, redis_url: str) -> None:
    config = BreakerConfig(failure_threshold=1, window_s=30, open_s=30)
    CircuitBreaker(client, Keys(), config).record_failure(EP)
    elsewhere = CircuitBreaker(redis.Redis.from_url(redis_url), Keys(), config)
    assert elsewhere.allow(EP).state is BreakerState.OPEN


def test_guard_counts_only_failures_that_say_the_endpoint_is_unwell(client: redis.Redis) -> None:
    breaker = CircuitBreaker(client, Keys(), BreakerConfig(failure_threshold=1, open_s=30))
    guard = LMGuard(breaker, None)
    assert guard.failed(EP, LMAuthError("bad key")) is None  # our fault, not theirs
    guard.before(EP)
    assert guard.failed(EP, LMUnavailable("503")) is BreakerState.OPEN
    with pytest.raises(CircuitOpen) as info:
        guard.before(EP)
    assert info.value.retryable and info.value.retry_after_s


def test_only_the_probes_success_closes_the_breaker(client: redis.Redis) -> None:
    ep = "openai/probe@http://127.0.0.1:9/v1"  # a breaker no other test touched
    breaker = CircuitBreaker(client, Keys(), BreakerConfig(failure_threshold=1, open_s=0.3))
    guard = LMGuard(breaker, None)
    # Given a call allowed by a closed breaker (not a probe), and the breaker opening meanwhile
    assert guard.before(ep) is False
    assert guard.failed(ep, LMUnavailable("503")) is BreakerState.OPEN
    time.sleep(0.4)
    assert guard.before(ep) is True  # a second call is the half-open probe
    # When the first call's success comes back, expect the breaker still half-open
    guard.succeeded(ep, 10, probe=False)
    assert [b["state"] for b in breaker.states() if b["endpoint"] == ep] == ["half_open"]
    # and the probe's success closes it
    guard.succeeded(ep, 10, probe=True)
    assert [b["state"] for b in breaker.states() if b["endpoint"] == ep] == ["closed"]


def test_shared_rate_limit_grants_the_quota_then_says_how_long_to_wait(
    client: redis.Redis, redis_url: str
) -> None:
    limits = RateLimits(requests_per_minute=6)
    one = RateLimiter(client, Keys(), limits)
    two = RateLimiter(redis.Redis.from_url(redis_url), Keys(), limits)
    grants = [(one if i % 2 else two).acquire(EP) for i in range(6)]
    assert grants == [0.0] * 6
    wait_s = one.acquire(EP)
    assert 5 < wait_s <= 10.5  # one request per 10 s refills
    guard = LMGuard(None, two)
    with pytest.raises(RateLimitWait):
        guard.before(EP)


def test_token_budget_in_debt_makes_callers_wait(client: redis.Redis) -> None:
    limiter = RateLimiter(client, Keys(), RateLimits(tokens_per_minute=600))
    assert limiter.acquire(EP) == 0.0
    limiter.charge_tokens(EP, 900)
    assert limiter.acquire(EP) > 20


def test_delayed_jobs_are_released_once_when_due(client: redis.Redis, redis_url: str) -> None:
    app = make_app(make_settings(redis_url))
    delayed = DelayedJobs(client, Keys())
    delayed.park("dspex.ping", {"id": "j1", "kind": "ping"}, "general", 0.2)
    delayed.park("dspex.ping", {"id": "j2", "kind": "ping"}, "general", 30)
    assert delayed.release_due(app) == 0
    time.sleep(0.3)
    other = DelayedJobs(redis.Redis.from_url(redis_url), Keys())
    assert delayed.release_due(app) + other.release_due(app) == 1
    assert queue_depth(client, "general") == 1 and len(delayed) == 1


def test_dead_letters_keep_replay_and_purge(client: redis.Redis, redis_url: str) -> None:
    app = make_app(make_settings(redis_url))
    letters = DeadLetters(client, Keys())
    letters.record(
        {"id": "dead1", "kind": "ping", "attempt": 4},
        "dspex.ping",
        "general",
        LMAuthError("bad key"),
        "Traceback ...",
        "w1",
        4,
    )
    letters.record(
        {"id": "dead2", "kind": "ping"},
        "dspex.ping",
        "general",
        LMAuthError("bad key"),
        "Traceback ...",
        "w1",
        1,
    )
    assert [d["job_id"] for d in letters.list()] == ["dead2", "dead1"]
    assert letters.get("dead1")["error"]["code"] == "lm_auth_error"  # type: ignore[index]
    assert letters.replay(app, "dead1") is True
    assert queue_depth(client, "general") == 1 and letters.get("dead1") is None
    assert letters.replay(app, "nope") is False
    assert letters.purge() == 1 and len(letters) == 0


def test_a_lease_is_exclusive_renewed_and_lapses_when_its_holder_stops(
    client: redis.Redis, redis_url: str
) -> None:
    holder = LeaseKeeper(client, Keys(), ttl_s=0.6, token="a")
    other = LeaseKeeper(redis.Redis.from_url(redis_url), Keys(), ttl_s=0.6, token="b")
    assert holder.acquire("job") == 0.0
    assert 0 < other.acquire("job") <= 0.6
    time.sleep(1.0)  # renewed every 0.2 s: still held
    assert other.acquire("job") > 0
    holder._stop.set()  # the holder's process "dies": no more renewals
    time.sleep(0.8)
    assert other.acquire("job") == 0.0
    other.release("job")
    assert not client.exists(Keys().lease("job"))
