"""Every error dspex-jobs raises, in one tree.

A user catches one root, :class:`DSPexError`, or one of its branches::

    DSPexError
    ├── ConfigurationError          settings are wrong (misspelt DSPEX_ variable, bad URL)
    │   ├── LMServerStartError      the local LM server did not come up
    │   ├── DuplicateImplementation an operation's implementation name is registered twice
    │   └── NeuralModelError        the embedding model cannot load, or its device is missing
    ├── BrokerUnavailable           Redis cannot be reached
    │   ├── RedisAuthError          Redis refused the user or password (permanent)
    │   └── RedisTLSError           the TLS handshake failed: CA, certificate, or no TLS
    ├── ValidationError             the job is wrong; retrying never helps
    │   ├── SignatureError          signature text does not parse (also a ValueError)
    │   ├── SignatureValidationError  inputs do not match the signature (also a ValueError)
    │   ├── UnknownJobKind
    │   ├── PayloadError            a value cannot be encoded, a message cannot be decoded
    │   │   ├── PayloadTooLarge
    │   │   │   └── DecompressedTooLarge  a frame inflates past DSPEX_MAX_DECOMPRESSED_BYTES
    │   │   ├── PayloadDecodeError  a message body is truncated, corrupt or not ours
    │   │   │   └── ProtocolVersionError  a frame from a newer dspex-jobs (version, codec)
    │   │   └── ClaimCheckMissing   a large payload's Redis copy expired or was deleted
    │   ├── TemplateError           a prompt template does not compile or names unknown fields
    │   │   └── TemplateRenderError rendering failed: a missing value, a limit, a forbidden access
    │   ├── NoImplementation        no implementation of an operation fits the request
    │   ├── OptimizeRequestError    an optimization's program, optimizer, arguments, metric or
    │   │                           dataset is wrong (``field`` names it; rows by position)
    │   ├── PipelineValidationError a pipeline is wrong: a step's input is missing, a step type,
    │   │                           module or operation is unknown (nothing was enqueued)
    │   └── NeuralInputError        texts, ids, metadata or options of a neural job are wrong
    │       └── TextTooLong         a text is over DSPEX_NEURAL_MAX_TEXT_CHARS
    ├── UnsupportedOperation        an implementation cannot handle this request (the router
    │                               falls back to the next one)
    ├── SessionError                a session cannot be used as asked
    │   ├── SessionNotFound         it ended or expired
    │   ├── SessionStateTooLarge    a write would exceed the state size limit
    │   ├── SessionWorkerUnavailable  strict affinity, and the bound worker is gone
    │   └── SessionBusy             a job is running in the session and the submit said
    │                               multitask="reject"
    ├── ProgramError                a registered program cannot be used as asked
    │   ├── ProgramNotFound         no program, version or alias of that name
    │   └── ProgramLoadError        its stored state does not load (class missing or changed)
    ├── VectorIndexError            a vector index cannot be used as asked
    │   ├── IndexNotFound           no index of that name (an index is created by its first add)
    │   ├── IndexFull               an add would pass DSPEX_NEURAL_INDEX_MAX_DOCS
    │   └── IndexMismatch           the index was built by another model (name or dimension)
    └── JobError                    the job ran (or tried to) and did not succeed
        ├── LMError                 the language model call failed
        │   ├── LMRateLimited       retryable, may carry retry_after_s
        │   │   └── CircuitOpen     the endpoint's shared breaker is open: failed fast
        │   ├── LMTimeout           retryable
        │   ├── LMUnavailable       retryable (5xx, connection refused)
        │   ├── LMAuthError         permanent
        │   └── LMBadRequest        permanent
        ├── JobTimeout              the result did not arrive in time
        ├── JobCancelled            cancelled before or while it ran
        ├── OptimizeTimeLimit       an optimization ran past its time limit and was stopped
        ├── DeadlineExceeded        its deadline passed before it started
        │   └── PipelineDeadlineExceeded  a pipeline ran past its deadline
        ├── WorkerLost              the worker process died while running the job
        ├── StepTimeout             a pipeline step ran past its own timeout_s (retryable)
        ├── PipelineStepFailed      a pipeline step failed under the `fail` policy: which, and why
        └── JobFailed               anything else that went wrong inside the job

Every class has a stable ``code`` (stored in results and logs, never renamed) and a
``retryable`` flag that the retry policy reads instead of sprawling ``except`` clauses.
A failed job's stored error is turned back into the same class on the producer side by
:func:`error_from_payload`.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "BrokerUnavailable",
    "RedisAuthError",
    "RedisTLSError",
    "CircuitOpen",
    "ClaimCheckMissing",
    "ConfigurationError",
    "DSPexError",
    "DecompressedTooLarge",
    "DuplicateImplementation",
    "DeadlineExceeded",
    "IndexFull",
    "IndexMismatch",
    "IndexNotFound",
    "JobCancelled",
    "JobError",
    "JobFailed",
    "JobTimeout",
    "LMAuthError",
    "LMBadRequest",
    "LMError",
    "LMRateLimited",
    "LMServerStartError",
    "LMTimeout",
    "LMUnavailable",
    "NeuralInputError",
    "NeuralModelError",
    "NoImplementation",
    "OptimizeRequestError",
    "OptimizeTimeLimit",
    "PayloadDecodeError",
    "PipelineDeadlineExceeded",
    "PipelineStepFailed",
    "PipelineValidationError",
    "PayloadError",
    "PayloadTooLarge",
    "ProgramError",
    "ProgramLoadError",
    "ProgramNotFound",
    "ProtocolVersionError",
    "SessionError",
    "SessionNotFound",
    "SessionBusy",
    "SessionStateTooLarge",
    "SessionWorkerUnavailable",
    "SignatureError",
    "SignatureValidationError",
    "StepTimeout",
    "TemplateError",
    "TemplateRenderError",
    "TextTooLong",
    "UnknownJobKind",
    "UnsupportedOperation",
    "ValidationError",
    "VectorIndexError",
    "WorkerLost",
    "error_from_payload",
]


class DSPexError(Exception):
    """Root of every dspex-jobs error.

    Args:
        message: What went wrong, where, and what to do about it.
        details: Structured facts (field names, positions) that travel with stored results.
    """

    code: ClassVar[str] = "dspex_error"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str = "", **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details

    def to_payload(self) -> dict[str, Any]:
        """The JSON-able form stored in a job's result."""
        return {
            "code": self.code,
            "message": self.message,
            "retryable": self.retryable,
            "details": self.details,
        }


