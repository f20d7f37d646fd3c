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

    def idempotency(self, key: str) -> str:
        """The job id first submitted with an idempotency key."""
        return f"{self.prefix}:idem:{key}"

    def lease(self, job_id: str) -> str:
        """Held (and renewed) by the worker running the job."""
        return f"{self.prefix}:lease:{job_id}"

    def cancel(self, job_id: str) -> str:
        """Set when a producer cancels the job."""
        return f"{self.prefix}:cancel:{job_id}"

    def stream(self, job_id: str) -> str:
        """A Redis Stream of the job's output chunks, then its end record."""
        return f"{self.prefix}:stream:{job_id}"

    def session(self, session_id: str) -> str:
        """A session's state (JSON, versioned, with a TTL)."""
        return f"{self.prefix}:session:{session_id}"

    def session_bindings(self) -> str:
        """A hash: session id -> the worker it is bound to."""
        return f"{self.prefix}:bindings"

    def session_active(self, session_id: str) -> str:
        """The id of the session's job that runs now (see :mod:`dspex_jobs.multitask`)."""
        return f"{self.prefix}:session-active:{session_id}"

    def session_pending(self, session_id: str) -> str:
        """A list of the session's jobs waiting for the running one, in order."""
        return f"{self.prefix}:session-pending:{session_id}"

    def webhook(self, delivery_id: str) -> str:
        """A webhook delivery's hash: URL, body, status, attempts, last error."""
        return f"{self.prefix}:webhook:{delivery_id}"

    def webhook_lease(self, delivery_id: str) -> str:
        """Held while one worker attempts the delivery, so copies never overlap."""
        return f"{self.prefix}:webhook:{delivery_id}:lease"

    def webhooks(self) -> str:
        """A sorted set of delivery ids, scored by when they were created."""
        return f"{self.prefix}:webhooks"

    def webhooks_failed(self) -> str:
        """A sorted set of undeliverable delivery ids, scored by when they gave up."""
        return f"{self.prefix}:webhooks:failed"

    def webhook_host(self, host: str) -> str:
        """A sorted set of deliveries in flight to one host:port, scored by lease expiry."""
        return f"{self.prefix}:webhooks:host:{host}"

    def payload(self, job_id: str) -> str:
        """A large job's encoded frame (a claim check), sent by reference, with a TTL."""
        return f"{self.prefix}:payload:{job_id}"

    def breaker(self, endpoint_key: str) -> str:
        """The circuit breaker of one LM endpoint (a hash)."""
        return f"{self.prefix}:breaker:{endpoint_key}"

    def rate_limit(self, endpoint_key: str) -> str:
        """The token bucket of one LM endpoint (a hash)."""
        return f"{self.prefix}:ratelimit:{endpoint_key}"

    def delayed(self) -> str:
        """A sorted set of jobs waiting to be re-enqueued, scored by when they are due."""
        return f"{self.prefix}:delayed"

    def dead_letters(self) -> str:
        """A hash: job id -> the dead letter (envelope, error, traceback)."""
        return f"{self.prefix}:dlq"

    def dead_letter_index(self) -> str:
        """A sorted set of dead job ids, scored by when they failed."""
        return f"{self.prefix}:dlq:index"

    def duplicate_results(self) -> str:
        """A counter of results a finished job tried to store a second time (should be 0)."""
        return f"{self.prefix}:stats:duplicate_results"

    def index_meta(self, name: str) -> str:
        """A vector index's hash of facts: model, dim, version, created_at, updated_at."""
        return f"{self.prefix}:index:{name}:meta"

    def index_vectors(self, name: str) -> str:
        """A hash: document id -> its unit vector (float32, little-endian bytes)."""
        return f"{self.prefix}:index:{name}:vectors"

    def index_documents(self, name: str) -> str:
        """A hash: document id -> its text."""
        return f"{self.prefix}:index:{name}:documents"

    def index_metadata(self, name: str) -> str:
        """A hash: document id -> its metadata (a JSON object), for documents that have one."""
        return f"{self.prefix}:index:{name}:metadata"

    def index_pattern(self) -> str:
        """Pattern matching every vector index's meta key."""
        return f"{self.prefix}:index:*:meta"

    def worker_heartbeat(self, worker: str) -> str:
        """A key with a short TTL that a live worker keeps refreshing."""
        return f"{self.prefix}:worker:{worker}"

    def worker_pattern(self) -> str:
        """Pattern matching every worker heartbeat key."""
        return f"{self.prefix}:worker:*"

    def lm_cache_entry(self, digest: str) -> str:
        """One cached LM response (see :mod:`dspex_jobs.lmcache`), with a TTL."""
        return f"{self.prefix}:lmcache:e:{digest}"

    def lm_cache_index(self) -> str:
        """A sorted set of cached LM responses scored by last use (the LRU bound)."""
        return f"{self.prefix}:lmcache:index"

    def lm_cache_stats(self) -> str:
        """A hash of the LM cache's shared counters: hits, misses, writes, evictions."""
        return f"{self.prefix}:lmcache:stats"

    def pipeline(self, run_id: str) -> str:
        """A pipeline run's hash: its plan, trace id, deadline, cancel flag and outcome."""
        return f"{self.prefix}:pipeline:{run_id}"

    def pipeline_context(self, run_id: str) -> str:
        """A hash: context field (input, step output, step name) -> its JSON value."""
        return f"{self.prefix}:pipeline:{run_id}:context"

    def pipeline_steps(self, run_id: str) -> str:
        """A hash: step path -> the step's record (state, queue, timings, error)."""
        return f"{self.prefix}:pipeline:{run_id}:steps"

    def pipeline_done(self, run_id: str) -> str:
        """A list the run's outcome is pushed onto, so a waiting producer wakes at once."""
        return f"{self.prefix}:pipeline:{run_id}:done"

    def program(self, name: str) -> str:
        """A registered program's hash: its definition, latest version and aliases."""
        return f"{self.prefix}:program:{name}"

    def program_version(self, name: str, version: int) -> str:
        """One stored version of a program (JSON state and metadata; never a pickle)."""
        return f"{self.prefix}:program:{name}:v:{version}"

    def programs(self) -> str:
        """A set of every registered program name."""
        return f"{self.prefix}:programs"

    def optimize_progress(self, job_id: str) -> str:
        """An optimization's latest progress record (JSON), read by handles and the CLI."""
        return f"{self.prefix}:optimize:{job_id}:progress"

    def optimize_checkpoint(self, job_id: str) -> str:
        """A hash of an optimization's checkpoints, so a taken-over job resumes."""
        return f"{self.prefix}:optimize:{job_id}:checkpoint"

    def optimize_starts(self, job_id: str) -> str:
        """A counter of how often an optimization's body started (takeovers count up)."""
        return f"{self.prefix}:optimize:{job_id}:starts"
