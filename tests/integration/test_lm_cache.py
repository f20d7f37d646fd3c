"""The shared LM response cache: keys, bounds, and real workers sharing entries through Redis.

Databases 36 (the store on its own) and 37 (workers). The cross-worker test starts real
worker processes one after another, so a hit on the second can only come from Redis, and
counts what reached the LM servers (their ``/v1/stats``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import redis
from conftest import LM_API_KEY, LM_MODEL, lm_requests, redis_db_url

from dspex_jobs.client import Client
from dspex_jobs.embedded import EmbeddedRedis
from dspex_jobs.keys import Keys
from dspex_jobs.lmcache import LMCacheStore
from dspex_jobs.stack import LocalStack

pytestmark = pytest.mark.integration

SIGNATURE = "question -> answer"
QUESTION = "Which city is the capital of France? Paris is the capital of France."


@pytest.fixture
def store(redis_server: EmbeddedRedis) -> Iterator[LMCacheStore]:
    client = redis.Redis.from_url(redis_db_url(redis_server, 36))
    client.flushdb()
    yield LMCacheStore(client, Keys("dspex"), ttl_s=60, max_entries=3)
    client.flushdb()
    client.close()


def _request(**changes: object) -> dict[str, object]:
    request: dict[str, object] = {
        "model": LM_MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": None,
        "max_tokens": None,
        "api_base": "http://a:1/v1",
        "api_key": "secret-key-1",
        "_fn_identifier": "dspy.clients.lm.litellm_completion",
    }
    request.update(changes)
    return request


def test_keys_separate_endpoints_api_keys_and_parameters(store: LMCacheStore) -> None:
    from dspex_jobs.runtime.cache import SharedLMCache

    cache = SharedLMCache(store, max_entry_bytes=10_000)
    ignored = ["api_key", "api_base", "base_url"]  # what DSPy passes: we still use them
    key = cache.cache_key(_request(), ignored)
    # Expect: the same request, the same key; every answer-changing difference, another key
    assert cache.cache_key(_request(), ignored) == key
    assert cache.cache_key(_request(api_base="http://a:1/v1/"), ignored) == key
    for change in (
        {"api_base": "http://b:1/v1"},
        {"api_key": "secret-key-2"},
        {"temperature": 0.7},
        {"max_tokens": 5},
        {"model": "openai/other"},
        {"rollout_id": 1},
        {"messages": [{"role": "user", "content": "hi!"}]},
    ):
        assert cache.cache_key(_request(**change), ignored) != key, change
    # An explicit lm15 Request does not name its endpoint: it bypasses the shared cache
    native = {"_fn_identifier": "dspy.clients.lm15.complete", "request": {"model": "m"}}
    assert cache.get(native) is None
    cache.put(native, {"x": 1})
    assert cache.counts()["bypassed"] == 2


def test_entries_round_trip_without_the_api_key(store: LMCacheStore) -> None:
    from dspex_jobs.runtime.cache import SharedLMCache

    cache = SharedLMCache(store, max_entry_bytes=100_000)
    value = {"_dspy_format": "dspy-lm15-result-v1", "outputs": ["x" * 5000], "usage": {}}
    # Given a miss, then a put
    assert cache.get(_request()) is None
    cache.put(_request(), value)
    # Expect: a hit returns the same plain data, and the counters agree
    assert cache.get(_request()) == value
    stats = store.stats()
    assert (stats.hits, stats.misses, stats.writes, stats.entries) == (1, 1, 1, 1)
    # Expect: nothing in Redis holds the API key, and the entry has the TTL
    for key in store.client.scan_iter("*"):
        kind = store.client.type(key)
        blob = store.client.get(key) if kind == b"string" else b""
        assert b"secret-key-1" not in key + (blob or b"")
    entry = next(store.client.scan_iter(Keys("dspex").lm_cache_entry("*")))
    assert 0 < store.client.pttl(entry) <= 60_000
    # Expect: values that are not plain data, or are too large, are not stored
    cache.put(_request(temperature=1.0), {"obj": object()})
    cache.put(_request(temperature=0.5), {"big": "y" * 200_000})
    assert store.stats().writes == 1 and cache.counts()["uncacheable"] == 2


def test_least_recently_used_entries_go_beyond_the_bound(store: LMCacheStore) -> None:
    # Given a cache of at most 3 entries holding a, b, c, with a used since
    for name in ("a", "b", "c"):
        assert store.put(name, b"j{}") == 0  # within the bound: nothing evicted
        time.sleep(0.002)
    assert store.get("a") == b"j{}"
    time.sleep(0.002)
    # When a fourth entry arrives
    assert store.put("d", b"j{}") == 1
    # Expect: b (the least recently used) is gone, the rest stay
    assert store.get("b") is None
    assert all(store.get(n) == b"j{}" for n in ("a", "c", "d"))
    assert store.stats().entries == 3 and store.stats().evictions == 1
    assert store.clear() == 3 and store.stats().entries == 0


def test_redis_down_is_a_miss_not_a_failure() -> None:
    from dspex_jobs.runtime.cache import SharedLMCache

    dead = redis.Redis(port=1, socket_connect_timeout=0.2)
    cache = SharedLMCache(LMCacheStore(dead, Keys("dspex"), 60, 10), max_entry_bytes=1000)
    assert cache.get(_request()) is None
    cache.put(_request(), {"a": 1})
    assert cache.counts()["errors"] == 2


# -- real workers -------------------------------------------------------------------------


def _worker(url: str, lm_url: str) -> LocalStack:
    return LocalStack(
        redis_url=url,
        lm=LM_MODEL,
        lm_api_base=lm_url,
        queues=["general"],
        worker_args={"general": ["--concurrency", "1"]},
        env={"DSPEX_LM_API_KEY": LM_API_KEY, "DSPEX_LM_CACHE": "true"},
    )


def _answer(stack: LocalStack, **lm: object) -> tuple[str, dict[str, object]]:
    assert stack.settings is not None
    with Client(stack.settings) as client:
        result = client.predict(SIGNATURE, question=QUESTION, lm=lm or None).result(timeout=60)
    assert result.outputs is not None, result.error
    return str(result.outputs["answer"]), dict(result.usage)


def test_workers_share_answers_per_endpoint(redis_server: EmbeddedRedis, lm_server: object) -> None:
    from dspex_jobs.lmserver import LMServerConfig, LMServerProcess

    url = redis_db_url(redis_server, 37)
    redis.Redis.from_url(url).flushdb()
    server_a = str(lm_server.url)  # type: ignore[attr-defined]
    with LMServerProcess(LMServerConfig(port=0, api_key=LM_API_KEY)) as other:
        server_b = other.url
        before_a = lm_requests(server_a)
        # Given a first worker process that answers the question (one LM call)
        with _worker(url, server_a) as first:
            answer, usage = _answer(first)
            assert usage and lm_requests(server_a) == before_a + 1
        # When a second worker process, on the same endpoint, gets the same question
        with _worker(url, server_a) as second:
            again, usage_again = _answer(second)
            # Expect: the same answer, no LM call and no tokens spent
            assert (again, usage_again) == (answer, {})
            assert lm_requests(server_a) == before_a + 1
            # Expect: a job that says cache=False calls the LM anyway
            _answer(second, cache=False)
            assert lm_requests(server_a) == before_a + 2
            # Expect: a ping reports the worker process's bounded caches
            assert second.settings is not None
            with Client(second.settings) as client:
                caches = client.ping().result(timeout=30).outputs["caches"]  # type: ignore[index]
            assert caches["runtime.modules"]["size"] == 1
            assert caches["runtime.lms"] == {"size": 2, "max": 32}  # cache on, cache off
        # When a worker on another endpoint serving the same model name gets the question
        with _worker(url, server_b) as third:
            _, usage_b = _answer(third)
            # Expect: that endpoint answers it (no shared entry), and caches it for itself
            assert usage_b and lm_requests(server_b) == 1
            _answer(third)
            assert lm_requests(server_b) == 1
    stats = LMCacheStore(redis.Redis.from_url(url), Keys("dspex"), 60, 10).stats()
    assert (stats.hits, stats.misses, stats.entries) == (2, 2, 2)


def test_cli_shows_stats_and_clears(store: LMCacheStore, redis_server: EmbeddedRedis) -> None:
    from click.testing import CliRunner

    from dspex_jobs.cli import main

    store.put("abc", b"j{}")
    assert store.get("abc") == b"j{}"
    env = {"DSPEX_REDIS_URL": redis_db_url(redis_server, 36)}
    runner = CliRunner()
    shown = runner.invoke(main, ["lm-cache", "stats"], env=env)
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output) == {
        "hits": 1,
        "misses": 0,
        "writes": 1,
        "evictions": 0,
        "entries": 1,
        "hit_rate": 1.0,
    }
    cleared = runner.invoke(main, ["lm-cache", "clear", "--yes"], env=env)
    assert cleared.exit_code == 0 and "removed 1" in cleared.output
    assert store.stats().entries == 0
