"""dspex-jobs: run DSPy signatures and pipelines as Celery jobs on Redis.

Producers import this package; it never imports DSPy, LiteLLM or torch (workers do, in
:mod:`dspex_jobs.runtime`).

Example:
    >>> from dspex_jobs import Client                                       # doctest: +SKIP
    >>> with Client() as client:                                            # doctest: +SKIP
    ...     handle = client.predict("question -> answer", question="What is DSPy?")
    ...     print(handle.result(timeout=60).outputs["answer"])
"""

# Lazy exports (PEP 562): a producer's start-up time is what `import dspex_jobs` costs, and the
# eager imports of every submodule (Celery, the optimizer and batch parts, pydantic models)
# cost ~0.4 s even for a script that only enqueues. Each public name is imported from its
# submodule on first use, so `import dspex_jobs` is nearly free and `from dspex_jobs import
# Client` pays only for what a Client needs. Type checkers and IDEs read the real imports
# under TYPE_CHECKING; tests/unit/test_import_light.py keeps them, the table below and
# `__all__` in step.

from typing import TYPE_CHECKING

from dspex_jobs._version import __version__ as __version__

if TYPE_CHECKING:
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

_SUBMODULE_EXPORTS: dict[str, tuple[str, ...]] = {
    ".batch": ("BatchProgress", "BatchReport"),
    ".client": ("Client", "JobHandle"),
    ".errors": (
        "BrokerUnavailable",
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
        "RedisAuthError",
        "RedisTLSError",
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
    ),
    ".jobs": ("Job", "JobKind", "LMOptions"),
    ".neural": ("AddResult", "Embeddings", "IndexInfo", "SearchHit", "VectorIndex"),
    ".optimize": ("OPTIMIZERS", "Progress"),
    ".optimize.handle": ("OptimizeHandle",),
    ".optimize.metrics": ("register_metric",),
    ".programs": (
        "ProgramRef",
        "ProgramRegistry",
        "ProgramSpec",
        "ProgramVersion",
        "program_class",
    ),
    ".results": ("JobErrorInfo", "JobResult", "JobStatus", "Timings"),
    ".sessions": ("Session", "SessionState"),
    ".settings": ("Settings",),
    ".signature": ("Signature",),
    ".streams": ("StreamChunk", "StreamEnd"),
}
"""The public names, by the submodule (relative to this package) that defines them."""

_EXPORTS: dict[str, str] = {
    name: module for module, names in _SUBMODULE_EXPORTS.items() for name in names
}
"""Each public name to its submodule: what :func:`__getattr__` imports on first use."""

if not TYPE_CHECKING:  # hidden from type checkers, so a misspelt name stays a type error

    def __getattr__(name: str) -> object:
        """Import a public name from its submodule on first use, then keep it here."""
        module = _EXPORTS.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        import importlib

        value = getattr(importlib.import_module(module, __name__), name)
        globals()[name] = value  # later lookups are plain attribute reads
        return value


def __dir__() -> list[str]:
    """What the module holds now plus every public name, loaded or not."""
    return sorted((set(globals()) | set(__all__)) - {"TYPE_CHECKING"})


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