class ConfigurationError(DSPexError):
    """Settings are missing, misspelt or inconsistent."""

    code = "configuration_error"


class LMServerStartError(ConfigurationError):
    """The local LM server did not become ready; the message carries its stderr tail."""

    code = "lm_server_start"


class BrokerUnavailable(DSPexError):
    """Redis (broker or result store) cannot be reached."""

    code = "broker_unavailable"
    retryable = True


class RedisAuthError(BrokerUnavailable):
    """Redis refused the credentials (``DSPEX_REDIS_USERNAME`` / ``DSPEX_REDIS_PASSWORD``).

    The message names the setting to fix and never the password; retrying never helps.
    """

    code = "redis_auth_error"
    retryable = False


class RedisTLSError(BrokerUnavailable):
    """TLS to Redis failed: an unknown CA, a wrong certificate, or a server (or client)
    that does not speak TLS on that port."""

    code = "redis_tls_error"
    retryable = False


class ValidationError(DSPexError):
    """The job itself is wrong: nothing was enqueued, and retrying never helps."""

    code = "validation_error"


class SignatureError(ValidationError, ValueError):
    """A signature's text does not parse.

    Args:
        message: What was expected at the fault.
        text: The signature text.
        position: 0-based offset of the fault in ``text``.
    """

    code = "signature_error"

    def __init__(self, message: str, text: str = "", position: int = 0, **details: Any) -> None:
        self.reason = message
        self.text = text
        self.position = position
        rendered = f"{message} at position {position}" if text else message
        if text:
            rendered += f"\n  {text}\n  {' ' * position}^"
        super().__init__(rendered, text=text, position=position, **details)


