"""Map what DSPy and LiteLLM raise onto our error tree, so retries read one flag.

DSPy 3.4 wraps provider failures in its own ``LMError`` family (``dspy.utils.exceptions``);
we map that family by class. LiteLLM exceptions that escape unwrapped are mapped by name, so
this module does not depend on LiteLLM's import path.
"""

from __future__ import annotations

from dspy.utils import exceptions as dspy_errors

from dspex_jobs.errors import (
    DSPexError,
    JobFailed,
    LMAuthError,
    LMBadRequest,
    LMError,
    LMRateLimited,
    LMTimeout,
    LMUnavailable,
)

__all__ = ["map_exception"]

_BY_DSPY_CLASS: tuple[tuple[type[BaseException], type[LMError]], ...] = (
    (dspy_errors.LMRateLimitError, LMRateLimited),
    (dspy_errors.LMTimeoutError, LMTimeout),
    (dspy_errors.LMServerError, LMUnavailable),
    (dspy_errors.LMTransportError, LMUnavailable),
    (dspy_errors.LMLockTimeoutError, LMUnavailable),
    (dspy_errors.LMAuthError, LMAuthError),
    (dspy_errors.LMBillingError, LMAuthError),
    (dspy_errors.LMInvalidRequestError, LMBadRequest),
    (dspy_errors.LMConfigurationError, LMBadRequest),
)

_BY_LITELLM_NAME: dict[str, type[LMError]] = {
    "RateLimitError": LMRateLimited,
    "Timeout": LMTimeout,
    "APITimeoutError": LMTimeout,
    "InternalServerError": LMUnavailable,
    "ServiceUnavailableError": LMUnavailable,
    "APIConnectionError": LMUnavailable,
    "BadGatewayError": LMUnavailable,
    "AuthenticationError": LMAuthError,
    "PermissionDeniedError": LMAuthError,
    "BadRequestError": LMBadRequest,
    "NotFoundError": LMBadRequest,
    "ContextWindowExceededError": LMBadRequest,
}


def map_exception(exc: BaseException, job_id: str | None = None) -> DSPexError:
    """The typed error for anything a DSPy module raised while running a job."""
    if isinstance(exc, DSPexError):
        return exc
    message = f"{type(exc).__name__}: {exc}"
    for dspy_cls, ours in _BY_DSPY_CLASS:
        if isinstance(exc, dspy_cls):
            return _lm_error(ours, message, job_id, exc)
    for cls in type(exc).__mro__:
        ours_by_name = _BY_LITELLM_NAME.get(cls.__name__)
        if ours_by_name is not None:
            return _lm_error(ours_by_name, message, job_id, exc)
    if isinstance(exc, dspy_errors.AdapterParseError):
        return JobFailed(
            f"the LM's answer did not match the signature's output fields: {exc}",
            job_id=job_id,
            reason="adapter_parse_error",
        )
    return JobFailed(message, job_id=job_id)


def _lm_error(cls: type[LMError], message: str, job_id: str | None, exc: BaseException) -> LMError:
    status = getattr(exc, "status", None) or getattr(exc, "status_code", None)
    details = {"status": status} if isinstance(status, int) else {}
    if cls is LMRateLimited:
        retry_after = getattr(exc, "retry_after", None)
        return LMRateLimited(
            message,
            job_id=job_id,
            retry_after_s=float(retry_after) if isinstance(retry_after, int | float) else None,
            **details,
        )
    return cls(message, job_id=job_id, **details)
