"""DSPy's response cache, backed by Redis and shared by every worker.

DSPy looks every cacheable LM call up in ``dspy.cache`` (an instance of
``dspy.clients.cache.Cache``) before calling the provider and stores the answer there after.
:class:`SharedLMCache` is such a ``Cache``: it keeps nothing in the process and stores entries
in :class:`~dspex_jobs.lmcache.LMCacheStore`, so the interface DSPy already calls is the only
seam (no wrapping of modules or LMs). Which calls are cached is still DSPy's decision: an LM
built with ``cache=False`` (``DSPEX_LM_CACHE=false``, or a job's ``lm={"cache": False}``)
never reaches this class.

Keys. DSPy's own keys drop ``api_base``, ``base_url`` and ``api_key``, so two servers behind
one model name (a staging and a production vLLM, two fine-tunes served as ``openai/model``)
would answer each other's prompts. Ours hash the whole request (model, messages and every
parameter that changes the answer: temperature, max_tokens, n, rollout_id, response_format,
tools, ...) together with the endpoint and a SHA-256 of the API key; the key itself never
reaches Redis, the logs or the key material. Calls whose request does not name its endpoint
(DSPy's explicit ``lm15.Request`` calls) bypass the shared cache rather than risk sharing.

Values are what DSPy stores on its native path: plain data (``CallResult.dump()``), encoded
as JSON (zlib above 1 KiB). Anything else (a provider SDK object) is not cached: nothing is
ever pickled into, or unpickled from, Redis.

Redis trouble never fails a job: a lookup that cannot reach Redis is a miss and the LM is
called; a write that cannot is dropped.

A miss is also the moment DSPy is about to call the LM, and the one place a worker learns it:
:meth:`SharedLMCache.get` then runs the job's endpoint check (its breaker and rate limit,
:class:`~dspex_jobs.resilience.guard.LMGate`, carried in ``dspy.context``). A hit is served
without it: no Redis round trip for the breaker, an answer while the endpoint's breaker is
open, no request token taken. (An LM built with ``cache=False`` never reaches this class;
the runtime checks before such a job's calls.)
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import zlib
from typing import Any

import dspy
import orjson
import redis
from dspy.clients.cache import Cache

from dspex_jobs.lmcache import LMCacheStore
from dspex_jobs.resilience.guard import GATE_SETTING
from dspex_jobs.telemetry.events import emit, has_handlers

__all__ = ["KEY_FORMAT", "SharedLMCache", "endpoint_of", "install_shared_cache"]

KEY_FORMAT = 1
"""Part of every key; bump it when the key material changes so old entries are not read."""

_ENDPOINT_FIELDS = frozenset({"api_base", "base_url", "api_key"})
_COMPRESS_ABOVE_BYTES = 1024
_RAW, _ZLIB = b"j", b"z"
_WARN_EVERY_S = 60.0
_CACHE_HIT = "dspex.cache.hit"
_CACHE_MISS = "dspex.cache.miss"

logger = logging.getLogger("dspex_jobs.runtime.cache")


def endpoint_of(request: dict[str, Any]) -> dict[str, str] | None:
    """Where a request goes and whose key it uses: ``{"base": ..., "key_sha256": ...}``.

    ``None`` when the request cannot say (an explicit ``lm15.Request``, whose endpoint lives
    in the LM, not in the request). A request without ``api_base`` goes to its provider's
    default endpoint, which the model string (``openai/...``) already names.
    """
    if "request" in request and str(request.get("_fn_identifier", "")).startswith(
        "dspy.clients.lm15"
    ):
        return None
    base = request.get("api_base") or request.get("base_url") or "provider-default"
    api_key = request.get("api_key")
    key_hash = hashlib.sha256(str(api_key).encode()).hexdigest() if api_key else ""
    return {"base": str(base).rstrip("/"), "key_sha256": key_hash}


class SharedLMCache(Cache):  # type: ignore[misc]  # dspy ships no type information
    """``dspy.cache`` for a worker process: every entry lives in Redis.

    Args:
        store: The shared store (Redis client, TTL, size bound).
        max_entry_bytes: Encoded responses longer than this are not cached.
    """

    def __init__(self, store: LMCacheStore, max_entry_bytes: int) -> None:
        super().__init__(enable_disk_cache=False, enable_memory_cache=False, disk_cache_dir=None)
        self.store = store
        self.max_entry_bytes = max_entry_bytes
        self._counts = {
            "hits": 0,
            "misses": 0,
            "writes": 0,
            "evictions": 0,
            "bypassed": 0,
            "uncacheable": 0,
            "errors": 0,
        }
        self._count_lock = threading.Lock()
        self._warned_at = 0.0

    # -- DSPy's Cache interface -------------------------------------------------------------

    def cache_key(
        self, request: dict[str, Any], ignored_args_for_cache_key: list[str] | None = None
    ) -> str:
        """SHA-256 of the request with its endpoint folded in (see the module docstring)."""
        endpoint = endpoint_of(request)
        if endpoint is None:
            raise ValueError("the request does not name its endpoint")
        ignored = _ENDPOINT_FIELDS.union(ignored_args_for_cache_key or ())
        material = {k: v for k, v in request.items() if k not in ignored}
        material["_dspex_endpoint"] = endpoint
        material["_dspex_key_format"] = KEY_FORMAT
        return str(super().cache_key(material))

    def __contains__(self, key: str) -> bool:
        try:
            return bool(self.store.client.exists(self.store.keys.lm_cache_entry(key)))
        except redis.RedisError:
            return False

    def get(
        self, request: dict[str, Any], ignored_args_for_cache_key: list[str] | None = None
    ) -> Any:
        """The cached response for ``request``, or ``None`` (then DSPy calls the LM).

        Before answering ``None``, the job's endpoint check runs (its breaker and rate
        limit, :class:`~dspex_jobs.resilience.guard.LMGate`): it raises if the LM call DSPy
        is about to make must not go now.
        """
        value = self._lookup(request, ignored_args_for_cache_key)
        if value is None:
            gate = dspy.settings.get(GATE_SETTING)
            if gate is not None:
                gate.check()
        return value

    def _lookup(self, request: dict[str, Any], ignored_args_for_cache_key: list[str] | None) -> Any:
        digest = self._digest(request, ignored_args_for_cache_key)
        if digest is None:
            return None
        try:
            blob = self.store.get(digest)
        except redis.RedisError as exc:
            self._failed("read", exc)
            return None
        hit = blob is not None
        self._count("hits" if hit else "misses")
        name = _CACHE_HIT if hit else _CACHE_MISS
        if has_handlers(name):
            emit(name, {}, {"cache": "lm"})
        if blob is None:
            return None
        try:
            return _decode(blob, self.max_entry_bytes)
        except (ValueError, zlib.error) as exc:
            self._failed("decode", exc)
            return None

    def put(
        self,
        request: dict[str, Any],
        value: Any,
        ignored_args_for_cache_key: list[str] | None = None,
        enable_memory_cache: bool = True,
    ) -> None:
        """Store a response, if it is plain data and not too large."""
        digest = self._digest(request, ignored_args_for_cache_key)
        if digest is None:
            return
        blob = _encode(value, self.max_entry_bytes) if isinstance(value, dict) else None
        if blob is None:
            self._count("uncacheable")
            return
        try:
            evicted = self.store.put(digest, blob)
        except redis.RedisError as exc:
            self._failed("write", exc)
            return
        self._count("writes")
        if evicted:
            self._count("evictions", evicted)

    def reset_memory_cache(self) -> None:
        """Nothing is kept in memory; clear the shared entries with ``LMCacheStore.clear``."""

    def save_memory_cache(self, filepath: str) -> None:
        """Not supported: entries live in Redis (and are never pickled)."""
        raise NotImplementedError("the shared LM cache lives in Redis; it has no memory tier")

    def load_memory_cache(self, filepath: str, allow_pickle: bool = False) -> None:
        """Not supported: entries live in Redis (and are never unpickled)."""
        raise NotImplementedError("the shared LM cache lives in Redis; it has no memory tier")

    # -- ours --------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """This process's counters (the shared ones: ``LMCacheStore.stats``)."""
        with self._count_lock:
            return dict(self._counts)

    def _digest(self, request: dict[str, Any], ignored: list[str] | None) -> str | None:
        if endpoint_of(request) is None:
            self._count("bypassed")
            return None
        try:
            return self.cache_key(request, ignored)
        except Exception as exc:  # a value DSPy's key function cannot encode: just no caching
            logger.debug("no cache key for this request: %s", exc)
            self._count("uncacheable")
            return None

    def _count(self, name: str, n: int = 1) -> None:
        with self._count_lock:
            self._counts[name] += n

    def _failed(self, what: str, exc: Exception) -> None:
        self._count("errors")
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_S:  # once a minute, not once per job
            self._warned_at = now
            logger.warning("shared LM cache %s failed (%s); calling the LM instead", what, exc)


