"""Job state and results in Redis, shared by the worker that writes and the producer that waits.

A finished job is written twice in one round trip: as a plain key (``dspex:result:<id>``,
read by ``status()`` and any later ``result()``) and pushed onto a short list
(``dspex:done:<id>``) that a waiting producer blocks on with ``BLPOP``. The producer so wakes
the moment the job ends, with the result in hand, and never polls. Both keys expire with
the result TTL.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

import redis

from dspex_jobs.keys import Keys
from dspex_jobs.results import JobResult, JobStatus

__all__ = ["ResultStore"]

_WAIT_SLICE_S = 0.5
"""Longest single BLPOP: another waiter may have taken the pushed copy, so look at the key."""

# KEYS: result, done, state, lease, cancel, duplicate counter.
# ARGV: the result, its TTL in seconds, then cancel values that are not a cancellation
# (a session's interrupt/rollback, settled by the worker itself: dspex_jobs.multitask).
# Returns -1 (cancelled: nothing written), 1 (stored), 0 (a duplicate: counted, not stored).
_SAVE_UNLESS_CANCELLED = """
local cancel = redis.call('GET', KEYS[5])
if cancel then
  local settled_elsewhere = false
  for i = 3, #ARGV do
    if cancel == ARGV[i] then settled_elsewhere = true end
  end
  if not settled_elsewhere then return -1 end
end
local first = redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2], 'NX')
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[3], KEYS[4])
if first then return 1 end
redis.call('INCR', KEYS[6])
return 0
"""


class ResultStore:
    """Reads and writes job state for one Redis and key prefix."""

    def __init__(self, client: redis.Redis, keys: Keys, result_ttl_s: int) -> None:
        self.client = client
        self.keys = keys
        self.result_ttl_s = result_ttl_s
        self._save_unless_cancelled = client.register_script(_SAVE_UNLESS_CANCELLED)

    def begin(
        self, job_id: str, worker: str, attempt: int, lease_token: str, lease_ttl_ms: int
    ) -> tuple[bool, bool, float]:
        """Record that ``worker`` starts the job and try to take its lease.

        One round trip, since this is on every job's path. Returns whether the job already
        finished, whether it was cancelled, and 0 if the lease was taken, else the seconds
        until the current holder's lease lapses (see :mod:`dspex_jobs.resilience.lease`).
        """
        state = {
            "status": JobStatus.RUNNING.value,
            "worker": worker,
            "attempt": attempt,
            "at": time.time(),
        }
        lease = self.keys.lease(job_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.exists(self.keys.result(job_id))
        pipe.exists(self.keys.cancel(job_id))
        pipe.set(self.keys.state(job_id), json.dumps(state), ex=self.result_ttl_s)
        pipe.set(lease, lease_token, nx=True, px=lease_ttl_ms)
        pipe.pttl(lease)
        finished, cancelled, _, leased, remaining_ms = pipe.execute()
        wait_s = 0.0 if leased else max(int(remaining_ms), 100) / 1000
        return bool(finished), bool(cancelled), wait_s

    def request_cancel(self, job_id: str) -> None:
        """Ask the job to stop: not started if queued, outputs discarded if running."""
        self.client.set(self.keys.cancel(job_id), "1", ex=self.result_ttl_s)

    def cancel_requested(self, job_id: str) -> bool:
        """Whether someone asked the job to stop."""
        return bool(self.client.exists(self.keys.cancel(job_id)))

    def mark_running(self, job_id: str, worker: str, attempt: int, status: JobStatus) -> None:
        """Record that ``worker`` started (or is retrying) the job."""
        state = {"status": status.value, "worker": worker, "attempt": attempt, "at": time.time()}
        self.client.set(self.keys.state(job_id), json.dumps(state), ex=self.result_ttl_s)

    def save(self, result: JobResult) -> bool:
        """Store a finished job and wake whoever waits for it; whether it was the first result.

        A job finishes once: a second result for the same id (which leases and the
        redelivery check make a bug, not a race) is not stored, and is counted under
        ``dspex:stats:duplicate_results`` so that monitoring and the fault tests see it.
        """
        raw = result.model_dump_json()
        done = self.keys.done(result.job_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.keys.result(result.job_id), raw, ex=self.result_ttl_s, nx=True)
        pipe.rpush(done, raw)
        pipe.expire(done, self.result_ttl_s)
        pipe.delete(self.keys.state(result.job_id), self.keys.lease(result.job_id))
        first, *_ = pipe.execute()
        if not first:
            self.client.incr(self.keys.duplicate_results())
        return bool(first)

    def save_unless_cancelled(
        self, result: JobResult, not_cancellations: Iterable[str]
    ) -> bool | None:
        """:meth:`save`, unless someone asked the job to stop meanwhile: then ``None``, and
        nothing is written (the caller stores the cancellation instead).

        The worker's hot path: the cancel check and the write in one round trip (a script,
        so no cancel can land between them). Cancel values in ``not_cancellations`` (a
        session's interrupt or rollback, settled by the worker itself) do not count.
        """
        job_id = result.job_id
        keys = self.keys
        outcome = self._save_unless_cancelled(
            keys=[
                keys.result(job_id),
                keys.done(job_id),
                keys.state(job_id),
                keys.lease(job_id),
                keys.cancel(job_id),
                keys.duplicate_results(),
            ],
            args=[result.model_dump_json(), self.result_ttl_s, *not_cancellations],
        )
        return None if int(outcome) < 0 else bool(outcome)

    def get(self, job_id: str) -> JobResult | None:
        """The finished job, or ``None`` while it is not finished (or unknown)."""
        raw = self.client.get(self.keys.result(job_id))
        return None if raw is None else JobResult.model_validate_json(raw)

    def state(self, job_id: str) -> dict[str, Any] | None:
        """The running job's state record, if a worker has started it."""
        raw = self.client.get(self.keys.state(job_id))
        return None if raw is None else dict(json.loads(raw))

    def status(self, job_id: str) -> JobStatus:
        """Where the job is now."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.keys.result(job_id))
        pipe.get(self.keys.state(job_id))
        result_raw, state_raw = pipe.execute()
        if result_raw is not None:
            return JobResult.model_validate_json(result_raw).status
        if state_raw is not None:
            return JobStatus(json.loads(state_raw)["status"])
        return JobStatus.PENDING

    def wait(self, job_id: str, timeout_s: float | None) -> JobResult | None:
        """Block until the job finishes; ``None`` if ``timeout_s`` passes first."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        done = self.keys.done(job_id)
        while True:
            remaining = _WAIT_SLICE_S if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return self.get(job_id)
            popped = self.client.blpop([done], timeout=min(remaining, _WAIT_SLICE_S))
            if popped is not None:
                return JobResult.model_validate_json(popped[1])
            found = self.get(job_id)
            if found is not None:
                return found
