"""What stands between a job and an LM endpoint: its shared breaker and rate limit."""

from __future__ import annotations

from dspex_jobs.errors import CircuitOpen, DSPexError, LMError
from dspex_jobs.resilience.breaker import BreakerState, CircuitBreaker
from dspex_jobs.resilience.ratelimit import RateLimiter

__all__ = ["LMGuard", "RateLimitWait"]


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
