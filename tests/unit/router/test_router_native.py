"""The built-in implementations: native metrics agree with DSPy's, the others do their job."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dspex_jobs.errors import SignatureValidationError, TemplateError, ValidationError
from dspex_jobs.router import Router, builtin_registry
from dspex_jobs.router.native import exact_match, normalize_text, token_f1

dspy = pytest.importorskip("dspy")
from dspy.evaluate import metrics as dspy_metrics  # noqa: E402

CASES = [
    ("The Eiffel Tower", ["Eiffel Tower", "Louvre"]),
    ("paris", ["Paris"]),
    ("paris", ["Paris, France"]),
    ("Eiffel Tower is in Paris", ["Paris"]),
    ("an apple a day", ["the apple, a day!"]),
    ("Café  au   lait", ["cafe au lait"]),
    ("the the the", ["a"]),
    ("42", ["forty-two", "42"]),
    ("red red blue", ["red blue blue"]),
]


@pytest.fixture
def router() -> Router:
    return Router(builtin_registry())


@pytest.mark.parametrize(("prediction", "answers"), CASES)
def test_native_metrics_give_dspys_scores(prediction: str, answers: list[str]) -> None:
    assert exact_match(prediction, answers) == float(dspy_metrics.EM(prediction, answers))
    assert token_f1(prediction, answers) == pytest.approx(dspy_metrics.F1(prediction, answers))
    assert normalize_text(prediction) == dspy_metrics.normalize_text(prediction)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=3))
def test_native_metrics_match_dspy_on_any_text(prediction: str, answers: list[str]) -> None:
    assert exact_match(prediction, answers) == float(dspy_metrics.EM(prediction, answers))
    if normalize_text(prediction) or any(normalize_text(a) for a in answers):
        assert token_f1(prediction, answers) == pytest.approx(dspy_metrics.F1(prediction, answers))


def test_both_metric_implementations_are_routable(router: Router) -> None:
    native = router.run("metric.token_f1", "Eiffel Tower in Paris", ["the Eiffel Tower"])
    via_dspy = router.run(
        "metric.token_f1", "Eiffel Tower in Paris", ["the Eiffel Tower"], implementation="dspy"
    )
    assert native.implementation.name == "native" and via_dspy.implementation.name == "dspy"
    assert native.value == pytest.approx(via_dspy.value) == pytest.approx(2 / 3)
    assert router.call("metric.exact_match", "Paris", "paris") == 1.0
    assert router.call("metric.exact_match", "Paris", "paris", implementation="dspy") == 1.0


@pytest.mark.parametrize(
    ("prediction", "answers", "message"),
    [
        (None, ["x"], "prediction must be a string"),
        ("x", [], "at least one reference"),
        ("x", ["a", 3], "answers must be a string"),
    ],
)
def test_metric_inputs_are_validated_and_never_fall_back(
    router: Router, prediction: Any, answers: Any, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        router.call("metric.exact_match", prediction, answers)
    assert router.stats()["metric.exact_match"].keys() == {"native"}  # dspy never tried


def test_empty_texts_score_zero_f1_as_dspy_does() -> None:
    assert token_f1("", [""]) == 0.0
    assert token_f1("the", ["a"]) == 0.0  # both normalize to nothing


def test_signature_validate_returns_converted_json_inputs(router: Router) -> None:
    assert router.call(
        "signature.validate", "n: int, when: datetime.date -> x", {"n": "3", "when": "2024-01-02"}
    ) == {"n": 3, "when": "2024-01-02"}
    with pytest.raises(SignatureValidationError):
        router.call("signature.validate", "n: int -> x", {"n": "three"})


def test_template_render_checks_against_the_signature_text(router: Router) -> None:
    assert (
        router.call(
            "template.render",
            "Answer in {{ language }}.",
            {"language": "French"},
            signature="question, language -> answer",
        )
        == "Answer in French."
    )
    assert router.call("template.render", "{{ a }}", {"a": "x" * 10}, max_chars=20) == "x" * 10
    with pytest.raises(TemplateError, match="unknown variable 'lang'"):
        router.call(
            "template.render", "{{ lang }}", {"lang": "x"}, signature="question, language -> answer"
        )


def test_predict_and_chain_of_thought_run_dspy_modules(router: Router) -> None:
    lm = dspy.utils.DummyLM([{"answer": "blue"}, {"reasoning": "Rayleigh.", "answer": "blue"}])
    with dspy.context(lm=lm):
        predicted = router.call(
            "predict",
            "question -> answer",
            {"question": "Sky colour?"},
            instructions="Answer in one word.",
        )
        thought = router.call("chain_of_thought", "question -> answer", {"question": "Sky colour?"})
    assert predicted == {"answer": "blue"}
    assert thought == {"reasoning": "Rayleigh.", "answer": "blue"}
    assert router.route("predict").queue == "general"
