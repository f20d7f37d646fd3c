"""kombu's Redis transport, minus a new redis-py client per broker command.

kombu's Redis channel runs every command outside its consumer connection through
``conn_or_acquire()``, which builds a fresh ``redis.Redis`` each time: every task a producer
sends, every unacked-message record and acknowledgement of ``acks_late``, every flush of
worker events. A ``redis.Redis`` is cheap to *use* but not to *build* (redis-py 6 and later
fill a case-insensitive table of several hundred response callbacks per instance): about
0.15-0.2 ms of CPU, three to four times per job on a worker and once per submit on a
producer, on the path of every job (``bench/job_cpu.py``, docs/neural.md "Benchmark").

:func:`install` makes every kombu Redis channel (Sentinel ones too) keep one client instead,
built on first use with kombu's own ``_create_client`` (same pool, same options, same key
prefix) and rebuilt if the channel's pool is replaced. Sharing is safe: a ``redis.Redis``
takes a pooled connection per command and pipelines are created per use, which is what
kombu's threads already rely on when they share the channel's pool. Nothing else changes:
same connection pool, commands and semantics.

It patches the method rather than naming a transport subclass in ``broker_transport``: kombu
keys its process-wide connection pools, and Flower its broker page, by the transport's
*name*, and one class for ``redis://`` and ``rediss://`` would let a plain-text client share
a TLS client's pool.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis

__all__ = ["install"]

_lock = threading.Lock()
_installed = False


@contextmanager
def _conn_or_acquire(self: Any, client: Any = None) -> Iterator[Any]:
    if client:
        yield client
        return
    pool = self.pool
    shared = getattr(self, "_dspex_client", None)
    if shared is None or shared.connection_pool is not pool:
        shared = self._dspex_client = self._create_client()
    yield shared


def install() -> None:
    """Make kombu's Redis channels share one client each (idempotent; see the module doc).

    Example:
        >>> install()
        >>> kombu_redis.Channel.conn_or_acquire is _conn_or_acquire
        True
    """
    global _installed
    with _lock:
        if not _installed:
            kombu_redis.Channel.conn_or_acquire = _conn_or_acquire  # type: ignore[method-assign]
            _installed = True
