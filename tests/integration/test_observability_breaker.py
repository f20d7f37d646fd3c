"""Circuit breaker transitions emit ``dspex.breaker.state`` (real Redis, DB 30)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from conftest import redis_db_url

from dspex_jobs import telemetry
from dspex_jobs.embedded import EmbeddedRedis
from dspex_jobs.keys import Keys
from dspex_jobs.resilience.breaker import BreakerConfig, BreakerState, CircuitBreaker
from dspex_jobs.telemetry.catalogue import BREAKER_STATE

pytestmark = pytest.mark.integration


def test_each_transition_is_one_event(redis_server: EmbeddedRedis) -> None:
    client = redis.Redis.from_url(redis_db_url(redis_server, 30))
    client.flushdb()
    breaker = CircuitBreaker(client, Keys("obs"), BreakerConfig(2, 30.0, 0.1))
    seen: list[dict[str, Any]] = []
    telemetry.attach("test-breaker", BREAKER_STATE, lambda n, m, d: seen.append(dict(d)))
    try:
        # Given two failures (the threshold), a wait past open_s, a probe that succeeds
        breaker.record_failure("m@x")
        breaker.record_failure("m@x")
        breaker.record_failure("m@x")  # already open: no event
        assert not breaker.allow("m@x").allowed
        time.sleep(0.15)
        assert breaker.allow("m@x").probe
        assert breaker.record_success("m@x") is BreakerState.CLOSED
        breaker.record_success("m@x")  # already closed: no event
    finally:
        telemetry.detach("test-breaker")
        client.flushdb()
        client.close()
    # Expect exactly the three transitions, in order
    assert [(e["previous"], e["state"]) for e in seen] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
    assert {e["endpoint"] for e in seen} == {"m@x"}
