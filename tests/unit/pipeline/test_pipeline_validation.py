"""Build-time refusals: every message names the step and the field at fault."""

from __future__ import annotations

from typing import Any

import pytest

from dspex_jobs.errors import PipelineValidationError
from dspex_jobs.pipeline import Dspy, Fallback, Native, Parallel, Pipeline, Skip, When


def refused(build: Any) -> PipelineValidationError:
    with pytest.raises(PipelineValidationError) as caught:
        build()
    return caught.value


def test_a_missing_input_names_the_step_and_the_field() -> None:
    error = refused(
        lambda: Pipeline(
            [
                Dspy("Predict", signature="question -> answer", name="qa"),
                Dspy(
                    "Predict", signature="answer, context: list[str] -> summary", name="summarize"
                ),
            ],
            inputs=["question"],
        )
    )
    assert error.details == {"step": "summarize", "field": "context"}
    assert "'summarize' needs input 'context'" in error.message


def test_reading_what_a_later_step_writes_says_so() -> None:
    error = refused(
        lambda: Pipeline(
            [
                Dspy("Predict", signature="keywords: list[str] -> answer", name="first"),
                Dspy("Predict", signature="question -> keywords: list[str]", name="second"),
            ],
            inputs=["question"],
        )
    )
    assert error.details["step"] == "first" and "runs later" in error.message


def test_inferred_inputs_name_the_step_when_a_run_lacks_them() -> None:
    pipeline = Pipeline([Dspy("Predict", signature="question, context -> answer", name="qa")])
    error = refused(lambda: pipeline.check_inputs({"question": "?"}))
    assert error.details == {"step": "qa", "field": "context"}


def test_a_step_output_read_as_step_dot_field_must_exist() -> None:
    error = refused(
        lambda: Pipeline(
            [
                Dspy("Predict", signature="question -> answer", name="qa"),
                Dspy("Predict", signature="text -> summary", inputs={"text": "qa.reasoning"}),
            ],
            inputs=["question"],
        )
    )
    assert error.details["field"] == "qa.reasoning"
    ok = Pipeline(
        [
            Dspy("ChainOfThought", signature="question -> answer", name="qa"),
            Dspy("Predict", signature="text -> summary", inputs={"text": "qa.reasoning"}),
        ],
        inputs=["question"],
    )
    assert ok.steps[1].name == "predict"


def test_parallel_branches_writing_one_field_need_a_merge() -> None:
    branches = [
        Dspy("Predict", signature="question -> keywords: list[str]", name="a"),
        Dspy("Predict", signature="question -> keywords: list[str]", name="b"),
    ]
    error = refused(lambda: Pipeline([Parallel(branches, name="both")]))
    assert error.details == {"step": "both", "field": "keywords"}
    assert "merge" in error.message
    Pipeline([Parallel(branches, merge={"keywords": "concat"})])
    error = refused(
        lambda: Pipeline(
            [
                Parallel(
                    [branches[0], Dspy("Predict", signature="question -> tags")],
                    merge={"other": "list"},
                )
            ]
        )
    )
    assert error.details["field"] == "other" and "no branch writes" in error.message


def test_parallel_branches_cannot_read_each_others_outputs() -> None:
    error = refused(
        lambda: Pipeline(
            [
                Parallel(
                    [
                        Dspy("Predict", signature="question -> answer", name="a"),
                        Dspy("Predict", signature="answer -> summary", name="b"),
                    ]
                )
            ],
            inputs=["question"],
        )
    )
    assert error.details == {"step": "b", "field": "answer"}


def test_a_parallel_inside_a_parallel_is_refused() -> None:
    inner = Parallel([Dspy("Predict", signature="question -> a")], name="inner")
    error = refused(
        lambda: Pipeline([Parallel([inner, Dspy("Predict", signature="question -> b")])])
    )
    assert "nested chord" in error.message


def test_a_field_written_in_one_when_branch_only_cannot_be_read_after() -> None:
    error = refused(
        lambda: Pipeline(
            [
                When("flag", Dspy("Predict", signature="question -> answer", name="yes")),
                Dspy("Predict", signature="answer -> summary", name="after"),
            ],
            inputs=["question", "flag"],
        )
    )
    assert error.details == {"step": "after", "field": "answer"}
    assert "only in one branch" in error.message


