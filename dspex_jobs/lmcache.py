"""The shared LM response cache: its Redis storage, bounds and counters.

DSPy's own response cache lives in each process (memory, then disk), so a prompt answered
by one worker is a miss on every other. Workers plug :class:`~dspex_jobs.runtime.cache.
SharedLMCache` into DSPy's cache interface (``dspy.cache``); it keys the request and stores
the response here, in Redis, where every worker finds it.

Layout (prefix ``dspex``):

- ``dspex:lmcache:<sha256>``: one response (JSON, zlib-compressed when large) with a TTL
  (``DSPEX_LM_CACHE_TTL_S``). The TTL is not refreshed by hits: an answer is only as fresh
  as when the LM gave it.
- ``dspex:lmcache:index``: a sorted set of entry keys scored by their last use. Each write
  trims it to ``DSPEX_LM_CACHE_MAX_ENTRIES``, deleting the least recently used entries, so
  the cache has a size bound of its own (it does not rely on Redis ``maxmemory``, which would
  evict results and queues just as readily).
- ``dspex:lmcache:stats``: a hash of counters (``hits``, ``misses``, ``writes``,
  ``evictions``) shared by all workers.

Reads and writes are one Lua script each, so a lookup costs one round trip. This module is
light (no DSPy): producers and the CLI read the counters and clear the cache with it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, cast

import redis

from dspex_jobs.keys import Keys

__all__ = ["LMCacheStats", "LMCacheStore"]

_GET = """
local value = redis.call('GET', KEYS[1])
if value then
  redis.call('ZADD', KEYS[2], ARGV[1], KEYS[1])
  redis.call('HINCRBY', KEYS[3], 'hits', 1)
else
  redis.call('HINCRBY', KEYS[3], 'misses', 1)
end
return value
"""

_PUT = """
local ttl_ms = tonumber(ARGV[2])
local now_ms = tonumber(ARGV[3])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl_ms)
redis.call('ZADD', KEYS[2], now_ms, KEYS[1])
redis.call('PEXPIRE', KEYS[2], ttl_ms)
redis.call('HINCRBY', KEYS[3], 'writes', 1)
-- entries unused for a whole TTL have expired by themselves: forget them
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms - ttl_ms)
local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if extra > 0 then
  local oldest = redis.call('ZPOPMIN', KEYS[2], extra)
  for i = 1, #oldest, 2 do redis.call('UNLINK', oldest[i]) end
  redis.call('HINCRBY', KEYS[3], 'evictions', extra)
  return extra
end
return 0
"""


@dataclass(frozen=True)
class LMCacheStats:
    """The shared counters and the current size of the cache."""

    hits: int
    misses: int
    writes: int
    evictions: int
    entries: int

    @property
    def hit_rate(self) -> float:
        """Hits over lookups (0.0 before the first lookup)."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0

    def as_dict(self) -> dict[str, float]:
        """JSON-able, for the CLI and health output."""
        return {
            "hits": self.hits,
            "misses": self.misses,
            "writes": self.writes,
            "evictions": self.evictions,
            "entries": self.entries,
            "hit_rate": round(self.hit_rate, 4),
        }


class LMCacheStore:
    """Bounded, expiring storage of LM responses in Redis, shared by every worker.

    Args:
        client: The Redis client (a worker's per-process client).
        keys: Key builders for the deployment's prefix.
        ttl_s: How long an entry lives after it is written.
        max_entries: Most entries kept; the least recently used go first.
    """

    def __init__(self, client: redis.Redis, keys: Keys, ttl_s: int, max_entries: int) -> None:
        self.client = client
        self.keys = keys
        self.ttl_ms = int(ttl_s * 1000)
        self.max_entries = max_entries
        self._get = client.register_script(_GET)
        self._put = client.register_script(_PUT)

    def get(self, digest: str) -> bytes | None:
        """The stored response for a key digest, counting a hit or a miss."""
        value = self._get(
            keys=[
                self.keys.lm_cache_entry(digest),
                self.keys.lm_cache_index(),
                self.keys.lm_cache_stats(),
            ],
            args=[_now_ms()],
        )
        return cast("bytes | None", value)

    def put(self, digest: str, value: bytes) -> int:
        """Store a response; returns how many old entries were evicted to stay in bounds."""
        evicted = self._put(
            keys=[
                self.keys.lm_cache_entry(digest),
                self.keys.lm_cache_index(),
                self.keys.lm_cache_stats(),
            ],
            args=[value, self.ttl_ms, _now_ms(), self.max_entries],
        )
        return int(cast(Any, evicted))

    def stats(self) -> LMCacheStats:
        """The shared counters and how many entries the index holds."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.keys.lm_cache_stats())
        pipe.zcard(self.keys.lm_cache_index())
        counters, entries = pipe.execute()
        values = {
            k.decode() if isinstance(k, bytes) else str(k): int(v) for k, v in counters.items()
        }
        return LMCacheStats(
            values.get("hits", 0),
            values.get("misses", 0),
            values.get("writes", 0),
            values.get("evictions", 0),
            int(entries),
        )

    def clear(self) -> int:
        """Delete every entry, the index and the counters; returns how many entries went."""
        removed = 0
        batch: list[bytes] = []
        for key in self.client.scan_iter(match=self.keys.lm_cache_entry("*"), count=500):
            batch.append(key)
            if len(batch) >= 500:
                removed += int(self.client.unlink(*batch))
                batch.clear()
        if batch:
            removed += int(self.client.unlink(*batch))
        self.client.unlink(self.keys.lm_cache_index(), self.keys.lm_cache_stats())
        return removed


def _now_ms() -> int:
    return int(time.time() * 1000)