class SignatureValidationError(ValidationError, ValueError):
    """Inputs do not match a signature. ``errors`` lists every bad field at once.

    Args:
        errors: One ``{"field": name, "message": why}`` mapping per problem.
    """

    code = "input_validation_error"

    def __init__(self, errors: list[dict[str, Any]], message: str | None = None) -> None:
        self.errors = errors
        if message is None:
            listed = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in errors)
            message = f"{len(errors)} invalid input(s): {listed}"
        super().__init__(message, errors=errors)


class UnknownJobKind(ValidationError):
    """The job names a kind (module) this system does not run."""

    code = "unknown_job_kind"


class PayloadError(ValidationError):
    """A value cannot be encoded for the wire, or a message cannot be decoded."""

    code = "payload_error"


class PayloadTooLarge(PayloadError):
    """An encoded payload exceeds the configured size limit."""

    code = "payload_too_large"


class DecompressedTooLarge(PayloadTooLarge):
    """A compressed frame declares or inflates to more than the decompression limit.

    Raised before anything is inflated when the frame's header declares too much, and
    while inflating when the body disagrees with its header (a zip bomb).
    """

    code = "decompressed_too_large"


class PayloadDecodeError(PayloadError):
    """A message body cannot be decoded: truncated, corrupt, or not a dspex-jobs frame."""

    code = "payload_decode_error"


class ProtocolVersionError(PayloadDecodeError):
    """A frame uses a version, codec, compression or type this dspex-jobs does not know.

    It was written by a newer dspex-jobs: upgrade the workers (and readers) to decode it.
    """

    code = "protocol_version_unknown"


class ClaimCheckMissing(PayloadError):
    """A large payload stored in Redis (a claim check) is gone: its TTL passed or it was deleted.

    Resubmit the job; raise ``DSPEX_RESULT_TTL_S`` if jobs wait in the queue longer than it.
    """

    code = "claim_check_missing"


class SessionError(DSPexError):
    """A session cannot be used as asked."""

    code = "session_error"


class SessionNotFound(SessionError):
    """The session ended or its TTL expired: start a new one."""

    code = "session_not_found"


class SessionStateTooLarge(SessionError):
    """A write would make the session's state exceed DSPEX_SESSION_MAX_STATE_BYTES."""

    code = "session_state_too_large"


class SessionWorkerUnavailable(SessionError):
    """Strict affinity, and the worker the session is bound to has no heartbeat."""

    code = "session_worker_unavailable"


class SessionBusy(SessionError):
    """The session is running a job and the new one was submitted with
    ``multitask="reject"``: nothing was enqueued. Submit again later, or choose
    ``enqueue``, ``interrupt`` or ``rollback`` (see :mod:`dspex_jobs.multitask`)."""

    code = "session_busy"


class JobError(DSPexError):
    """The job was accepted but did not produce a result."""

    code = "job_error"

    def __init__(self, message: str = "", job_id: str | None = None, **details: Any) -> None:
        super().__init__(message, **details)
        self.job_id = job_id


class LMError(JobError):
    """The language model call failed; subclasses say whether retrying can help."""

    code = "lm_error"


class LMRateLimited(LMError):
    """The provider answered 429. ``retry_after_s`` is its hint, when it gave one."""

    code = "lm_rate_limited"
    retryable = True

    def __init__(
        self,
        message: str = "",
        job_id: str | None = None,
        retry_after_s: float | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message, job_id=job_id, retry_after_s=retry_after_s, **details)
        self.retry_after_s = retry_after_s


class LMTimeout(LMError):
    """The provider did not answer in time."""

    code = "lm_timeout"
    retryable = True


class LMUnavailable(LMError):
    """The provider failed (5xx) or could not be reached."""

    code = "lm_unavailable"
    retryable = True


