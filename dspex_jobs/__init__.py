"""dspex-jobs: run DSPy signatures and pipelines as Celery jobs on Redis.

Producers import this package; it never imports DSPy, LiteLLM or torch (workers do, in
:mod:`dspex_jobs.runtime`).

Example:
    >>> from dspex_jobs import Client                                       # doctest: +SKIP
    >>> with Client() as client:                                            # doctest: +SKIP
    ...     handle = client.predict("question -> answer", question="What is DSPy?")
    ...     print(handle.result(timeout=60).outputs["answer"])
"""

from dspex_jobs._version import __version__ as __version__
from dspex_jobs.batch import BatchProgress, BatchReport
from dspex_jobs.client import Client, JobHandle
from dspex_jobs.errors import (
    BrokerUnavailable,
    CircuitOpen,
    ConfigurationError,
    DeadlineExceeded,
    DSPexError,
    DuplicateImplementation,
    IndexFull,
    IndexMismatch,
    IndexNotFound,
    JobCancelled,
    JobError,
    JobFailed,
    JobTimeout,
    LMAuthError,
    LMBadRequest,
    LMError,
    LMRateLimited,
    LMServerStartError,
    LMTimeout,
    LMUnavailable,
    NeuralInputError,
    NeuralModelError,
    NoImplementation,
    OptimizeRequestError,
    OptimizeTimeLimit,
    PayloadError,
    PayloadTooLarge,
    ProgramError,
    ProgramLoadError,
    ProgramNotFound,
    RedisAuthError,
    RedisTLSError,
    SessionBusy,
    SessionError,
    SessionNotFound,
    SessionStateTooLarge,
    SessionWorkerUnavailable,
    SignatureError,
    SignatureValidationError,
    TemplateError,
    TemplateRenderError,
    TextTooLong,
    UnknownJobKind,
    UnsupportedOperation,
    ValidationError,
    VectorIndexError,
    WorkerLost,
)
from dspex_jobs.jobs import Job, JobKind, LMOptions
from dspex_jobs.neural import AddResult, Embeddings, IndexInfo, SearchHit, VectorIndex
from dspex_jobs.optimize import OPTIMIZERS, Progress
from dspex_jobs.optimize.handle import OptimizeHandle
from dspex_jobs.optimize.metrics import register_metric
from dspex_jobs.programs import (
    ProgramRef,
    ProgramRegistry,
    ProgramSpec,
    ProgramVersion,
    program_class,
)
from dspex_jobs.results import JobErrorInfo, JobResult, JobStatus, Timings
from dspex_jobs.sessions import Session, SessionState
from dspex_jobs.settings import Settings
from dspex_jobs.signature import Signature
from dspex_jobs.streams import StreamChunk, StreamEnd

__all__ = [
    # Producing and following jobs
    "Client",
    "JobHandle",
    "Settings",
    # Jobs and results
    "Job",
    "JobErrorInfo",
    "JobKind",
    "JobResult",
    "JobStatus",
    "LMOptions",
    "Timings",
    # Streaming and sessions
    "Session",
    "SessionState",
    "StreamChunk",
    "StreamEnd",
    # Signatures
    "Signature",
    # Embeddings and vector search (the neural queue)
    "AddResult",
    "Embeddings",
    "IndexInfo",
    "SearchHit",
    "VectorIndex",
    # Programs, optimization and batch inference (the optimizer queue)
    "BatchProgress",
    "BatchReport",
    "OPTIMIZERS",
    "OptimizeHandle",
    "Progress",
    "ProgramRef",
    "ProgramRegistry",
    "ProgramSpec",
    "ProgramVersion",
    "program_class",
    "register_metric",
    # Errors
    "BrokerUnavailable",
    "RedisAuthError",
    "RedisTLSError",
    "CircuitOpen",
    "ConfigurationError",
    "DeadlineExceeded",
    "DSPexError",
    "DuplicateImplementation",
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
    "PayloadError",
    "PayloadTooLarge",
    "ProgramError",
    "ProgramLoadError",
    "ProgramNotFound",
    "SessionBusy",
    "SessionError",
    "SessionNotFound",
    "SessionStateTooLarge",
    "SessionWorkerUnavailable",
    "SignatureError",
    "SignatureValidationError",
    "TemplateError",
    "TemplateRenderError",
    "TextTooLong",
    "UnknownJobKind",
    "UnsupportedOperation",
    "ValidationError",
    "VectorIndexError",
    "WorkerLost",
]
