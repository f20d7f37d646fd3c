"""Added latency and injected faults, drawn from one seeded random stream.

Each chat request asks :meth:`FaultInjector.draw` for a :class:`FaultPlan`: how long to
wait before answering and which fault, if any, to send instead of an answer. Faults look
exactly like a real OpenAI-compatible provider's, so clients map them to their usual
exceptions (see ``docs/lm_server.md`` for the table):

* ``rate_limit``: 429 with ``Retry-After: <retry_after_s>`` (and ``retry-after-ms``) and
  code ``rate_limit_exceeded``;
* ``server_error``: 500 ``server_error`` or 503 ``service_unavailable``, half each;
* ``hang``: no answer for ``hang_s`` seconds (then a normal answer), or none at all until
  the client gives up or the server stops, so client timeouts fire.

With a ``seed``, a sequence of requests sees the same faults run after run (concurrent
requests draw in arrival order).
"""

from __future__ import annotations

import json
import math
import random
import threading
from dataclasses import dataclass
from typing import Literal

from dspex_jobs.lmserver.config import LMServerConfig

__all__ = ["FaultKind", "FaultPlan", "FaultInjector", "error_body"]

FaultKind = Literal["rate_limit", "server_error", "hang"]


@dataclass(frozen=True)
class FaultPlan:
    """What to do with one request.

    Attributes:
        delay_s: Seconds to wait before answering (latency plus jitter).
        fault: The injected fault, or None for a normal answer.
        status: HTTP status of an error fault (429, 500 or 503), else 200.
        hang_s: For a hang: seconds before answering normally; None hangs for good.
    """

    delay_s: float = 0.0
    fault: FaultKind | None = None
    status: int = 200
    hang_s: float | None = None


_ERRORS = {
    429: (
        "rate_limit_exceeded",
        "requests",
        "Rate limit reached for extractive-minilm (injected by the dspex-jobs LM server).",
    ),
    500: (
        "server_error",
        "server_error",
        "The server had an error while processing your "
        "request (injected by the dspex-jobs LM server).",
    ),
    503: (
        "service_unavailable",
        "server_error",
        "The server is overloaded or not ready yet (injected by the dspex-jobs LM server).",
    ),
}


def error_body(status: int, message: str, code: str, error_type: str) -> bytes:
    """An OpenAI-style error JSON body: ``{"error": {"message", "type", "param", "code"}}``."""
    return json.dumps(
        {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    ).encode()


class FaultInjector:
    """Draws latency and faults for each request from the config's probabilities.

    Args:
        config: Server configuration (``latency_ms``, ``*_rate``, ``hang_s``, ``seed``).
    """

    def __init__(self, config: LMServerConfig) -> None:
        self.config = config
        self._random = random.Random(config.seed)
        self._lock = threading.Lock()

    def draw(self) -> FaultPlan:
        """The plan for the next request (thread-safe)."""
        c = self.config
        with self._lock:
            jitter_ms = self._random.uniform(0, c.latency_jitter_ms) if c.latency_jitter_ms else 0.0
            u = self._random.random() if c.fault_rate > 0 else math.inf
            pick = self._random.random()
        delay_s = (c.latency_ms + jitter_ms) / 1000.0
        edges: tuple[tuple[float, FaultKind], ...] = (
            (c.rate_limit_rate, "rate_limit"),
            (c.server_error_rate, "server_error"),
            (c.hang_rate, "hang"),
        )
        bound = 0.0
        for rate, kind in edges:
            bound += rate
            if u < bound:
                return self._plan(delay_s, kind, pick)
        if u < bound + c.error_rate:
            status = (429, 500, 503)[min(2, int(pick * 3))]
            fault: FaultKind = "rate_limit" if status == 429 else "server_error"
            return FaultPlan(delay_s=delay_s, fault=fault, status=status)
        return FaultPlan(delay_s=delay_s)

    def _plan(self, delay_s: float, kind: FaultKind, pick: float) -> FaultPlan:
        if kind == "rate_limit":
            return FaultPlan(delay_s=delay_s, fault="rate_limit", status=429)
        if kind == "server_error":
            status = 500 if pick < 0.5 else 503
            return FaultPlan(delay_s=delay_s, fault="server_error", status=status)
        return FaultPlan(delay_s=delay_s, fault="hang", hang_s=self.config.hang_s)

    def error_response(self, status: int) -> tuple[dict[str, str], bytes]:
        """Headers and body of an injected error with this status."""
        code, error_type, message = _ERRORS[status]
        headers: dict[str, str] = {}
        if status == 429:
            retry_after_s = self.config.retry_after_s
            # Whole seconds per RFC 9110; a fractional value is sent as is (DSPy, litellm
            # and the openai SDK all read it as a float), so tests can retry quickly.
            headers["Retry-After"] = f"{retry_after_s:g}"
            headers["retry-after-ms"] = str(int(retry_after_s * 1000))
            headers["x-ratelimit-remaining-requests"] = "0"
        return headers, error_body(status, message, code, error_type)
