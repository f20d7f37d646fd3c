"""What a neural job may carry: typed errors that name the field and position."""

from __future__ import annotations

from typing import Any

import pytest

from dspex_jobs.errors import NeuralInputError, TextTooLong, ValidationError
from dspex_jobs.jobs import JobKind
from dspex_jobs.neural.limits import MAX_K, NeuralLimits, check_index_name, check_neural_inputs
from dspex_jobs.settings import Settings

LIMITS = NeuralLimits(max_texts=5, max_text_chars=20)


def check(kind: JobKind, **inputs: Any) -> dict[str, Any]:
    return check_neural_inputs(kind, inputs, LIMITS)


def test_embed_inputs_come_back_canonical() -> None:
    assert check(JobKind.EMBED, texts=("a", "b")) == {"texts": ["a", "b"], "normalize": False}
    assert check(JobKind.EMBED, texts=["a"], normalize=True)["normalize"] is True


@pytest.mark.parametrize(
    ("texts", "message", "position"),
    [
        ([], "is empty", None),
        ("one text", "wrap a single text in a list", None),
        (["ok", 3], r"texts\[1\] is not a string \(got int\)", 1),
        (["ok", None], r"texts\[1\] is not a string \(got NoneType\)", 1),
        (["a"] * 6, "over the limit of 5 per job", None),
    ],
)
def test_bad_texts_are_neural_input_errors(texts: Any, message: str, position: int | None) -> None:
    with pytest.raises(NeuralInputError, match=message) as info:
        check(JobKind.EMBED, texts=texts)
    assert isinstance(info.value, ValidationError) and not info.value.retryable
    assert info.value.details["field"] == "texts"
    assert info.value.details.get("position") == position


def test_a_text_over_the_limit_is_text_too_long() -> None:
    with pytest.raises(TextTooLong, match=r"texts\[1\] is 21 characters, over the limit of 20"):
        check(JobKind.EMBED, texts=["fine", "x" * 21])


def test_missing_and_unknown_inputs_are_named() -> None:
    with pytest.raises(NeuralInputError, match="missing texts"):
        check(JobKind.EMBED)
    with pytest.raises(NeuralInputError, match="unknown colour"):
        check(JobKind.EMBED, texts=["a"], colour="red")
    with pytest.raises(NeuralInputError, match="normalize must be"):
        check(JobKind.EMBED, texts=["a"], normalize="yes")


@pytest.mark.parametrize("name", ["docs", "a", "Docs_2024.v1-x", "x" * 128])
def test_good_index_names(name: str) -> None:
    assert check_index_name(name) == name


@pytest.mark.parametrize("name", ["", "-docs", "a:b", "a b", "x" * 129, 7, None, "dé"])
def test_bad_index_names(name: Any) -> None:
    with pytest.raises(NeuralInputError, match="index name"):
        check_index_name(name)


def test_search_inputs() -> None:
    assert check(JobKind.INDEX_SEARCH, index="docs", queries=["q"]) == {
        "index": "docs",
        "queries": ["q"],
        "k": 5,
    }
    for k in (0, MAX_K + 1, 2.5, True, "3"):
        with pytest.raises(NeuralInputError, match="k must be"):
            check(JobKind.INDEX_SEARCH, index="docs", queries=["q"], k=k)
    with pytest.raises(NeuralInputError) as info:
        check(JobKind.INDEX_SEARCH, index="docs", queries=[""] * 9)
    assert info.value.details["field"] == "queries"


def test_add_fills_ids_only_when_asked() -> None:
    assert check(JobKind.INDEX_ADD, index="d", documents=["a", "b"])["ids"] is None
    filled = check_neural_inputs(
        JobKind.INDEX_ADD, {"index": "d", "documents": ["a", "b"]}, LIMITS, fill_ids=True
    )
    assert len(set(filled["ids"])) == 2
    given = check(JobKind.INDEX_ADD, index="d", documents=["a"], ids=["x"], metadata=[{"k": 1}])
    assert given == {"index": "d", "documents": ["a"], "ids": ["x"], "metadata": [{"k": 1}]}


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (["x"], "1 ids for 2 documents"),
        (["x", "x"], "repeats the id 'x'"),
        (["x", ""], r"ids\[1\] must be a string"),
        ("xy", "must be a list"),
        (["x", 5], r"ids\[1\] must be"),
    ],
)
def test_bad_ids(ids: Any, message: str) -> None:
    with pytest.raises(NeuralInputError, match=message):
        check(JobKind.INDEX_ADD, index="d", documents=["a", "b"], ids=ids)


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ([{"a": 1}], "one object"),
        ([{"a": 1}, "tag"], r"metadata\[1\] is not an object \(got str\)"),
        ([None, {"a": object()}], "cannot be encoded as JSON"),
        ([None, {"a": "x" * 20_000}], "over the limit"),
    ],
)
def test_bad_metadata(metadata: Any, message: str) -> None:
    with pytest.raises(NeuralInputError, match=message):
        check(JobKind.INDEX_ADD, index="d", documents=["a", "b"], metadata=metadata)


def test_limits_come_from_settings() -> None:
    settings = Settings.from_env(
        {"DSPEX_NEURAL_MAX_TEXTS": "7", "DSPEX_NEURAL_MAX_TEXT_CHARS": "99"}
    )
    assert NeuralLimits.from_settings(settings) == NeuralLimits(7, 99)
    assert Settings.from_env({"DSPEX_NEURAL_DEVICE": "cuda"}).neural_device == "cuda"
