"""A lease per running job, kept alive by its worker, so a job never runs twice at once.

On the Redis broker an unacknowledged message is handed to another worker once the
visibility timeout passes, even while the first worker still runs it. So a worker takes a
lease (``SET dspex:lease:<id> NX PX``) before running a job and a background thread renews
every lease the process holds. A second copy that finds the lease taken is parked until
the lease would expire and then looks again: by then the job has finished (the copy is
dropped) or its worker died and stopped renewing (the copy runs). Nothing is dropped while
the only copy of a job might be the one in hand.
"""

from __future__ import annotations

import logging
import threading

import redis

from dspex_jobs.keys import Keys

__all__ = ["LeaseKeeper"]

logger = logging.getLogger("dspex_jobs.lease")

# KEYS: leases; ARGV[1]: our token, ARGV[2]: ttl ms. Renews only leases still ours.
_RENEW = """
local renewed = 0
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    renewed = renewed + 1
  end
end
return renewed
"""


class LeaseKeeper:
    """Takes, renews and releases the leases of the jobs one worker process runs."""

    def __init__(self, client: redis.Redis, keys: Keys, ttl_s: float, token: str) -> None:
        self.client = client
        self.keys = keys
        self.ttl_ms = int(ttl_s * 1000)
        self.token = token
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._renew = client.register_script(_RENEW)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def acquire(self, job_id: str) -> float:
        """Take the job's lease: 0 when taken, else the seconds until the holder's expires.

        The worker's hot path takes it inside :meth:`ResultStore.begin
        <dspex_jobs.store.ResultStore.begin>` instead, to save a round trip, then calls
        :meth:`hold`.
        """
        key = self.keys.lease(job_id)
        if self.client.set(key, self.token, nx=True, px=self.ttl_ms):
            self.hold(job_id)
            return 0.0
        remaining_ms = int(self.client.pttl(key))
        return max(remaining_ms, 100) / 1000

    def hold(self, job_id: str) -> None:
        """Renew a lease this process took, until :meth:`release` or :meth:`forget`."""
        with self._lock:
            self._held.add(self.keys.lease(job_id))
        self._ensure_thread()

    def forget(self, job_id: str) -> None:
        """Stop renewing a lease that was deleted elsewhere (with the job's result)."""
        with self._lock:
            self._held.discard(self.keys.lease(job_id))

    def release(self, job_id: str) -> None:
        """Give the lease up (the job ended without a result: retried, parked)."""
        self.forget(job_id)
        self.client.delete(self.keys.lease(job_id))

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="dspex-leases", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.ttl_ms / 3000):
            with self._lock:
                held = list(self._held)
            if not held:
                continue
            try:
                self._renew(keys=held, args=[self.token, self.ttl_ms])
            except Exception as exc:  # Redis away: the lease may lapse, and a copy may run
                logger.warning("could not renew %d job lease(s): %s", len(held), exc)
