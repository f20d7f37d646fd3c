"""Failure policies, predicates, merge rules and the step watcher, on their own."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from dspex_jobs.errors import PipelineDeadlineExceeded, PipelineValidationError, StepTimeout
from dspex_jobs.pipeline import Dspy, Fail, Fallback, Predicate, Retry, Skip
from dspex_jobs.pipeline.document import step_from_dict
from dspex_jobs.pipeline.execute import StepStopped, run_watched
from dspex_jobs.pipeline.merge import merge_values
from dspex_jobs.pipeline.policy import MAX_BACKOFF_S, parse_policy

# -- policies ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (None, Fail()),
        ("fail", Fail()),
        ("skip", Skip()),
        ({"skip": {"defaults": {"tags": []}}}, Skip({"tags": []})),
        ({"retry": 3, "backoff_s": 0.25}, Retry(3, 0.25)),
        ({"retry": 2, "then": "skip"}, Retry(2, 1.0, Skip())),
    ],
)
def test_policies_read_from_documents_and_write_back(document: Any, expected: Any) -> None:
    policy = parse_policy(document, "s", step_from_dict)
    assert policy == expected
    if document is not None:
        assert parse_policy(policy.to_dict(), "s", step_from_dict) == expected


def test_a_fallback_policy_reads_its_step() -> None:
    policy = parse_policy(
        {"fallback": {"dspy": "Predict", "signature": "q -> a"}}, "s", step_from_dict
    )
    assert isinstance(policy, Fallback) and isinstance(policy.step, Dspy)
    assert policy.to_dict() == {"fallback": {"dspy": "Predict", "signature": "q -> a"}}


def test_retry_backs_off_exponentially_up_to_a_cap() -> None:
    retry = Retry(5, backoff_s=1.0)
    assert [retry.delay_s(n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert Retry(10, backoff_s=20.0).delay_s(4) == MAX_BACKOFF_S


@pytest.mark.parametrize(
    "document",
    [
        {"retry": 0},
        {"retry": 11},
        {"retry": 2, "backoff_s": -1},
        {"retry": "many"},
        {"retry": 1, "then": {"retry": 1}},
        {"skip": {"other": 1}},
        {"explode": True},
        42,
    ],
)
def test_bad_policies_are_refused(document: Any) -> None:
    with pytest.raises(PipelineValidationError):
        parse_policy(document, "s", step_from_dict)


# -- predicates -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "context", "holds"),
    [
        ("confidence >= 0.5", {"confidence": 0.7}, True),
        ("confidence >= 0.5", {"confidence": 0.2}, False),
        ('label == "billing"', {"label": "billing"}, True),
        ('label in ["a", "b"]', {"label": "c"}, False),
        ('label not in ["a", "b"]', {"label": "c"}, True),
        ("len(passages) > 0", {"passages": ["x"]}, True),
        ("len(passages) > 0", {}, False),
        ("needs_search", {"needs_search": True}, True),
        ("not needs_search", {}, True),
        ("retrieve.count > 1", {"retrieve": {"count": 2}}, True),
        ("count > 1", {"count": "many"}, False),  # a type mismatch does not hold
    ],
)
def test_predicates_evaluate_on_the_context(
    text: str, context: dict[str, Any], holds: bool
) -> None:
    predicate = Predicate.parse(text)
    assert predicate.evaluate(context) is holds
    assert Predicate.parse(predicate.to_text()) == predicate


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os')",
        "a >= ",
        "x > y",
        "len(a",
        "a == 'single quotes'",
        "a ~ 1",
    ],
)
def test_predicates_that_are_not_comparisons_are_refused(text: str) -> None:
    with pytest.raises(PipelineValidationError):
        Predicate.parse(text)


# -- merge rules ------------------------------------------------------------------------------


def test_merge_rules_combine_branch_values_in_branch_order() -> None:
    context = {"a": {"tags": ["x", "y"]}, "b": {"tags": ["y", "z"]}, "c": {}}
    rules = {
        "listed": ["list", ["a", "b", "c"]],
        "joined": ["concat", ["a", "b"]],
        "unique": ["unique", ["a", "b"]],
        "first": ["first", ["c", "b", "a"]],
    }
    merged = merge_values(
        {k: [r, s] for k, (r, s) in rules.items()},
        {step: {k: v["tags"] for k in rules} if v else {} for step, v in context.items()},
    )
    assert merged == {
        "listed": [["x", "y"], ["y", "z"]],
        "joined": ["x", "y", "y", "z"],
        "unique": ["x", "y", "z"],
        "first": ["y", "z"],
    }


# -- the watcher that enforces timeouts, deadlines and cancellation --------------------------


def test_run_watched_returns_the_value_or_raises_the_error() -> None:
    assert run_watched(lambda: 42) == 42
    with pytest.raises(KeyError):
        run_watched(lambda: {}["missing"])


def test_run_watched_gives_up_on_timeout_deadline_and_stop() -> None:
    release = threading.Event()

    def stuck() -> None:
        release.wait(10)

    try:
        with pytest.raises(StepTimeout):
            run_watched(stuck, timeout_s=0.05, poll_s=0.01)
        with pytest.raises(PipelineDeadlineExceeded):
            run_watched(stuck, deadline_at=time.time() + 0.05, poll_s=0.01)
        with pytest.raises(StepStopped, match="cancelled"):
            run_watched(stuck, stop=lambda: "the run was cancelled", poll_s=0.01)
    finally:
        release.set()
