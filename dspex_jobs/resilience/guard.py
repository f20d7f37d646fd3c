"""What stands between a job and an LM endpoint: its shared breaker and rate limit."""

from __future__ import annotations

import threading

from dspex_jobs.errors import CircuitOpen, DSPexError, LMError
from dspex_jobs.resilience.breaker import BreakerState, CircuitBreaker
from dspex_jobs.resilience.ratelimit import RateLimiter

__all__ = ["GATE_SETTING", "LMGate", "LMGuard", "RateLimitWait"]

GATE_SETTING = "dspex_lm_gate"
"""The DSPy setting (``dspy.context``) that carries a job's :class:`LMGate` to the shared
cache, into every thread DSPy runs the job's calls in."""


class RateLimitWait(Exception):
    """The shared rate limit says wait ``wait_s``: the job is parked, not failed."""

    def __init__(self, endpoint: str, wait_s: float) -> None:
        super().__init__(f"rate limit of {endpoint}: wait {wait_s:.2f} s")
        self.endpoint = endpoint
        self.wait_s = wait_s


class LMGuard:
    """Checks an endpoint before a call and reports how the call went."""

    def __init__(self, breaker: CircuitBreaker | None, limiter: RateLimiter | None) -> None:
        self.breaker = breaker
        self.limiter = limiter

    def before(self, endpoint: str) -> bool:
        """Raise :class:`CircuitOpen` or :class:`RateLimitWait` if the call must not go now.

        Returns whether the call is the breaker's half-open probe: pass it on to
        :meth:`succeeded`.
        """
        probe = False
        if self.breaker is not None:
            decision = self.breaker.allow(endpoint)
            probe = decision.probe
            if not decision.allowed:
                raise CircuitOpen(
                    f"the circuit breaker of {endpoint} is {decision.state.value}: failing "
                    f"fast; it retries the endpoint in {decision.retry_in_s:.1f} s",
                    retry_after_s=max(decision.retry_in_s, 0.1),
                    endpoint=endpoint,
                )
        if self.limiter is not None:
            wait_s = self.limiter.acquire(endpoint)
            if wait_s > 0:
                raise RateLimitWait(endpoint, wait_s)
        return probe

    def gate(self, endpoint: str) -> LMGate:
        """A gate for one job's calls to ``endpoint`` (see :class:`LMGate`)."""
        return LMGate(self, endpoint)

    def failed(self, endpoint: str, error: DSPexError) -> BreakerState | None:
        """Count a failure that says the endpoint is unwell; the breaker's new state."""
        if self.breaker is None or not isinstance(error, LMError) or not error.retryable:
            return None
        if isinstance(error, CircuitOpen):
            return None
        return self.breaker.record_failure(endpoint)

    def succeeded(self, endpoint: str, tokens: int, *, probe: bool) -> None:
        """A call went through: a probe closes its half-open breaker; charge the tokens."""
        if self.breaker is not None and probe:
            self.breaker.record_success(endpoint)
        if self.limiter is not None:
            self.limiter.charge_tokens(endpoint, tokens)


class LMGate:
    """One job's check of its endpoint, made once, when the job's first LM call is due.

    A job whose answers all come from the shared LM cache never reaches the endpoint, so
    it has nothing to ask of the breaker or the rate limit: it is answered while the
    breaker is open and takes no request token. The worker's runtime opens a gate per job
    and the shared cache calls :meth:`check` on a miss, just before DSPy calls the LM
    (:mod:`dspex_jobs.runtime.cache`); the runtime calls it up front when the job's LM does
    not use the cache. Thread-safe: a program's parallel calls check once.

    Attributes:
        endpoint: The endpoint the job's calls go to.
        checked: Whether :meth:`check` has let a call through.
        probe: Whether that call is the breaker's half-open probe.
    """

    __slots__ = ("_guard", "_lock", "checked", "endpoint", "probe")

    def __init__(self, guard: LMGuard, endpoint: str) -> None:
        self._guard = guard
        self._lock = threading.Lock()
        self.endpoint = endpoint
        self.checked = False
        self.probe = False

    def check(self) -> None:
        """Raise :class:`CircuitOpen` or :class:`RateLimitWait` if the call must not go now;
        after the first call let through, do nothing."""
        if self.checked:
            return
        with self._lock:
            if not self.checked:
                self.probe = self._guard.before(self.endpoint)
                self.checked = True

    def succeeded(self, tokens: int) -> None:
        """The job's calls went through: report it, if any of them reached the endpoint."""
        if self.checked:
            self._guard.succeeded(self.endpoint, tokens, probe=self.probe)
