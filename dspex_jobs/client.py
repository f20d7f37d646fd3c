"""What producers call: :class:`Client` submits jobs, :class:`JobHandle` follows one.

Everything a job could get wrong is checked here, before anything is enqueued: the kind, the
queue, the signature (parsed by the native engine, without importing DSPy), the inputs
against it, the LM options, that every value can be encoded, and the encoded size. A bad
job raises a typed :class:`~dspex_jobs.errors.ValidationError` and nothing reaches Redis.

Example:
    >>> client = Client()                                        # doctest: +SKIP
    >>> handle = client.predict("question -> answer", question="Why is the sky blue?")
    >>> handle.result(timeout=30).outputs["answer"]              # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery import Celery
from celery.utils import worker_direct
from kombu import Queue
from kombu.exceptions import OperationalError
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import PydanticSerializationError

from dspex_jobs.app import make_app
from dspex_jobs.connections import REDIS_DOWN, broker_error, redis_client
from dspex_jobs.errors import (
    BrokerUnavailable,
    JobTimeout,
    PayloadError,
    PayloadTooLarge,
    SessionBusy,
    SessionWorkerUnavailable,
    UnknownJobKind,
    ValidationError,
)
from dspex_jobs.jobs import Job, JobKind, LMOptions
from dspex_jobs.keys import Keys
from dspex_jobs.multitask import Multitask, SessionGate, check_multitask
from dspex_jobs.protocol import EncodeOptions, check_in, encode_frame, is_dspex_serializer
from dspex_jobs.results import JobResult, JobStatus
from dspex_jobs.sessions import Affinity, Session, SessionState, SessionStore
from dspex_jobs.settings import QUEUES, Settings
from dspex_jobs.signature import Signature
from dspex_jobs.store import ResultStore
from dspex_jobs.streams import StreamChunk, StreamEnd, astream_events, stream_events
from dspex_jobs.telemetry import jobs as job_events
from dspex_jobs.telemetry.summary import task_summary

# Imported where used, not here: the neural package (embed, index), the webhooks package
# (its __init__ pulls in delivery) and health are not needed to construct a Client or submit
# most jobs, and a producer's start-up time is what this module's imports cost
# (tests/unit/test_import_light.py, bench/imports.py).
if TYPE_CHECKING:
    from dspex_jobs.batch import BatchReport
    from dspex_jobs.neural.api import VectorIndex
    from dspex_jobs.neural.vectors import Embeddings
    from dspex_jobs.optimize.handle import OptimizeHandle
    from dspex_jobs.pipeline import Pipeline, PipelineHandle
    from dspex_jobs.programs.registry import ProgramRegistry

__all__ = ["Client", "JobHandle"]

_PROGRAM_KINDS = frozenset({JobKind.PROGRAM, JobKind.PROGRAM_BATCH, JobKind.OPTIMIZE})

_REDIS_DOWN: tuple[type[Exception], ...] = (*REDIS_DOWN, OperationalError, ConnectionError)


class JobHandle:
    """A submitted job. Cheap to create from an id: ``client.job(job_id)``."""

    def __init__(self, job_id: str, client: Client, kind: JobKind | None = None) -> None:
        self.id = job_id
        self.kind = kind
        self._client = client
        self._store = client._store
        self._result: JobResult | None = None

    def status(self) -> JobStatus:
        """``pending`` (queued, or an unknown id), ``running``, ``retrying``, ``succeeded``
        or ``failed``."""
        if self._result is not None:
            return self._result.status
        try:
            return self._store.status(self.id)
        except _REDIS_DOWN as exc:
            raise BrokerUnavailable(f"cannot read job {self.id}: {exc}") from exc

    def result(self, timeout: float | None = None) -> JobResult:
        """Wait for the job and return its result.

        Args:
            timeout: Seconds to wait; ``None`` waits as long as it takes.

        Raises:
            JobTimeout: The job had not finished after ``timeout`` seconds (it may still run).
            DSPexError: The job failed; the error has the class and code the worker stored.
        """
        if self._result is None:
            try:
                found = self._store.wait(self.id, timeout)
            except _REDIS_DOWN as exc:
                raise BrokerUnavailable(
                    f"lost Redis while waiting for job {self.id}: {exc}"
                ) from exc
            if found is None:
                raise JobTimeout(f"job {self.id} did not finish within {timeout} s", job_id=self.id)
            self._result = found
        if self._result.error is not None:
            raise self._result.error.to_exception(job_id=self.id)
        return self._result

    def cancel(self) -> None:
        """Cancel the job: a queued job is not started; a running one has its outputs
        discarded when its current LM call returns. Either way it ends ``cancelled``."""
        self._store.request_cancel(self.id)

    def stream(
        self, *, after_id: str = "0-0", timeout: float | None = None
    ) -> Iterator[StreamChunk | StreamEnd]:
        """Yield the job's output as it is produced, then a :class:`StreamEnd`.

        Only for jobs submitted with ``stream=True``. Pass the ``id`` of the last chunk you
        saw as ``after_id`` to resume after a disconnect without missing or repeating any.

        Args:
            after_id: Resume just after this chunk id (``"0-0"``: from the start).
            timeout: Give up after this many seconds without new data.

        Raises:
            JobTimeout: No data for ``timeout`` seconds.
            DSPexError: The job failed (raised after the chunks that preceded the failure).
        """
        key = self._store.keys.stream(self.id)
        for event in stream_events(self._store.client, key, after_id=after_id, timeout_s=timeout):
            if isinstance(event, StreamEnd):
                event.raise_for_error(self.id)
            yield event

    async def astream(
        self, *, after_id: str = "0-0", timeout: float | None = None
    ) -> AsyncIterator[StreamChunk | StreamEnd]:
        """The async twin of :meth:`stream`: ``async for event in handle.astream(): ...``."""
        from dspex_jobs.connections import async_redis_client

        client = async_redis_client(self._client.settings)
        try:
            async for event in astream_events(
                client, self._store.keys.stream(self.id), after_id=after_id, timeout_s=timeout
            ):
                if isinstance(event, StreamEnd):
                    event.raise_for_error(self.id)
                yield event
        finally:
            await client.aclose()

    def __repr__(self) -> str:
        kind = self.kind.value if self.kind else "?"
        return f"<JobHandle {kind} {self.id}>"


class Client:
    """Submits jobs to the workers and follows them.

    Args:
        settings: Where Redis is and the limits to enforce; read from ``DSPEX_*`` variables
            when omitted.
        app: A Celery app to send through (built from ``settings`` when omitted).
    """

    def __init__(self, settings: Settings | None = None, *, app: Celery | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.app = app or make_app(self.settings)
        self._redis = redis_client(self.settings)
        self._keys = Keys(self.settings.key_prefix)
        self._store = ResultStore(self._redis, self._keys, self.settings.result_ttl_s)
        self.sessions = SessionStore(
            self._redis,
            self._keys,
            max_history=self.settings.session_max_history,
            max_state_bytes=self.settings.session_max_state_bytes,
        )
        self._gate = SessionGate(self._redis, self._keys, self.settings.result_ttl_s)
        if self.settings.sentry_dsn is not None:  # errors and traces from producers too
            from dspex_jobs.telemetry.sentry import init_sentry

            init_sentry(self.settings)

    # -- submitting ------------------------------------------------------------------------

    def submit(
        self,
        kind: JobKind | str,
        signature: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        *,
        instructions: str | None = None,
        template: str | None = None,
        lm: LMOptions | Mapping[str, Any] | None = None,
        queue: str | None = None,
        stream: bool = False,
        session: str | None = None,
        idempotency_key: str | None = None,
        deadline_s: float | None = None,
        correlation_id: str | None = None,
        trace_id: str | None = None,
        program: str | None = None,
        webhook: str | None = None,
        multitask: str = "enqueue",
    ) -> JobHandle:
        """Validate a job, enqueue it, and return its handle.

        Args:
            kind: What to run (``predict``, ``chain_of_thought``, ``ping``).
            signature: DSPy signature text, e.g. ``"question, context: list[str] -> answer"``.
            inputs: Values for the signature's input fields.
            instructions: The signature's instructions (DSPy's docstring).
            template: A Jinja2 prompt template rendered (sandboxed) with the inputs into the
                job's instructions; it may use only the signature's input fields.
            lm: Per-job LM overrides (model, temperature, max_tokens, cache).
            queue: Run on this workload queue instead of the kind's own.
            stream: Publish the output as the LM produces it; read it with
                :meth:`JobHandle.stream`.
            session: Run within this session (see :meth:`session`): inputs not given are
                read from its variables, ``dspy.History`` inputs from its history.
            idempotency_key: A second submit with the same key (within the result TTL)
                returns the first job's handle and enqueues nothing.
            deadline_s: Do not start the job if no worker picked it up within this many
                seconds (it fails with ``DeadlineExceeded``).
            correlation_id: Your own id for the request this job serves.
            trace_id: A trace id to continue (a fresh one otherwise).
            program: For ``program`` jobs: the registered program to run (``qa@latest``,
                ``qa@3``, ``qa@production``; see :mod:`dspex_jobs.programs`).
            webhook: POST a signed JSON body here when the job ends (default
                ``DSPEX_WEBHOOK_URL``); the host must be in ``DSPEX_WEBHOOK_ALLOWED_HOSTS``.
                See ``docs/webhooks.md``.
            multitask: For a session job, what to do when the session is running another:
                ``enqueue`` (after it), ``reject`` (raise :class:`SessionBusy`),
                ``interrupt`` or ``rollback`` it (see :mod:`dspex_jobs.multitask`).

        Raises:
            ValidationError: The job is wrong (kind, queue, signature, inputs, options, size,
                webhook, multitask); nothing was enqueued.
            SessionBusy: ``multitask="reject"`` and the session is running a job.
            BrokerUnavailable: Redis could not be reached.
        """
        strategy = check_multitask(multitask)
        if session is None and strategy != "enqueue":
            raise ValidationError("multitask applies to session jobs only", field="multitask")
        webhook = webhook or self.settings.webhook_url
        if webhook is not None:
            from dspex_jobs.webhooks.urls import check_webhook_url

            check_webhook_url(webhook, self.settings.webhook_allowed_hosts)
        options = _lm_options(lm)
        route: Queue | str | None = queue
        defaults: dict[str, Any] = {}
        if session is not None:
            state, route = self._session_route(session)
            options = LMOptions(**{**state.lm.overrides(), **options.overrides()})
            defaults = state.vars
        deadline_at = None if deadline_s is None else time.time() + deadline_s
        job = self._build(
            kind,
            signature,
            inputs,
            defaults,
            template,
            instructions=instructions,
            lm=options,
            queue=queue,
            stream=stream,
            session_id=session,
            deadline_at=deadline_at,
            correlation_id=correlation_id,
            trace_id=trace_id,
            program=program,
            webhook=webhook,
        )
        wire = self._encode(job)
        if idempotency_key is not None:
            first = self._claim_idempotency_key(idempotency_key, job.id)
            if first != job.id:
                return JobHandle(first, self, job.kind)
        if session is not None and not self._admit(
            job, wire, strategy, state.affinity, idempotency_key
        ):
            job_events.submitted(job, 0)
            return JobHandle(job.id, self, job.kind)  # waits in Redis for the session
        try:
            self.app.send_task(
                job.kind.task_name,
                args=(wire,),
                task_id=job.id,
                # A kombu Queue routes to a worker's direct queue (sessions).
                queue=route or job.target_queue,  # type: ignore[arg-type]
                # What Flower shows instead of the raw envelope.
                argsrepr=task_summary(job),
                kwargsrepr="{}",
                # Results live in our store: no per-job subscription to the
                # Celery backend (which would retry for 20 s on a bad login).
                ignore_result=True,
            )
        except _REDIS_DOWN as exc:  # typed: RedisAuthError, RedisTLSError, BrokerUnavailable
            if session is not None:
                with contextlib.suppress(*_REDIS_DOWN):
                    self._gate.forget(session, job.id)
            raise broker_error(exc, self.settings, "cannot enqueue") from exc
        job_events.submitted(job, len(wire) if isinstance(wire, bytes | str) else 0)
        return JobHandle(job.id, self, job.kind)

    def predict(
        self,
        signature: str | None = None,
        /,
        *,
        inputs: Mapping[str, Any] | None = None,
        instructions: str | None = None,
        template: str | None = None,
        lm: LMOptions | Mapping[str, Any] | None = None,
        stream: bool = False,
        program: str | None = None,
        webhook: str | None = None,
        **input_values: Any,
    ) -> JobHandle:
        """Run ``dspy.Predict(signature)`` on the inputs (keywords, or ``inputs=``).

        With ``program="qa@latest"`` (or ``qa@3``, ``qa@production``) instead of a signature,
        run that registered, optimized program: workers load each version once per process
        and resolve the alias per job, so a promote is used from the next job on.
        """
        if program is not None:
            if signature is not None or template is not None or instructions is not None:
                raise ValidationError(
                    "pass a signature or a program, not both (a program carries its own signature)",
                    field="program",
                )
            return self.submit(
                JobKind.PROGRAM,
                None,
                {**(inputs or {}), **input_values},
                lm=lm,
                stream=stream,
                program=program,
                webhook=webhook,
            )
        return self.submit(
            JobKind.PREDICT,
            signature,
            {**(inputs or {}), **input_values},
            instructions=instructions,
            template=template,
            lm=lm,
            stream=stream,
            webhook=webhook,
        )

    def chain_of_thought(
        self,
        signature: str,
        /,
        *,
        inputs: Mapping[str, Any] | None = None,
        instructions: str | None = None,
        template: str | None = None,
        lm: LMOptions | Mapping[str, Any] | None = None,
        stream: bool = False,
        webhook: str | None = None,
        **input_values: Any,
    ) -> JobHandle:
        """Run ``dspy.ChainOfThought(signature)``; the outputs gain a ``reasoning`` field."""
        return self.submit(
            JobKind.CHAIN_OF_THOUGHT,
            signature,
            {**(inputs or {}), **input_values},
            instructions=instructions,
            template=template,
            lm=lm,
            stream=stream,
            webhook=webhook,
        )

    @property
    def programs(self) -> ProgramRegistry:
        """The program registry: define, list, show, promote, export, import."""
        from dspex_jobs.programs.registry import ProgramRegistry

        return ProgramRegistry(self._redis, self._keys, self.settings.program_max_bytes)

    def optimize(
        self,
        *,
        program: Any,
        optimizer: str,
        trainset: Any,
        valset: Any = None,
        metric: str = "exact_match",
        **options: Any,
    ) -> OptimizeHandle:
        """Optimize a program on the ``optimizer`` queue; the result is a new registry version.

        Example::

            handle = client.optimize(program="qa", signature="question -> answer",
                                     optimizer="BootstrapFewShot", trainset="train.jsonl",
                                     valset="val.jsonl", metric="exact_match",
                                     max_bootstrapped_demos=2)
            handle.follow(on_progress=print).outputs["program"]        # "qa@1"

        See :func:`dspex_jobs.optimize.handle.build_request` for every option (``name``,
        ``signature``, ``module``, ``metric_fields``, ``reflection_lm``, ``promote_to``,
        ``min_score``, ``idempotency_key``) and the optimizer's own arguments.
        """
        from dspex_jobs.optimize.handle import submit_optimize

        return submit_optimize(
            self,
            program=program,
            optimizer=optimizer,
            trainset=trainset,
            valset=valset,
            metric=metric,
            **options,
        )

    def optimization(self, job_id: str) -> OptimizeHandle:
        """A handle to an optimization submitted earlier."""
        from dspex_jobs.optimize.handle import OptimizeHandle

        return OptimizeHandle(job_id, self, JobKind.OPTIMIZE)

    def batch(self, program: str, input: Any, output: str | Path, **options: Any) -> BatchReport:
        """Run a program over every row of a dataset, in parallel chunks; write the answers in
        input order (JSONL), one per row, errors recorded per row. Resumes an interrupted run
        with the same output path. See :func:`dspex_jobs.batch.run_batch`."""
        from dspex_jobs.batch import run_batch

        return run_batch(self, program, input, output, **options)

    def ping(self, queue: str = "general") -> JobHandle:
        """A job that does no LM work: for health checks and measuring overhead."""
        return self.submit(JobKind.PING, queue=queue)

    def embed(
        self,
        texts: Sequence[str],
        *,
        normalize: bool = False,
        timeout_s: float | None = 120.0,  # neural.api.DEFAULT_TIMEOUT_S, not imported here
    ) -> Embeddings:
        """Embed ``texts`` on a neural worker and wait: float32 vectors, one per text.

        Concurrent calls share the worker's model batches. For a handle instead of waiting,
        ``submit("embed", inputs={"texts": [...]})``; decode with ``Embeddings.from_outputs``.
        See :func:`dspex_jobs.neural.api.embed_texts` for the arguments and errors.
        """
        from dspex_jobs.neural.api import embed_texts

        return embed_texts(self, texts, normalize=normalize, timeout_s=timeout_s)

    def index(self, name: str) -> VectorIndex:
        """The vector index ``name`` (created by its first ``add``): add, search, delete, info.

        Raises:
            NeuralInputError: ``name`` is not a valid index name.
        """
        from dspex_jobs.neural.api import VectorIndex

        return VectorIndex(self, name, self._redis)

    def job(self, job_id: str) -> JobHandle:
        """A handle to a job submitted earlier (by any producer)."""
        return JobHandle(job_id, self)

    def run(
        self,
        pipeline: Pipeline | Mapping[str, Any] | str | Path,
        /,
        *,
        inputs: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
        trace_id: str | None = None,
        webhook: str | None = None,
        **input_values: Any,
    ) -> PipelineHandle:
        """Run a pipeline (a :class:`~dspex_jobs.pipeline.Pipeline`, its document, or the
        path of a ``.yaml``/``.json`` file) on the inputs (keywords, or ``inputs=``).

        Inputs are checked (names and types) before anything is enqueued; ``timeout_s`` is
        the run's deadline (default: the pipeline's); ``webhook`` gets one signed POST when
        the run ends (default ``DSPEX_WEBHOOK_URL``; ``docs/webhooks.md``). See
        :func:`dspex_jobs.pipeline.run_pipeline`.
        """
        from dspex_jobs.pipeline.submit import run_pipeline

        return run_pipeline(
            self,
            pipeline,
            {**(inputs or {}), **input_values},
            timeout_s=timeout_s,
            trace_id=trace_id,
            webhook=webhook,
        )

    def pipeline_run(self, run_id: str) -> PipelineHandle:
        """A handle to a pipeline run started earlier (by any producer)."""
        from dspex_jobs.pipeline.handle import PipelineHandle

        return PipelineHandle(run_id, self)

    def session(
        self,
        *,
        ttl_s: int | None = None,
        affinity: Affinity = "hint",
        lm: LMOptions | Mapping[str, Any] | None = None,
        vars: Mapping[str, Any] | None = None,
    ) -> Session:
        """Start a session: its jobs share history, variables and LM settings.

        Args:
            ttl_s: Idle seconds before it expires (default ``DSPEX_SESSION_TTL_S``).
            affinity: ``hint`` prefers the worker that ran its last job; ``strict`` only
                ever uses that worker and fails fast when it is gone.
            lm: LM options for every job of the session (a job's own options win).
            vars: Initial variables.
        """
        if affinity not in ("hint", "strict"):
            raise ValidationError(
                f"affinity must be 'hint' or 'strict', not {affinity!r}", field="affinity"
            )
        state = self.sessions.create(
            ttl_s or self.settings.session_ttl_s, affinity, _lm_options(lm), vars
        )
        return Session(self, state)

    def get_session(self, session_id: str) -> Session:
        """A handle to an existing session.

        Raises:
            SessionNotFound: It ended or expired.
        """
        return Session(self, self.sessions.require(session_id))

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Release connections."""
        self._redis.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------

    def _admit(
        self, job: Job, wire: Any, strategy: Multitask, affinity: str, idempotency_key: str | None
    ) -> bool:
        """Whether a session job is sent now; otherwise it waits in Redis for the session
        (``enqueue``, ``interrupt``, ``rollback``) or :class:`SessionBusy` is raised."""
        assert job.session_id is not None
        payload = wire if isinstance(wire, dict) else job.to_wire()  # JSON, for Redis
        try:
            admission = self._gate.admit(
                job.session_id,
                job.id,
                strategy,
                task=job.kind.task_name,
                queue=job.target_queue,
                payload=payload,
                affinity=affinity,
            )
        except _REDIS_DOWN as exc:
            raise broker_error(exc, self.settings, "cannot admit a session job") from exc
        if admission.decision == "busy":
            if idempotency_key is not None:  # nothing was enqueued under the key
                self._redis.delete(self._keys.idempotency(idempotency_key))
            raise SessionBusy(
                f"session {job.session_id} is running job {admission.running}; "
                "multitask='reject' refuses a second job (submit later, or use 'enqueue', "
                "'interrupt' or 'rollback')",
                session_id=job.session_id,
                running_job_id=admission.running,
            )
        return admission.decision == "run"

    def _claim_idempotency_key(self, key: str, job_id: str) -> str:
        """The job id that owns ``key``: ours if we claimed it first."""
        redis_key = self._keys.idempotency(key)
        try:
            if self._redis.set(redis_key, job_id, nx=True, ex=self.settings.result_ttl_s):
                return job_id
            owner = self._redis.get(redis_key)
        except _REDIS_DOWN as exc:
            raise BrokerUnavailable(f"cannot check idempotency key {key!r}: {exc}") from exc
        return owner.decode() if isinstance(owner, bytes) else str(owner or job_id)

    def _session_route(self, session_id: str) -> tuple[SessionState, Queue | None]:
        """The session, and the bound worker's own queue when affinity says to use it."""
        state = self.sessions.require(session_id)
        worker = self.sessions.binding(session_id)
        if worker is None:
            return state, None  # first job: any worker; the one that runs it binds
        if not self._redis.exists(self._keys.worker_heartbeat(worker)):
            if state.affinity == "strict":
                raise SessionWorkerUnavailable(
                    f"session {session_id} is bound to {worker}, which has no heartbeat; "
                    "strict affinity never moves a session (use affinity='hint' to allow it)",
                    session_id=session_id,
                    worker=worker,
                )
            return state, None  # gone: the next worker rebinds and carries on from Redis
        direct = worker_direct(worker)
        from dspex_jobs.health import queue_depth

        if state.affinity == "hint" and queue_depth(self._redis, direct.name) > 0:
            return state, None  # busy: any worker will do
        return state, direct

    def _build(
        self,
        kind: JobKind | str,
        signature: str | None,
        inputs: Mapping[str, Any] | None,
        defaults: Mapping[str, Any],
        template: str | None = None,
        **options: Any,
    ) -> Job:
        job_kind = _job_kind(kind)
        queue = options.get("queue")
        if queue is not None and queue not in QUEUES:
            raise ValidationError(
                f"unknown queue {queue!r}; expected one of {', '.join(QUEUES)}", field="queue"
            )
        values: dict[str, Any] = dict(inputs or {})
        if job_kind.uses_signature:
            if not signature:
                raise ValidationError(
                    f"a {job_kind.value} job needs a signature", field="signature"
                )
            parsed = Signature.parse(signature, instructions=options.get("instructions"))
            if defaults or options.get("session_id"):
                # Inputs the worker fills from the session are validated, not sent.
                checked = parsed.validate_inputs({**_session_fill(parsed, defaults), **values})
                values = {k: v for k, v in checked.items() if k in values}
            else:
                values = parsed.validate_inputs(values)
            if template is not None:
                options["instructions"] = _render(template, values, parsed, options)
        elif template is not None:
            raise ValidationError(f"a {job_kind.value} job takes no template", field="template")
        elif job_kind in _PROGRAM_KINDS:  # registered programs: dspex_jobs.programs.submit
            from dspex_jobs.programs.submit import check_program_job

            values = check_program_job(self, job_kind, signature, options.get("program"), values)
        elif job_kind.queue == "neural":  # texts, not a signature: dspex_jobs.neural.limits
            from dspex_jobs.neural.limits import check_neural_job

            values = check_neural_job(job_kind, signature, values, self.settings)
        elif signature or values:
            raise ValidationError(
                f"a {job_kind.value} job takes no signature or inputs", field="inputs"
            )
        if options.get("trace_id") is None:
            options.pop("trace_id", None)  # a fresh one
        try:
            return Job(kind=job_kind, signature=signature, inputs=values, **options)
        except PydanticValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(p) for p in error["loc"])
            raise ValidationError(f"{field}: {error['msg']}", field=field) from None

    def _encode(self, job: Job) -> Any:
        """The task argument for ``job``: its frame, encoded once (dspex_jobs.protocol), or a
        claim-check reference to it in Redis when it is over the claim-check threshold."""
        try:
            wire = job.to_wire()
        except PydanticSerializationError as exc:
            raise PayloadError(_unencodable(job.inputs) or str(exc)) from None
        frame = encode_frame(wire, EncodeOptions.from_settings(self.settings))
        size = frame.info.length_bytes  # before compression: the limit is on the job itself
        if size > self.settings.max_payload_bytes:
            raise PayloadTooLarge(
                f"job is {size} bytes encoded, over the limit of "
                f"{self.settings.max_payload_bytes} (DSPEX_MAX_PAYLOAD_BYTES)",
                size=size,
                limit=self.settings.max_payload_bytes,
            )
        if frame.info.size_bytes > self.settings.claim_check_threshold_bytes:
            try:
                return check_in(
                    self._redis,
                    self._keys.payload(job.id),
                    frame,
                    ttl_s=self.settings.result_ttl_s,
                    id=job.id,
                    kind=job.kind.value,
                )
            except _REDIS_DOWN as exc:
                raise BrokerUnavailable(
                    f"cannot store job {job.id} in {self.settings.redacted_redis_url()}: {exc}"
                ) from exc
        # Sent as it is by the dspex serializer; an app on another serializer gets the dict.
        return frame if is_dspex_serializer(self.app.conf.task_serializer) else wire