class CircuitOpen(LMRateLimited):
    """The endpoint's shared circuit breaker is open: the call was not even tried.

    A subclass of :class:`LMRateLimited` so that retry policies wait ``retry_after_s`` (the
    time until the breaker probes the endpoint again) before trying.
    """

    code = "circuit_open"


class LMAuthError(LMError):
    """The provider refused the credentials: fix DSPEX_LM_API_KEY."""

    code = "lm_auth_error"


class LMBadRequest(LMError):
    """The provider refused the request itself (bad model name, context too long)."""

    code = "lm_bad_request"


class JobTimeout(JobError):
    """The job's result did not arrive within the time the caller waited."""

    code = "job_timeout"
    retryable = True


class JobCancelled(JobError):
    """The job was cancelled (``handle.cancel()``) before or while it ran."""

    code = "job_cancelled"


class DeadlineExceeded(JobError):
    """The job's deadline passed before a worker could start it (it was not run), or the
    job ran past its deadline or its worker's time limit (it was stopped and its outputs,
    if they come, are discarded: :mod:`dspex_jobs.deadlines`)."""

    code = "deadline_exceeded"


class WorkerLost(JobError):
    """The worker process died while running the job."""

    code = "worker_lost"
    retryable = True


class JobFailed(JobError):
    """The job raised something that has no more specific class."""

    code = "job_failed"