def _encode(value: dict[str, Any], max_bytes: int) -> bytes | None:
    """JSON (zlib above 1 KiB); ``None`` for values that are not plain data or too large."""
    try:
        data = orjson.dumps(value)
    except TypeError:
        return None
    if len(data) > max_bytes:
        return None
    if len(data) > _COMPRESS_ABOVE_BYTES:
        return _ZLIB + zlib.compress(data, 1)
    return _RAW + data


def _decode(blob: bytes, max_bytes: int) -> Any:
    tag, body = blob[:1], blob[1:]
    if tag == _ZLIB:
        inflater = zlib.decompressobj()
        body = inflater.decompress(body, max_bytes + 1)
        if len(body) > max_bytes or inflater.unconsumed_tail:
            raise ValueError("cached entry inflates past the size limit")
    elif tag != _RAW:
        raise ValueError(f"unknown cache entry format {tag!r}")
    return orjson.loads(body)


def install_shared_cache(dspy: Any, store: LMCacheStore, max_entry_bytes: int) -> SharedLMCache:
    """Make a :class:`SharedLMCache` this process's ``dspy.cache`` (under DSPy's own lock,
    as ``dspy.configure_cache`` does, so a concurrent first read cannot overwrite it)."""
    cache = SharedLMCache(store, max_entry_bytes)
    lock = getattr(dspy, "_cache_lock", None)
    if lock is None:
        dspy.cache = cache
    else:
        with lock:
            dspy.cache = cache
    return cache