def _render(
    template: str, values: Mapping[str, Any], signature: Signature, options: Mapping[str, Any]
) -> str:
    """A job's instructions from its template (a TemplateError enqueues nothing)."""
    if options.get("instructions") is not None:
        raise ValidationError("pass instructions or a template, not both", field="template")
    from dspex_jobs.templates import render_template  # jinja2 only for producers that use it

    return render_template(template, values, signature)


def _session_fill(signature: Signature, variables: Mapping[str, Any]) -> dict[str, Any]:
    """What the worker will fill in from the session: variables, and empty histories."""
    filled: dict[str, Any] = {}
    for field in signature.inputs:
        if str(field.type) == "dspy.History":
            filled[field.name] = {"messages": []}
        elif field.name in variables:
            filled[field.name] = variables[field.name]
    return filled


def _job_kind(kind: JobKind | str) -> JobKind:
    try:
        return JobKind(kind)
    except ValueError:
        known = ", ".join(k.value for k in JobKind)
        raise UnknownJobKind(
            f"unknown job kind {kind!r}; expected one of {known}", field="kind"
        ) from None


def _lm_options(lm: LMOptions | Mapping[str, Any] | None) -> LMOptions:
    if isinstance(lm, LMOptions):
        return lm
    try:
        return LMOptions.model_validate(dict(lm or {}))
    except PydanticValidationError as exc:
        error = exc.errors()[0]
        field = "lm." + ".".join(str(p) for p in error["loc"])
        raise ValidationError(f"{field}: {error['msg']}", field=field) from None


def _unencodable(inputs: Mapping[str, Any]) -> str | None:
    """Name the first input that cannot be encoded as JSON."""
    from pydantic_core import to_jsonable_python

    for name, value in inputs.items():
        try:
            to_jsonable_python(value)
        except PydanticSerializationError:
            return f"input {name!r}: a {type(value).__name__} value cannot be encoded as JSON"
    return None
