from __future__ import annotations

import pytest

from dspex_jobs import errors
from dspex_jobs.errors import (
    DSPexError,
    JobFailed,
    LMAuthError,
    LMRateLimited,
    SignatureError,
    SignatureValidationError,
    error_from_payload,
)


def _all(cls: type[DSPexError]) -> list[type[DSPexError]]:
    return [cls, *[c for sub in cls.__subclasses__() for c in _all(sub)]]


def test_every_error_has_a_unique_stable_code() -> None:
    classes = _all(DSPexError)
    codes = [c.code for c in classes]
    assert len(codes) == len(set(codes)), codes
    assert {c.__name__ for c in classes} <= set(errors.__all__)


@pytest.mark.parametrize(
    ("cls", "retryable"),
    [
        (errors.LMRateLimited, True),
        (errors.LMTimeout, True),
        (errors.LMUnavailable, True),
        (errors.WorkerLost, True),
        (errors.LMAuthError, False),
        (errors.LMBadRequest, False),
        (errors.ValidationError, False),
        (errors.SignatureError, False),
    ],
)
def test_retryable_flags(cls: type[DSPexError], retryable: bool) -> None:
    assert cls.retryable is retryable


@pytest.mark.parametrize(
    "cls", [c for c in _all(DSPexError) if c not in (SignatureError, SignatureValidationError)]
)
def test_stored_errors_come_back_as_the_same_class(cls: type[DSPexError]) -> None:
    error = cls("something broke")
    rebuilt = error_from_payload(error.to_payload(), job_id="j1")
    assert type(rebuilt) is cls
    assert rebuilt.message == "something broke"
    assert rebuilt.code == cls.code


def test_rate_limit_keeps_retry_after() -> None:
    rebuilt = error_from_payload(LMRateLimited("slow down", retry_after_s=2.5).to_payload())
    assert isinstance(rebuilt, LMRateLimited)
    assert rebuilt.retry_after_s == 2.5


def test_input_errors_keep_every_field() -> None:
    error = SignatureValidationError(
        [{"field": "a", "message": "missing"}, {"field": "b", "message": "not a list"}]
    )
    assert "a: missing" in str(error) and "b: not a list" in str(error)
    rebuilt = error_from_payload(error.to_payload())
    assert isinstance(rebuilt, SignatureValidationError)
    assert [e["field"] for e in rebuilt.errors] == ["a", "b"]


def test_signature_error_shows_a_caret_under_the_fault() -> None:
    error = SignatureError("expected '->'", text="a, b c", position=5)
    assert isinstance(error, ValueError)
    assert str(error).splitlines()[-1].index("^") - 2 == 5


def test_unknown_code_from_a_newer_worker_becomes_job_failed() -> None:
    rebuilt = error_from_payload({"code": "from_the_future", "message": "?"}, job_id="j")
    assert isinstance(rebuilt, JobFailed)
    assert rebuilt.details["code"] == "from_the_future"
    assert not isinstance(rebuilt, LMAuthError)
