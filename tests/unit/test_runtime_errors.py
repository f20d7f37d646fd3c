"""DSPy's LM error family maps onto ours, so the retry policy reads one flag."""

from __future__ import annotations

import pytest
from dspy.utils import exceptions as dspy_errors

from dspex_jobs.errors import (
    DSPexError,
    JobFailed,
    LMAuthError,
    LMBadRequest,
    LMRateLimited,
    LMTimeout,
    LMUnavailable,
)
from dspex_jobs.runtime.errors import map_exception


@pytest.mark.parametrize(
    ("raised", "expected", "retryable"),
    [
        (dspy_errors.LMRateLimitError("slow down", retry_after=3.0), LMRateLimited, True),
        (dspy_errors.LMTimeoutError("took too long"), LMTimeout, True),
        (dspy_errors.LMServerError("500", status=500), LMUnavailable, True),
        (dspy_errors.LMTransportError("refused"), LMUnavailable, True),
        (dspy_errors.LMAuthError("bad key", status=401), LMAuthError, False),
        (dspy_errors.LMInvalidRequestError("no such model"), LMBadRequest, False),
        (dspy_errors.ContextWindowExceededError(message="too long"), LMBadRequest, False),
        (ValueError("anything else"), JobFailed, False),
    ],
)
def test_dspy_errors_map_to_typed_errors(
    raised: Exception, expected: type[DSPexError], retryable: bool
) -> None:
    mapped = map_exception(raised, job_id="j1")
    assert type(mapped) is expected
    assert mapped.retryable is retryable
    assert type(raised).__name__ in mapped.message


def test_rate_limit_keeps_the_providers_retry_after() -> None:
    mapped = map_exception(dspy_errors.LMRateLimitError("429", retry_after=7, status=429))
    assert isinstance(mapped, LMRateLimited)
    assert mapped.retry_after_s == 7.0
    assert mapped.details["status"] == 429


def test_litellm_style_exceptions_map_by_name() -> None:
    class RateLimitError(Exception):
        status_code = 429

    mapped = map_exception(RateLimitError("quota"))
    assert isinstance(mapped, LMRateLimited)


def test_our_own_errors_pass_through() -> None:
    error = LMAuthError("nope")
    assert map_exception(error) is error
