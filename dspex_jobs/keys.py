"""Every Redis key this project writes, built in one place under one prefix.

Keys are namespaced (``dspex:result:<job id>``) so that one Redis can serve several
deployments (change ``DSPEX_KEY_PREFIX``) and so that ``redis-cli --scan 'dspex:*'`` shows
everything we own.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Keys"]


@dataclass(frozen=True, slots=True)
class Keys:
    """Key builders for one prefix."""

    prefix: str = "dspex"

    def result(self, job_id: str) -> str:
        """The finished job's :class:`~dspex_jobs.results.JobResult` (JSON, with a TTL)."""
        return f"{self.prefix}:result:{job_id}"

    def done(self, job_id: str) -> str:
        """A list the worker pushes the result onto, so a waiting producer wakes at once."""
        return f"{self.prefix}:done:{job_id}"

    def state(self, job_id: str) -> str:
        """The running job's state (started at, worker, attempt), until it finishes."""
        return f"{self.prefix}:state:{job_id}"

    def stream(self, job_id: str) -> str:
        """A Redis Stream of the job's output chunks, then its end record."""
        return f"{self.prefix}:stream:{job_id}"

    def session(self, session_id: str) -> str:
        """A session's state (JSON, versioned, with a TTL)."""
        return f"{self.prefix}:session:{session_id}"

    def session_bindings(self) -> str:
        """A hash: session id -> the worker it is bound to."""
        return f"{self.prefix}:bindings"

    def payload(self, job_id: str) -> str:
        """A large job's encoded frame (a claim check), sent by reference, with a TTL."""
        return f"{self.prefix}:payload:{job_id}"

    def worker_heartbeat(self, worker: str) -> str:
        """A key with a short TTL that a live worker keeps refreshing."""
        return f"{self.prefix}:worker:{worker}"

    def worker_pattern(self) -> str:
        """Pattern matching every worker heartbeat key."""
        return f"{self.prefix}:worker:*"