@pytest.mark.parametrize(
    ("document", "where", "what"),
    [
        ({"steps": [{"shell": "rm -rf /"}]}, "steps[0]", "no known step type"),
        ({"steps": [{"dspy": "Predict", "native": "search"}]}, "steps[0]", "more than one"),
        (
            {"steps": [{"dspy": "Summarize", "signature": "a -> b"}]},
            "step 'summarize'",
            "unknown DSPy module 'Summarize'",
        ),
        (
            {"steps": [{"native": "no.such.op", "outputs": ["x"]}]},
            "step 'no_such_op'",
            "unknown operation 'no.such.op'",
        ),
        (
            {"steps": [{"dspy": "Predict", "signature": "a -> b", "temprature": 1}]},
            "steps[0]",
            "no option 'temprature'",
        ),
        (
            {"steps": [{"parallel": [{"dspy": "Predict", "signature": "a -> b"}, {"oops": 1}]}]},
            "steps[0].parallel[1]",
            "no known step type",
        ),
        (
            {"steps": [{"native": "search", "index": "docs", "kk": 5}]},
            "step 'search'",
            "no parameter 'kk'",
        ),
        (
            {"steps": [{"dspy": "Predict", "signature": "a -> b", "on_error": "explode"}]},
            "steps[0]",
            "on_error",
        ),
        ({"steps": [], "name": "x"}, "steps", "empty"),
        ({"steps": [{"dspy": "Predict", "signature": "a -> b"}], "retries": 3}, "", "no key"),
    ],
)
def test_a_document_with_unknown_parts_is_refused_saying_where(
    document: dict[str, Any], where: str, what: str
) -> None:
    error = refused(lambda: Pipeline.from_dict(document))
    assert what in error.message and where in error.message


def test_bad_yaml_and_json_are_refused_as_validation_errors() -> None:
    assert "not valid YAML" in refused(lambda: Pipeline.from_yaml("steps: [")).message
    assert "not valid JSON" in refused(lambda: Pipeline.from_json("{")).message


def test_module_options_are_checked_per_module() -> None:
    error = refused(lambda: Pipeline([Dspy("ReAct", signature="question -> answer")]))
    assert error.details["field"] == "tools"
    error = refused(lambda: Pipeline([Dspy("Predict", signature="q -> a", n=3)]))
    assert "'n' does not apply to Predict" in error.message
    error = refused(lambda: Pipeline([Dspy("BestOfN", signature="q -> a", n=3, reward="no_such")]))
    assert "unknown reward 'no_such'" in error.message


def test_policies_are_checked_against_what_the_step_writes() -> None:
    error = refused(
        lambda: Pipeline([Dspy("Predict", signature="q -> a", name="s", on_error=Skip({"b": 1}))])
    )
    assert error.details == {"step": "s", "field": "b"}
    error = refused(
        lambda: Pipeline(
            [
                Dspy(
                    "Predict",
                    signature="q -> a, b",
                    name="s",
                    on_error=Fallback(Dspy("Predict", signature="q -> a")),
                )
            ]
        )
    )
    assert error.details == {"step": "s", "field": "b"}


def test_names_must_be_unique_and_not_field_names() -> None:
    error = refused(
        lambda: Pipeline(
            [
                Dspy("Predict", signature="q -> a", name="x"),
                Dspy("Predict", signature="a -> b", name="x"),
            ]
        )
    )
    assert "two steps are named 'x'" in error.message
    error = refused(lambda: Pipeline([Dspy("Predict", signature="q -> a", name="a")]))
    assert "also a field name" in error.message
    assert "identifier" in refused(lambda: Dspy("Predict", "q -> a", name="a b")).message


def upper(text: str) -> str:
    return text.upper()


def test_a_native_operation_without_a_spec_must_say_what_it_writes() -> None:
    from dspex_jobs.router import default_registry

    default_registry().register("tests.validation.upper", upper, replace=True)
    try:
        error = refused(lambda: Pipeline([Native("tests.validation.upper")]))
        assert error.details["field"] == "outputs"
        Pipeline([Native("tests.validation.upper", outputs=["loud"])])
    finally:
        default_registry().unregister("tests.validation.upper")