def _all_subclasses(cls: type[DSPexError]) -> list[type[DSPexError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found.extend(_all_subclasses(sub))
    return found


def error_from_payload(payload: dict[str, Any], job_id: str | None = None) -> DSPexError:
    """Rebuild the typed error a worker stored, so ``result()`` raises the same class.

    Unknown codes (from a newer worker) become :class:`JobFailed` with the original code kept
    in ``details["code"]``.
    """
    by_code = {cls.code: cls for cls in _all_subclasses(DSPexError)}
    code = str(payload.get("code", JobFailed.code))
    message = str(payload.get("message", ""))
    details = dict(payload.get("details") or {})
    cls = by_code.get(code)
    if cls is None:
        return JobFailed(message, job_id=job_id, code=code, **details)
    error: DSPexError
    if issubclass(cls, SignatureValidationError):
        error = cls(list(details.get("errors", [])), message)
    elif issubclass(cls, SignatureError):
        error = cls(message)
    elif issubclass(cls, JobError):
        error = cls(message, job_id=job_id, **details)
    else:
        error = cls(message, **details)
    error.message = message
    return error


class TemplateError(ValidationError):
    """A prompt template does not compile, uses a forbidden construct, or names a variable that is
    not a field of the job's signature. Nothing was enqueued.

    Args:
        message: What is wrong and where; usually ends with the template line and a caret.
        line: 1-based line of the fault in the template source, when known.
        column: 1-based column of the fault, when known.
    """

    code = "template_error"

    def __init__(
        self,
        message: str = "",
        line: int | None = None,
        column: int | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message, line=line, column=column, **details)
        self.line = line
        self.column = column


class TemplateRenderError(TemplateError):
    """Rendering a template failed: a value is missing, the output or a loop went over its limit,
    or the template tried to reach something it may not (an attribute, a callable)."""

    code = "template_render_error"


class NoImplementation(ValidationError):
    """No implementation of an operation fits the request: the operation is unknown, the forced
    implementation does not exist, or every candidate declared it cannot handle the request."""

    code = "no_implementation"


class DuplicateImplementation(ConfigurationError):
    """An implementation name is registered twice for one operation; pass ``replace=True`` to
    replace it on purpose."""

    code = "duplicate_implementation"


class UnsupportedOperation(DSPexError):
    """An implementation cannot handle this particular request (a type, an option); the router
    tries the operation's next implementation instead of failing."""

    code = "unsupported_operation"


class NeuralModelError(ConfigurationError):
    """The embedding model cannot be loaded (a wrong DSPEX_NEURAL_MODEL_PATH, a missing package),
    or DSPEX_NEURAL_DEVICE=cuda names a GPU this machine does not have."""

    code = "neural_model_error"


class NeuralInputError(ValidationError):
    """An embedding or index job's texts, ids, metadata or options are wrong: an empty list, a
    value that is not a string, too many texts, a malformed index name. ``details`` name the
    ``field`` and, for one bad item, its ``position``."""

    code = "neural_input_error"


class TextTooLong(NeuralInputError):
    """A text is longer than DSPEX_NEURAL_MAX_TEXT_CHARS; split it into passages first."""

    code = "text_too_long"


class VectorIndexError(DSPexError):
    """A vector index cannot be used as asked."""

    code = "vector_index_error"


class IndexNotFound(VectorIndexError):
    """No index has this name: an index is created by its first ``add``, gone after ``drop``."""

    code = "index_not_found"


class IndexFull(VectorIndexError):
    """An add would take the index past DSPEX_NEURAL_INDEX_MAX_DOCS; nothing was added.

    Delete documents, split the corpus over several indexes, or raise the limit (every neural
    worker holds each index it searches in memory).
    """

    code = "index_full"


class IndexMismatch(VectorIndexError):
    """The index was built by another embedding model (its name or vector size differ from this
    worker's): vectors of two models cannot be compared. Use another index, or the same model."""

    code = "index_mismatch"


class PipelineValidationError(ValidationError):
    """A pipeline is wrong and was not run: a step reads a field that neither the pipeline's
    inputs nor an earlier step provides, two parallel branches write one field without a merge
    rule, or a document names an unknown step type, DSPy module or operation. ``details`` name
    the ``step`` and, where one is at fault, the ``field``."""

    code = "pipeline_validation_error"


class PipelineStepFailed(JobError):
    """A pipeline step failed and its policy (``fail``, or retries exhausted) ended the run.

    ``step`` names the step; ``cause`` is the step's own error (``code``, ``message``), also in
    ``details``. The producer sees this as soon as the step fails, even while parallel branches
    still run.
    """

    code = "pipeline_step_failed"

    def __init__(self, message: str = "", job_id: str | None = None, **details: Any) -> None:
        super().__init__(message, job_id=job_id, **details)
        self.step: str | None = details.get("step")
        self.cause: dict[str, Any] = dict(details.get("cause") or {})


class StepTimeout(JobError):
    """A pipeline step ran longer than its ``timeout_s`` (or than what was left of the pipeline's
    deadline); its outputs, if they ever come, are discarded. Retryable under ``retry``."""

    code = "step_timeout"
    retryable = True


class PipelineDeadlineExceeded(DeadlineExceeded):
    """A pipeline was still running at its deadline (``timeout_s``): the steps that had not
    started were not run, and running ones were asked to stop."""

    code = "pipeline_deadline_exceeded"


class OptimizeRequestError(ValidationError):
    """An optimization request is wrong: an unknown optimizer or argument, a metric that is not
    registered, a dataset file that does not parse or a row without the program's fields.
    ``details`` name the ``field`` (and the ``row``, 0-based, for dataset rows)."""

    code = "optimize_request_error"


class ProgramError(DSPexError):
    """A registered program cannot be used as asked."""

    code = "program_error"


class ProgramNotFound(ProgramError):
    """No program of that name, or it has no such version or alias (``qa@7``,
    ``qa@production`` before any promote). ``dspex-jobs programs ls`` lists what exists."""

    code = "program_not_found"


class ProgramLoadError(ProgramError):
    """A stored version does not load: its program class is not registered on this worker, or
    the class changed so that the saved state no longer fits it (compare the version's
    ``code_version`` with the worker's)."""

    code = "program_load_error"


class OptimizeTimeLimit(JobError):
    """An optimization ran past its time limit (``time_limit_s``, else
    ``DSPEX_OPTIMIZER_TIME_LIMIT_S``) and was stopped at its next metric call; nothing was
    stored and no alias moved."""

    code = "optimize_time_limit"
