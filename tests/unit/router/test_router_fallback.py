"""Fallback: which failures move on, what is recorded, counted and emitted, and what is not."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from dspex_jobs import telemetry
from dspex_jobs.errors import (
    DSPexError,
    LMAuthError,
    LMRateLimited,
    SignatureValidationError,
    UnsupportedOperation,
    ValidationError,
)
from dspex_jobs.router import (
    FALLBACK_EVENT,
    ROUTE_EVENT,
    Attempt,
    FallbackReason,
    ImplementationKind,
    ImplementationStats,
    Registry,
    Router,
    fallback_reason,
)

Event = tuple[str, dict[str, float], dict[str, Any]]

FAILURES: dict[str, BaseException] = {}
"""What the ``flaky`` implementation raises, per test."""


def flaky(x: int) -> int:
    raise FAILURES["flaky"]


def steady(x: int) -> int:
    return x * 2


@pytest.fixture
def events() -> Iterator[list[Event]]:
    seen: list[Event] = []

    def handle(name: str, measurements: Mapping[str, float], metadata: Mapping[str, Any]) -> None:
        seen.append((name, dict(measurements), dict(metadata)))

    telemetry.attach("test-router-events", "dspex.router.*", handle)
    yield seen
    telemetry.detach("test-router-events")


def make_router(error: BaseException) -> Router:
    FAILURES["flaky"] = error
    registry = Registry()
    registry.register("math.double", flaky, name="flaky")
    registry.register("math.double", steady, kind="dspy")
    return Router(registry)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (UnsupportedOperation("no complex numbers"), FallbackReason.UNSUPPORTED),
        (NotImplementedError("later"), FallbackReason.UNSUPPORTED),
        (LMRateLimited("slow down", retry_after_s=1.0), FallbackReason.RETRYABLE),
        (TimeoutError("took too long"), FallbackReason.RETRYABLE),
        (ConnectionError("refused"), FallbackReason.RETRYABLE),
    ],
)
def test_unsupported_and_retryable_failures_fall_back(
    error: BaseException, reason: FallbackReason, events: list[Event]
) -> None:
    # Given a first choice that fails this way
    router = make_router(error)
    # When the operation is called
    outcome = router.run("math.double", 21)
    # Expect the next implementation to answer, and the fallback to be recorded
    assert outcome.value == 42 and outcome.fell_back
    assert outcome.implementation.name == "dspy" and outcome.route.implementation.name == "flaky"
    (attempt,) = outcome.attempts
    assert attempt.implementation == "flaky" and attempt.reason is reason
    assert attempt.kind is ImplementationKind.NATIVE and attempt.duration_s >= 0
    code = error.code if isinstance(error, DSPexError) else type(error).__name__
    assert attempt.error_code == code
    # ... and reported: one fallback event, then the route event
    assert [e[0] for e in events] == [FALLBACK_EVENT, ROUTE_EVENT]
    fallback, route = events
    assert fallback[2] == {
        "operation": "math.double",
        "implementation": "flaky",
        "next": "dspy",
        "reason": reason.value,
        "error_code": code,
    }
    assert route[2]["fell_back"] is True and route[2]["implementation"] == "dspy"
    assert route[2]["chosen"] == "flaky" and route[2]["fallback_reasons"] == [reason.value]
    assert route[2]["ok"] is True and route[2]["call"] is True and route[2]["kind"] == "dspy"
    assert set(route[1]) == {"duration_s", "total_s"} and route[1]["total_s"] >= 0
    # ... and counted
    stats = router.stats()["math.double"]
    assert stats["flaky"] == ImplementationStats(routed=1, fell_back=1)
    assert stats["dspy"] == ImplementationStats(succeeded=1)
    assert router.metrics.fallback_reasons() == {("math.double", "flaky", reason.value): 1}


@pytest.mark.parametrize(
    "error",
    [
        ValidationError("bad job"),
        SignatureValidationError([{"field": "x", "message": "missing"}]),
        LMAuthError("wrong key"),  # permanent
        ValueError("a bug"),  # not ours: seen, not papered over
    ],
)
def test_validation_permanent_and_unknown_errors_never_fall_back(
    error: Exception, events: list[Event]
) -> None:
    router = make_router(error)
    with pytest.raises(type(error)):
        router.call("math.double", 1)
    assert router.stats()["math.double"] == {"flaky": ImplementationStats(routed=1, failed=1)}
    ((name, _, metadata),) = events
    assert name == ROUTE_EVENT and metadata["ok"] is False and metadata["fell_back"] is False
    assert metadata["error_code"] == (
        error.code if isinstance(error, DSPexError) else type(error).__name__
    )


def test_when_every_implementation_fails_the_last_error_carries_the_attempts(
    events: list[Event],
) -> None:
    # Given two implementations that both fail in a fallback-eligible way
    FAILURES["flaky"] = UnsupportedOperation("cannot")
    registry = Registry()
    registry.register("math.double", flaky, name="flaky")
    registry.register("math.double", flaky, name="also_flaky")
    router = Router(registry)
    # When called
    with pytest.raises(UnsupportedOperation) as caught:
        router.call("math.double", 1)
    # Expect the error to list both attempts, the last one without a fallback reason
    attempts = caught.value.details["attempts"]
    assert [a["implementation"] for a in attempts] == ["flaky", "also_flaky"]
    assert [a["reason"] for a in attempts] == ["unsupported", None]
    assert any("every implementation of 'math.double' failed" in n for n in caught.value.__notes__)
    assert router.stats()["math.double"]["also_flaky"].failed == 1
    assert events[-1][2]["implementation"] == "also_flaky"
    assert events[-1][2]["fell_back"] is True and events[-1][2]["ok"] is False
    FAILURES.pop("flaky")


def test_a_custom_policy_decides_what_falls_back() -> None:
    FAILURES["flaky"] = ValueError("flaky network, as a ValueError")
    registry = Registry()
    registry.register("math.double", flaky, name="flaky")
    registry.register("math.double", steady, name="steady")

    def lenient(error: BaseException) -> FallbackReason | None:
        return FallbackReason.RETRYABLE if isinstance(error, ValueError) else None

    assert Router(registry, fallback_policy=lenient).call("math.double", 4) == 8
    with pytest.raises(ValueError):
        Router(registry).call("math.double", 4)


def test_route_alone_emits_a_decision_event_and_counts_it(events: list[Event]) -> None:
    router = make_router(UnsupportedOperation("x"))
    route = router.route("math.double")
    ((name, measurements, metadata),) = events
    assert name == ROUTE_EVENT and measurements["duration_s"] >= 0
    assert metadata == {
        "operation": "math.double",
        "implementation": "flaky",
        "chosen": "flaky",
        "kind": "native",
        "queue": None,
        "fell_back": False,
        "fallback_reasons": [],
        "call": False,
        "ok": True,
        "error_code": None,
    }
    assert route.implementation.name == "flaky"
    assert router.stats()["math.double"]["flaky"].routed == 1
    router.metrics.reset()
    assert router.stats() == {}


def test_nothing_is_emitted_without_handlers_but_counters_still_count() -> None:
    router = make_router(UnsupportedOperation("x"))
    assert not telemetry.has_handlers(ROUTE_EVENT)
    assert router.call("math.double", 5) == 10
    router.route("math.double")
    assert router.stats()["math.double"]["flaky"] == ImplementationStats(routed=2, fell_back=1)


def test_router_options_are_keyword_only_and_reach_the_strategy() -> None:
    router = make_router(UnsupportedOperation("x"))
    outcome = router.run("math.double", 3, implementation="dspy")
    assert outcome.value == 6 and not outcome.fell_back and outcome.attempts == ()


def test_attempts_serialize_for_error_details() -> None:
    attempt = Attempt(
        "a", ImplementationKind.DSPY, "lm_timeout", "slow", FallbackReason.RETRYABLE, 0.5
    )
    assert attempt.to_dict() == {
        "implementation": "a",
        "kind": "dspy",
        "error_code": "lm_timeout",
        "message": "slow",
        "reason": "retryable",
        "duration_s": 0.5,
    }


def test_default_policy_table() -> None:
    assert fallback_reason(UnsupportedOperation()) is FallbackReason.UNSUPPORTED
    assert fallback_reason(LMRateLimited()) is FallbackReason.RETRYABLE
    assert fallback_reason(ValidationError()) is None
    assert fallback_reason(KeyError("x")) is None


def test_run_with_fallback_works_without_callbacks_and_notes_foreign_errors() -> None:
    from dspex_jobs.router.fallback import run_with_fallback

    FAILURES["flaky"] = TimeoutError("slow")
    registry = Registry()
    registry.register("math.double", flaky, name="flaky")
    registry.register("math.double", steady, name="steady")
    route = Router(registry).route("math.double")
    assert run_with_fallback(route, (2,), {}) == (4, route.fallbacks[0])
    registry.register("math.double", flaky, name="steady", replace=True)
    route = Router(registry).route("math.double")
    with pytest.raises(TimeoutError) as caught:
        run_with_fallback(route, (2,), {})
    assert "every implementation of 'math.double' failed" in caught.value.__notes__[0]
