"""DSPy modules beyond Predict/ChainOfThought (ReAct, BestOfN, Refine, registered programs),
built from registered components and run on ``dspy.utils.DummyLM``."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import dspy
import pytest
from dspy.utils.dummies import DummyLM

from dspex_jobs.errors import ConfigurationError
from dspex_jobs.pipeline import Dspy, Pipeline, components
from dspex_jobs.pipeline.dspy_modules import build_module, run_module

looked_up: list[str] = []


def lookup_order(order_id: str) -> str:
    """Find an order's status by its id."""
    looked_up.append(order_id)
    return f"order {order_id} shipped"


def long_answer(args: dict[str, Any], prediction: Any) -> float:
    return 1.0 if len(str(prediction.answer)) > 3 else 0.0


@pytest.fixture(autouse=True, scope="module")
def registered() -> Iterator[None]:
    components.register("tool", "lookup_order", lookup_order, replace=True)
    components.register("reward", "long_answer", long_answer, replace=True)
    components.register(
        "program",
        "qa_program",
        lambda: dspy.Predict("question -> answer"),
        signature="question -> answer",
        replace=True,
    )
    yield
    for kind, name in (
        ("tool", "lookup_order"),
        ("reward", "long_answer"),
        ("program", "qa_program"),
    ):
        components.unregister(kind, name)


def runtime(lm: DummyLM) -> Any:
    """What run_module needs of a worker's runtime: its LM for the step's options."""
    return SimpleNamespace(lms=SimpleNamespace(get=lambda _options: lm))


def step_of(step: Dspy) -> Dspy:
    """The step as a pipeline names and checks it."""
    named = Pipeline([step]).steps[0]
    assert isinstance(named, Dspy)
    return named


def test_react_calls_the_registered_tool() -> None:
    step = step_of(
        Dspy("ReAct", signature="question -> answer", tools=["lookup_order"], max_iters=3)
    )
    lm = DummyLM(
        [
            {
                "next_thought": "look it up",
                "next_tool_name": "lookup_order",
                "next_tool_args": {"order_id": "A7"},
            },
            {"next_thought": "done", "next_tool_name": "finish", "next_tool_args": {}},
            {"reasoning": "the tool said so", "answer": "shipped"},
        ]
    )
    outcome = run_module(runtime(lm), step, {"question": "Where is A7?"}, "job")
    assert outcome.outputs["answer"] == "shipped" and looked_up == ["A7"]
    assert "trajectory" in outcome.outputs
    assert set(step.extras()) == {"reasoning", "trajectory"}


def test_best_of_n_keeps_the_attempt_the_reward_accepts() -> None:
    step = step_of(
        Dspy("BestOfN", signature="question -> answer", n=3, reward="long_answer", threshold=1.0)
    )
    lm = DummyLM([{"answer": "no"}, {"answer": "a longer answer"}, {"answer": "x"}])
    outcome = run_module(runtime(lm), step, {"question": "?"}, "job")
    assert outcome.outputs == {"answer": "a longer answer"}


def test_a_registered_program_runs_with_its_signature() -> None:
    step = step_of(Dspy("qa_program"))
    assert step.is_program and step.writes() == ("answer",)
    outcome = run_module(runtime(DummyLM([{"answer": "42"}])), step, {"question": "?"}, "job")
    assert outcome.outputs == {"answer": "42"}


def test_modules_are_built_once_per_shape() -> None:
    step = step_of(Dspy("BestOfN", signature="q -> a", n=2, reward="long_answer"))
    assert build_module(step) is build_module(step)


def test_a_component_missing_on_the_worker_is_a_configuration_error() -> None:
    step = step_of(Dspy("ReAct", signature="question -> answer", tools=["lookup_order"]))
    components.unregister("tool", "lookup_order")
    try:
        with pytest.raises(ConfigurationError, match="no tool named 'lookup_order'"):
            build_module(Dspy("ReAct", signature="question -> other", tools=["lookup_order"]))
    finally:
        components.register("tool", "lookup_order", lookup_order, replace=True)
    assert step.tools == ("lookup_order",)
