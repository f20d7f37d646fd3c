"""``Signature.validate_inputs``: presence, types and conversion, every problem at once."""

from __future__ import annotations

import datetime
from typing import Any

import pydantic
import pytest

from dspex_jobs.signature import Signature, SignatureError, SignatureValidationError
from dspex_jobs.signature.validator import ADAPTER_CACHE_SIZE, input_adapter

SEED = "question: str, context: list[str] -> answer: str, confidence: float"


class Person(pydantic.BaseModel):
    name: str
    age: int


class Plain:
    """A custom class pydantic knows nothing about."""


def problems(sig: Signature, inputs: Any) -> list[dict[str, Any]]:
    with pytest.raises(SignatureValidationError) as caught:
        sig.validate_inputs(inputs)
    return caught.value.errors


def test_valid_inputs_are_converted() -> None:
    sig = Signature.parse("n: int, tags: list[str], flag: bool -> out")
    assert sig.validate_inputs({"n": "3", "tags": ("a", "b"), "flag": "yes"}) == {
        "n": 3,
        "tags": ["a", "b"],
        "flag": True,
    }


def test_every_problem_is_reported_at_once() -> None:
    # Given a wrong type, a wrong item, a missing input and an extra one
    errors = problems(Signature.parse(SEED + ", n: int"), {"question": 3, "context": ["a", 2]})
    extra = problems(Signature.parse(SEED), {"question": "q", "context": [], "stray": 1})
    # Expect one entry per problem, by field name
    assert [(e["field"], e["type"]) for e in errors] == [
        ("question", "string_type"),
        ("context", "string_type"),
    ]
    assert errors[1]["message"] == "Input should be a valid string (at context[1])"
    assert extra == [
        {
            "field": "stray",
            "message": "not an input of this signature (inputs: question, context)",
            "type": "extra_forbidden",
        }
    ]
    missing = problems(Signature.parse("a, b: int -> c"), {})
    assert [(e["field"], e["message"]) for e in missing] == [
        ("a", "required input is missing"),
        ("b", "required input is missing"),
    ]


def test_error_message_lists_fields() -> None:
    with pytest.raises(SignatureValidationError, match=r"2 invalid input\(s\): a: .*; b: "):
        Signature.parse("a, b: int -> c").validate_inputs({})


def test_inputs_must_be_a_mapping() -> None:
    with pytest.raises(SignatureValidationError, match="not list") as caught:
        Signature.parse("a -> b").validate_inputs(["a"])  # type: ignore[arg-type]
    assert caught.value.errors[0]["field"] == ""


def test_no_inputs_signature() -> None:
    sig = Signature.parse("-> b")
    assert sig.validate_inputs({}) == {}
    assert problems(sig, {"a": 1})[0]["message"] == "not an input of this signature (inputs: none)"


def test_optional_inputs_may_be_left_out_as_in_dspy() -> None:
    sig = Signature.parse("a: int | None, b: Optional[str], c: Any -> d")
    assert sig.validate_inputs({"c": 1}) == {"c": 1}
    assert sig.validate_inputs({"a": None, "b": "x", "c": None}) == {"a": None, "b": "x", "c": None}
    assert [e["field"] for e in problems(sig, {})] == ["c"]  # Any is not Optional


def test_literal_and_nested_types() -> None:
    sig = Signature.parse(
        "mode: Literal['a', 'b', 1], m: dict[str, list[int]], t: tuple[int, ...] -> x"
    )
    assert sig.validate_inputs({"mode": 1, "m": {"k": ["1"]}, "t": [1, 2]}) == {
        "mode": 1,
        "m": {"k": [1]},
        "t": (1, 2),
    }
    assert {e["field"] for e in problems(sig, {"mode": "c", "m": {}, "t": ["x"]})} == {"mode", "t"}


def test_dspy_types_accept_their_json_shapes_without_dspy() -> None:
    sig = Signature.parse(
        "img: dspy.Image, audio: dspy.Audio, code: dspy.Code['python'], hist: dspy.History, "
        "calls: dspy.ToolCalls, tool: dspy.Tool -> answer"
    )
    good = {
        "img": "https://example.com/cat.png",
        "audio": {"data": "...", "audio_format": "wav"},
        "code": "print(1)",
        "hist": {"messages": []},
        "calls": [{"name": "search", "args": {}}],
        "tool": object(),
    }
    assert sig.validate_inputs(good) == good
    bad = {**good, "img": 3, "hist": "not an object", "code": 1.5}
    assert sorted(e["field"] for e in problems(sig, bad)) == ["code", "code", "hist", "img", "img"]


def test_custom_types() -> None:
    sig = Signature.parse("p: Person, n: Optional[Person] -> out", types={"Person": Person})
    values = sig.validate_inputs({"p": {"name": "Ada", "age": "36"}})
    assert values == {"p": Person(name="Ada", age=36)}
    assert {e["field"] for e in problems(sig, {"p": {"name": "Ada"}, "n": 3})} == {"p", "n"}


def test_types_pydantic_cannot_validate_are_signature_errors() -> None:
    # DSPy builds a pydantic model from the signature: it would fail on the worker too.
    sig = Signature.parse("x: Plain -> out", types={"Plain": Plain})
    with pytest.raises(SignatureError, match="cannot be validated by pydantic"):
        sig.validate_inputs({"x": Plain()})


def test_json_mode_gives_json_values() -> None:
    sig = Signature.parse("when: datetime.datetime, p: Person -> out", types={"Person": Person})
    values = {"when": datetime.datetime(2024, 1, 2, 3, 4, 5), "p": Person(name="Ada", age=36)}
    assert sig.validate_inputs(values, mode="json") == {
        "when": "2024-01-02T03:04:05",
        "p": {"name": "Ada", "age": 36},
    }


def test_field_names_pydantic_models_reserve_are_fine_here() -> None:
    # A TypedDict is used, not a model, so names like "model_x" or "type" need no care.
    sig = Signature.parse("model_x: int, type: str -> out")
    assert sig.validate_inputs({"model_x": 1, "type": "t"}) == {"model_x": 1, "type": "t"}


def test_adapter_is_cached_and_bounded() -> None:
    sig = Signature.parse(SEED)
    assert input_adapter(sig) is input_adapter(Signature.parse(SEED))
    assert input_adapter.cache_info().maxsize == ADAPTER_CACHE_SIZE
