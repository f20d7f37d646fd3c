"""Reading DSPy adapter prompts back into fields: real prompts from DSPy 3.4's adapters."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import enum
from typing import Any, Literal

import dspy
import pydantic
import pytest
from dspy.adapters import ChatAdapter, JSONAdapter, XMLAdapter

from dspex_jobs.lmserver.fields import field_spec, split_type_args
from dspex_jobs.lmserver.prompt import parse_messages


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Person(pydantic.BaseModel):
    name: str
    age: int


class Everything(dspy.Signature):
    """Answer the question from the context."""

    question: str = dspy.InputField(desc="the question")
    context: list[str] = dspy.InputField()
    answer: str = dspy.OutputField(desc="short")
    confidence: float = dspy.OutputField()
    label: Literal["yes", "no", "maybe"] = dspy.OutputField()
    ok: bool = dspy.OutputField()
    items: list[str] = dspy.OutputField()
    scores: dict[str, int] = dspy.OutputField()
    count: int = dspy.OutputField()
    color: Color = dspy.OutputField()
    person: Person = dspy.OutputField()
    maybe: str | None = dspy.OutputField()


INPUTS = {
    "question": "What is the capital of France?",
    "context": ["Paris is the capital of France. It is big.", "Berlin is in Germany."],
}


def _kinds(parsed: Any) -> dict[str, str]:
    return {f.name: f.kind for f in parsed.outputs}


EXPECTED_KINDS = {
    "answer": "str",
    "confidence": "float",
    "label": "choice",
    "ok": "bool",
    "items": "list",
    "scores": "json",
    "count": "int",
    "color": "choice",
    "person": "json",
    "maybe": "str",
}


@pytest.mark.parametrize(
    ("adapter", "style"), [(ChatAdapter(), "chat"), (JSONAdapter(), "json"), (XMLAdapter(), "xml")]
)
def test_every_adapter_prompt_yields_its_fields(adapter: Any, style: str) -> None:
    # Given a prompt written by a real DSPy adapter
    messages = adapter.format(Everything, demos=[], inputs=INPUTS)
    # When it is parsed
    parsed = parse_messages(messages)
    # Expect the style, the inputs with their values and every output with its kind
    assert parsed.style == style
    assert [f.name for f in parsed.inputs] == ["question", "context"]
    assert parsed.inputs[0].text == INPUTS["question"]
    assert parsed.inputs[0].items is None
    assert parsed.inputs[1].items == tuple(INPUTS["context"])
    assert parsed.inputs[1].type_name == "list[str]"
    # (the XMLAdapter shows a model as nested tags with no types, so it reads as str)
    assert _kinds(parsed) == {**EXPECTED_KINDS, **({"person": "str"} if style == "xml" else {})}
    specs = {f.name: f for f in parsed.outputs}
    assert specs["label"].choices == ("yes", "no", "maybe")
    assert specs["color"].choices == ("red", "green")
    if style != "xml":
        assert specs["person"].schema is not None
        assert set(specs["person"].schema["properties"]) == {"name", "age"}
    assert specs["answer"].description == "short"
    assert parsed.instructions == "Answer the question from the context."


def test_response_format_selects_json_style() -> None:
    messages = ChatAdapter().format(Everything, demos=[], inputs=INPUTS)
    assert parse_messages(messages, {"type": "json_object"}).style == "json"


def test_chain_of_thought_adds_reasoning_first() -> None:
    signature = dspy.ChainOfThought("question -> answer").predict.signature
    parsed = parse_messages(ChatAdapter().format(signature, demos=[], inputs={"question": "Hi?"}))
    assert [f.name for f in parsed.outputs] == ["reasoning", "answer"]
    assert [f.kind for f in parsed.outputs] == ["str", "str"]


def test_demos_and_history_are_ignored_in_favour_of_the_last_user_message() -> None:
    class Chat(dspy.Signature):
        question: str = dspy.InputField()
        history: dspy.History = dspy.InputField()
        answer: str = dspy.OutputField()

    demos = [{"question": "demo question?", "answer": "demo answer"}]
    history = dspy.History(messages=[{"question": "earlier?", "answer": "before"}])
    messages = ChatAdapter().format(
        Chat, demos=demos, inputs={"question": "now?", "history": history}
    )
    parsed = parse_messages(messages)
    assert [(f.name, f.text) for f in parsed.inputs] == [("question", "now?")]
    assert [f.name for f in parsed.outputs] == ["answer"]


def test_list_value_in_a_str_field_uses_dspy_numbered_blobs() -> None:
    # A list given to a str field is rendered as "[1] «...»" lines, multi-line blobs in «««»»»
    messages = ChatAdapter().format(
        dspy.Signature("passages, question -> answer"),
        demos=[],
        inputs={"passages": ["One. Two.", "Three\nfour"], "question": "q?"},
    )
    parsed = parse_messages(messages)
    assert parsed.inputs[0].items == ("One. Two.", "Three\nfour")


def test_single_item_list_and_empty_list() -> None:
    signature = dspy.Signature("docs: list[str], other: list[str], question -> answer")
    messages = ChatAdapter().format(
        signature, demos=[], inputs={"docs": ["only one"], "other": [], "question": "q"}
    )
    items = {f.name: f.items for f in parse_messages(messages).inputs}
    assert items == {"docs": ("only one",), "other": (), "question": None}


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "Hello there. How are you?"}],
        [{"role": "user", "content": [{"type": "text", "text": "Parts work."}]}],
        [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": None}],
        [{"content": "no role"}],
        ["not a dict", 3, None],
        [{"role": "system", "content": "Your input fields are:\nYour output fields are:\n"}],
    ],
)
def test_unexpected_shapes_become_plain_prompts(messages: list[Any]) -> None:
    parsed = parse_messages(messages)
    assert parsed.style == "plain"
    assert parsed.outputs == ()


def test_custom_prompt_with_only_headers_falls_back_to_structure() -> None:
    messages = [
        {"role": "system", "content": "Reply as [[ ## summary ## ]] then [[ ## completed ## ]]."},
        {"role": "user", "content": "[[ ## text ## ]]\nSome text here."},
    ]
    parsed = parse_messages(messages)
    assert parsed.style == "chat"
    assert [f.name for f in parsed.outputs] == ["summary"]
    assert [(f.name, f.text) for f in parsed.inputs] == [("text", "Some text here.")]


@pytest.mark.parametrize(
    ("type_name", "kind", "choices"),
    [
        ("Literal['a, b', \"it's\", 'c']", "choice", ("a, b", "it's", "c")),
        ("Literal[1, 2, 3]", "choice", (1, 2, 3)),
        ("Optional[int]", "int", ()),
        ("Union[float, NoneType]", "float", ()),
        ("list[str] | None", "list", ()),
        ("dict[str, list[int]]", "json", ()),
        ("typing.List[str]", "list", ()),
        ("SomethingCustom", "str", ()),
    ],
)
def test_field_spec_reads_rendered_types(
    type_name: str, kind: str, choices: tuple[Any, ...]
) -> None:
    spec = field_spec("f", type_name)
    assert (spec.kind, spec.choices) == (kind, choices)


def test_field_spec_list_items() -> None:
    assert field_spec("f", "list[int]").item_kind == "int"
    assert field_spec("f", "list[Literal['x', 'y']]").choices == ("x", "y")
    assert field_spec("f", "list[dict[str, int]]").item_kind == "json"


def test_split_type_args_respects_brackets_and_quotes() -> None:
    assert split_type_args("a, b[c, d], 'e, f'") == ["a", "b[c, d]", "'e, f'"]
