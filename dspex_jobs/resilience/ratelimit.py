"""A token bucket per LM endpoint in Redis, shared by every worker.

Celery's own rate limits are per worker: ten workers with ``rate_limit="60/m"`` send 600
requests a minute. Here one bucket per endpoint holds ``requests_per_minute`` tokens,
refilled continuously; a worker takes one before each job's LM work. When the bucket is
empty the caller learns how long to wait, and the job is parked in the delayed set
(:mod:`dspex_jobs.resilience.delayed`) instead of spinning or sleeping in a worker slot.
Tokens-per-minute limits work the same way: after a call, its tokens are charged, and the
bucket may go negative, which makes the next callers wait.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from dspex_jobs.keys import Keys
from dspex_jobs.resilience.breaker import _key_part

__all__ = ["RateLimiter", "RateLimits"]

# KEYS[1] bucket hash; ARGV: now, capacity, refill per second, cost, force (1: take the cost
# even into debt). Returns the seconds to wait (0: taken).
_TAKE = """
local capacity = tonumber(ARGV[2])
local rate = tonumber(ARGV[3])
local now = tonumber(ARGV[1])
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens') or ARGV[2])
local at = tonumber(redis.call('HGET', KEYS[1], 'at') or ARGV[1])
tokens = math.min(capacity, tokens + (now - at) * rate)
local cost = tonumber(ARGV[4])
local wait = 0
if tokens >= cost or ARGV[5] == '1' then
  tokens = tokens - cost
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 60)
return tostring(wait)
"""


@dataclass(frozen=True)
class RateLimits:
    """Per-endpoint limits; ``None`` means unlimited."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None

    @property
    def enabled(self) -> bool:
        """Whether any limit is set."""
        return bool(self.requests_per_minute or self.tokens_per_minute)


class RateLimiter:
    """Takes request tokens before LM work and charges LM tokens after it."""

    def __init__(self, client: redis.Redis, keys: Keys, limits: RateLimits) -> None:
        self.keys = keys
        self.limits = limits
        self._take = client.register_script(_TAKE)

    def acquire(self, endpoint: str) -> float:
        """Take one request token: 0 when granted, else the seconds to wait (nothing taken).

        A token-per-minute bucket in debt also makes the caller wait.
        """
        wait_s = 0.0
        if self.limits.tokens_per_minute:
            wait_s = self._call(endpoint, "tokens", self.limits.tokens_per_minute, 0)
        if wait_s == 0.0 and self.limits.requests_per_minute:
            wait_s = self._call(endpoint, "requests", self.limits.requests_per_minute, 1)
        return wait_s

    def charge_tokens(self, endpoint: str, tokens: int) -> None:
        """Charge the LM tokens a call used against the tokens-per-minute bucket."""
        if self.limits.tokens_per_minute and tokens > 0:
            self._call(endpoint, "tokens", self.limits.tokens_per_minute, tokens, force=True)

    def _call(
        self, endpoint: str, bucket: str, per_minute: int, cost: int, force: bool = False
    ) -> float:
        key = self.keys.rate_limit(f"{_key_part(endpoint)}:{bucket}")
        wait = self._take(
            keys=[key],
            args=[time.time(), per_minute, per_minute / 60.0, cost, "1" if force else "0"],
        )
        return float(wait.decode() if isinstance(wait, bytes) else wait)
