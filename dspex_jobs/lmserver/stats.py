"""Counters and a bounded log of received requests, for ``/v1/stats`` and ``/v1/requests``.

Tests and load runs read these to check what actually reached the LM: how many calls,
which statuses went back, which faults were injected, how many were in flight at once,
and the exact message lists of the last few requests.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["ServerStats"]

_LOGGED_APART = {"messages", "model", "stream", "response_format"}


class ServerStats:
    """Thread-safe request counters and a ring buffer of recent chat requests.

    Args:
        log_size: How many recent requests :meth:`recent` can return.
    """

    def __init__(self, log_size: int = 100) -> None:
        self._lock = threading.Lock()
        self._log: deque[dict[str, Any]] = deque(maxlen=log_size)
        self._sequence = 0
        self.reset()

    def reset(self) -> None:
        """Zero every counter and forget the logged requests (in-flight count is kept)."""
        with self._lock:
            self._since = time.time()
            self._total = 0
            self._chat = 0
            self._streamed = 0
            self._by_status: Counter[int] = Counter()
            self._faults: Counter[str] = Counter()
            self._max_in_flight = getattr(self, "_in_flight", 0)
            self._in_flight = getattr(self, "_in_flight", 0)
            self._log.clear()

    @contextmanager
    def in_flight(self) -> Iterator[None]:
        """Count one request as in flight for the duration of the block."""
        with self._lock:
            self._total += 1
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    def record_status(self, status: int) -> None:
        """Count a response status that was sent."""
        with self._lock:
            self._by_status[status] += 1

    def record_fault(self, kind: str) -> None:
        """Count an injected fault (``rate_limit``, ``server_error``, ``hang``, ``auth``)."""
        with self._lock:
            self._faults[kind] += 1

    def record_request(self, body: dict[str, Any]) -> int:
        """Log a chat completion request; returns its sequence number (1, 2, ...)."""
        with self._lock:
            self._sequence += 1
            self._chat += 1
            if body.get("stream"):
                self._streamed += 1
            self._log.append(
                {
                    "seq": self._sequence,
                    "received_at": time.time(),
                    "model": body.get("model"),
                    "stream": bool(body.get("stream")),
                    "messages": body.get("messages"),
                    "response_format": body.get("response_format"),
                    "params": {k: v for k, v in body.items() if k not in _LOGGED_APART},
                }
            )
            return self._sequence

    def recent(self, last: int) -> list[dict[str, Any]]:
        """The last ``last`` logged requests, oldest first."""
        with self._lock:
            items = list(self._log)
        return items[-last:] if last > 0 else []

    def snapshot(self) -> dict[str, Any]:
        """The counters as a JSON-able dict (the body of ``GET /v1/stats``)."""
        with self._lock:
            return {
                "since": self._since,
                "requests_total": self._total,
                "chat_completions": self._chat,
                "streamed": self._streamed,
                "by_status": {str(k): v for k, v in sorted(self._by_status.items())},
                "faults": dict(sorted(self._faults.items())),
                "faults_total": sum(self._faults.values()),
                "in_flight": self._in_flight,
                "max_in_flight": self._max_in_flight,
            }
