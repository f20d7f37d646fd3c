"""A circuit breaker per LM endpoint, its state in Redis so every worker shares it.

closed --(N failures within window_s)--> open --(open_s passes)--> half-open
half-open --(the one probe succeeds)--> closed;  half-open --(probe fails)--> open

Transitions are one Lua script each, so two workers failing at the same instant cannot both
decide, and exactly one worker gets the half-open probe. A small script is used rather than
a library (pybreaker's Redis storage reads and writes state in separate round trips, which
races between workers); the logic is short enough to read in full below. A script that moves
the breaker replies ``new|previous``, and the worker whose call moved it emits
``dspex.breaker.state`` (:mod:`dspex_jobs.telemetry.catalogue`).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis

from dspex_jobs.keys import Keys
from dspex_jobs.telemetry.lm import breaker_changed

__all__ = ["BreakerConfig", "BreakerState", "CircuitBreaker", "Decision", "endpoint_id"]


class BreakerState(StrEnum):
    """Where a breaker is."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerConfig:
    """When a breaker opens and for how long."""

    failure_threshold: int = 5
    window_s: float = 30.0
    open_s: float = 15.0


@dataclass(frozen=True)
class Decision:
    """Whether a call may go ahead, and the breaker's state when asked."""

    allowed: bool
    state: BreakerState
    retry_in_s: float = 0.0
    probe: bool = False


def endpoint_id(model: str, api_base: str | None) -> str:
    """A stable id for an LM endpoint: the model *and* where it is served from."""
    return f"{model}@{api_base or 'default'}"


def _key_part(endpoint: str) -> str:
    return hashlib.sha1(endpoint.encode(), usedforsecurity=False).hexdigest()[:16]  # a key name


# KEYS[1] breaker hash; ARGV: now, open_s, the endpoint's readable name (kept for listing)
_ALLOW = """
redis.call('HSETNX', KEYS[1], 'endpoint', ARGV[3])
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local now = tonumber(ARGV[1])
if state == 'closed' then return {'closed', '1', '0'} end
local opened = tonumber(redis.call('HGET', KEYS[1], 'opened_at') or '0')
local open_s = tonumber(ARGV[2])
if state == 'open' and now >= opened + open_s then
  redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe_at', ARGV[1])
  return {'half_open', '1', '0', 'open'}
end
if state == 'half_open' then
  -- a probe that never reported back (its worker died) is replaced after open_s
  local probe_at = tonumber(redis.call('HGET', KEYS[1], 'probe_at') or '0')
  if now >= probe_at + open_s then
    redis.call('HSET', KEYS[1], 'probe_at', ARGV[1])
    return {'half_open', '1', '0'}
  end
  return {'half_open', '0', tostring(probe_at + open_s - now)}
end
return {'open', '0', tostring(opened + open_s - now)}
"""

# KEYS[1] breaker hash; ARGV: now, threshold, window_s
_FAILURE = """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local now = tonumber(ARGV[1])
if state == 'half_open' then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', ARGV[1], 'failures', 0)
  return 'open|half_open'
end
if state == 'open' then return 'open' end
local start = tonumber(redis.call('HGET', KEYS[1], 'window_start') or '0')
local failures = 1
if now - start > tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], 'window_start', ARGV[1], 'failures', 1)
else
  failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
end
if failures >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', ARGV[1], 'failures', 0)
  return 'open|closed'
end
return 'closed'
"""

# KEYS[1] breaker hash
_SUCCESS = """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'half_open' then
  redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', 0, 'window_start', 0)
  return 'closed|half_open'
end
return state
"""


class CircuitBreaker:
    """The breakers of every LM endpoint, in one Redis."""

    def __init__(self, client: redis.Redis, keys: Keys, config: BreakerConfig) -> None:
        self.client = client
        self.keys = keys
        self.config = config
        self._allow = client.register_script(_ALLOW)
        self._failure = client.register_script(_FAILURE)
        self._success = client.register_script(_SUCCESS)

    def key(self, endpoint: str) -> str:
        """The Redis hash of one endpoint's breaker."""
        return self.keys.breaker(_key_part(endpoint))

    def allow(self, endpoint: str) -> Decision:
        """Whether a call to ``endpoint`` may go ahead now (one round trip: every LM call
        asks)."""
        state, allowed, retry_in, *changed = self._allow(
            keys=[self.key(endpoint)], args=[time.time(), self.config.open_s, endpoint]
        )
        state = BreakerState(_text(state))
        if changed:
            breaker_changed(endpoint, state.value, _text(changed[0]))
        ok = _text(allowed) == "1"
        return Decision(
            ok, state, float(_text(retry_in)), probe=ok and state is not BreakerState.CLOSED
        )

    def record_failure(self, endpoint: str) -> BreakerState:
        """Count a failure that says the endpoint is unwell (not a bad request)."""
        state = self._failure(
            keys=[self.key(endpoint)],
            args=[time.time(), self.config.failure_threshold, self.config.window_s],
        )
        return _transition(endpoint, state)

    def record_success(self, endpoint: str) -> BreakerState:
        """A probe succeeded: the half-open breaker closes.

        Only a probe's success is news (:meth:`LMGuard.succeeded
        <dspex_jobs.resilience.guard.LMGuard.succeeded>` calls this for probes alone): a
        call allowed by a closed breaker changes nothing, and saves a round trip.
        """
        return _transition(endpoint, self._success(keys=[self.key(endpoint)]))

    def states(self) -> list[dict[str, Any]]:
        """Every breaker, for ``dspex-jobs breakers``."""
        found = []
        for key in self.client.scan_iter(match=self.keys.breaker("*"), count=500):
            raw = {_text(k): _text(v) for k, v in self.client.hgetall(key).items()}
            found.append(
                {
                    "endpoint": raw.get("endpoint", "?"),
                    "state": raw.get("state", "closed"),
                    "failures": int(raw.get("failures", 0) or 0),
                    "opened_at": float(raw.get("opened_at", 0) or 0),
                }
            )
        return sorted(found, key=lambda b: b["endpoint"])

    def reset(self, endpoint: str) -> None:
        """Close a breaker by hand."""
        self.client.delete(self.key(endpoint))


def _transition(endpoint: str, reply: Any) -> BreakerState:
    """A script's reply, ``new`` or ``new|previous`` when it moved the breaker (an event)."""
    state, _, previous = _text(reply).partition("|")
    if previous:
        breaker_changed(endpoint, state, previous)
    return BreakerState(state)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
