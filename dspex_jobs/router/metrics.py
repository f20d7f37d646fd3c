"""Router metrics: in-process counters, and the telemetry events exporters listen to.

Every routing decision emits ``dspex.router.route``; every fallback emits
``dspex.router.fallback`` (names in :data:`ROUTE_EVENT`, :data:`FALLBACK_EVENT`). Exporters
(Prometheus, logs: issue #11) attach to them through :mod:`dspex_jobs.telemetry`. The same
facts are also counted here, by operation and implementation, so they can be read in process
(``router.stats()``) without any exporter.

``dspex.router.route``
    measurements: ``duration_s`` (the decision), and for calls ``total_s`` (decision and
    execution, fallbacks included);
    metadata: ``operation``, ``implementation`` (the one that answered, or the last tried),
    ``chosen`` (the first choice), ``kind``, ``queue``, ``fell_back``, ``fallback_reasons``,
    ``call`` (False for a bare decision), ``ok``, ``error_code``.

``dspex.router.fallback``
    measurements: ``duration_s`` (the failed attempt);
    metadata: ``operation``, ``implementation`` (that failed), ``next`` (tried instead),
    ``reason`` (``unsupported`` or ``retryable``), ``error_code``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Final

__all__ = ["FALLBACK_EVENT", "ROUTE_EVENT", "ImplementationStats", "RouterMetrics"]

ROUTE_EVENT: Final = "dspex.router.route"
"""Emitted for every routing decision (a bare ``route()`` or a ``call()``)."""

FALLBACK_EVENT: Final = "dspex.router.fallback"
"""Emitted each time a failed implementation is followed by the next one."""

_ROUTED, _SUCCEEDED, _FAILED, _FELL_BACK = range(4)


@dataclass(frozen=True, slots=True)
class ImplementationStats:
    """Counters of one implementation of one operation.

    Attributes:
        routed: Times it was the first choice.
        succeeded: Calls it answered (first choice or fallback).
        failed: Calls that ended with its error (no fallback left or allowed).
        fell_back: Times it failed and the next implementation was tried.
    """

    routed: int = 0
    succeeded: int = 0
    failed: int = 0
    fell_back: int = 0


class RouterMetrics:
    """Thread-safe counters by (operation, implementation), plus fallback reasons."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], list[int]] = {}
        self._reasons: dict[tuple[str, str, str], int] = {}

    def _count(self, operation: str, implementation: str, counter: int) -> None:
        with self._lock:
            self._counts_for(operation, implementation)[counter] += 1

    def _counts_for(self, operation: str, implementation: str) -> list[int]:
        """The counters of one implementation; the caller holds the lock."""
        key = (operation, implementation)
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = [0, 0, 0, 0]
        return counts

    def routed(self, operation: str, implementation: str) -> None:
        """``implementation`` was chosen for ``operation`` (a bare decision)."""
        self._count(operation, implementation, _ROUTED)

    def called(self, operation: str, chosen: str, finished: str, *, ok: bool) -> None:
        """A call chose ``chosen`` and ended with ``finished`` succeeding (``ok``) or failing."""
        with self._lock:  # one lock for both counters: this is the hot path of every call
            self._counts_for(operation, chosen)[_ROUTED] += 1
            self._counts_for(operation, finished)[_SUCCEEDED if ok else _FAILED] += 1

    def fell_back(self, operation: str, implementation: str, reason: str) -> None:
        """``implementation`` failed for ``reason`` and the next one was tried."""
        self._count(operation, implementation, _FELL_BACK)
        key = (operation, implementation, reason)
        with self._lock:
            self._reasons[key] = self._reasons.get(key, 0) + 1

    def stats(self) -> dict[str, dict[str, ImplementationStats]]:
        """A snapshot: ``stats()[operation][implementation].routed`` and so on."""
        with self._lock:
            snapshot = {key: list(counts) for key, counts in self._counts.items()}
        result: dict[str, dict[str, ImplementationStats]] = {}
        for (operation, implementation), counts in sorted(snapshot.items()):
            result.setdefault(operation, {})[implementation] = ImplementationStats(*counts)
        return result

    def fallback_reasons(self) -> dict[tuple[str, str, str], int]:
        """How often each (operation, implementation, reason) fell back."""
        with self._lock:
            return dict(self._reasons)

    def reset(self) -> None:
        """Zero every counter."""
        with self._lock:
            self._counts.clear()
            self._reasons.clear()
