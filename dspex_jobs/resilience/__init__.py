"""Failure handling shared by every worker through Redis.

- :mod:`~dspex_jobs.resilience.breaker`: a circuit breaker per LM endpoint, so a failing
  provider is seen by all workers at once and jobs fail fast instead of waiting on it.
- :mod:`~dspex_jobs.resilience.ratelimit`: a token bucket per LM endpoint, so a fleet of
  workers never exceeds a provider's quota.
- :mod:`~dspex_jobs.resilience.delayed`: jobs that must wait (long retry backoff, a rate
  limit) are parked in Redis and re-enqueued when due, never held unacknowledged.
- :mod:`~dspex_jobs.resilience.deadletter`: jobs that failed for good, with their envelope,
  error and traceback, for inspection and replay.
"""

from dspex_jobs.resilience.breaker import BreakerState, CircuitBreaker, endpoint_id

__all__ = ["BreakerState", "CircuitBreaker", "endpoint_id"]
