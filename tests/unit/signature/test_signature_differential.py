"""Differential tests: our parser against ``dspy.Signature(text)`` on a hand-written corpus.

Four lists, about a hundred strings in all:

* ``AGREE``: both accept; the class ``to_dspy()`` builds must equal DSPy's (names, order,
  annotations, field metadata, instructions).
* ``BOTH_REJECT``: DSPy raises (SyntaxError, ValueError, TypeError, pydantic errors); we raise
  :class:`SignatureError` at the given offset.
* ``WE_REFUSE``: DSPy accepts by accident of its ``def f(...)``-and-import implementation, or
  silently changes meaning; we refuse on purpose, at the given offset. Each says why.
* ``WE_ACCEPT``: DSPy rejects; we accept on purpose. Each says why.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from dspex_jobs.signature import Signature, SignatureError

dspy = pytest.importorskip("dspy")

SEED = "question: str, context: list[str] -> answer: str, confidence: float"

AGREE = [
    SEED,
    "a -> b",
    "->",
    "a ->",
    "-> b",
    "a, -> b,",
    "  question ,context->  answer  ",
    "\ta\n:\nint -> b",
    "a:int->b:int",
    "match, case, type -> b",  # soft keywords are fine as names
    "input -> output",
    "model_x -> y",  # only model_dump* / model_validate* are protected
    "a: str | None -> b",
    "a: None | int -> b",
    "a: int | str | None -> b",
    "a: NoneType | int -> b",
    "a: Optional[int] -> b",
    "a: Union[int, str] -> b",
    "a: Union[int] -> b",
    "a: Union[int, int] -> b",
    "a: int | int -> b",
    "a: Optional[Optional[int]] -> b",
    "a: typing.List[str] -> b: typing.Optional[int]",
    "a: List[str] -> b: Dict[str, List[int]]",
    "a: Literal['a', 'b'] -> b",
    "a: Literal[\"it's\", 'x'] -> b",
    "a: Literal['a', 'a'] -> b",
    "a: Literal[True, 1, None] -> b",
    "a: Literal[0x10, 1_000] -> b",
    "a: Literal['tab\\there', '\\u00e9'] -> b",
    "a: tuple[int, ...] -> b: Tuple[str, int]",
    "a: tuple, l: list -> b: dict, s: set",
    "a: list[dict[str, Any]] -> b: dict[str, list[dict[str, int]]]",
    "a: set[int], f: frozenset[str] -> b: Set[int], c: FrozenSet[str]",
    "a: complex, b: bytes, c: bool -> d: float",
    "a: Any, t: typing.Any -> b",
    "a: Sequence[int], m: Mapping[str, int] -> b",
    "a: dspy.Image, h: dspy.History -> b: dspy.Code",
    "a: dspy.Audio, f: dspy.File -> b: dspy.Reasoning, t: dspy.ToolCalls",
    "tools: list[dspy.Tool] -> calls: dspy.ToolCalls, results: dspy.ToolCallResults",
    "a: dspy.Image | None -> b",
    "a: dspy . Image -> b",
    "a: datetime.datetime, d: datetime.date -> b: datetime.timedelta, t: datetime.time",
    "a: decimal.Decimal, u: uuid.UUID, p: pathlib.Path -> b",
    "café -> résumé",
    "ﬁle -> b",  # Python reads identifiers NFKC-normalised: this is "file"
    "a: list[None] -> b",
    "a: list[str,] -> b",
    "a: Dict[str, Any] | None -> b: list[int | None]",
]

BOTH_REJECT = [
    ("", 0),
    ("a", 1),
    ("a -> b -> c", 7),
    ("a b -> c", 2),
    ("class -> b", 0),
    ("a, b -> None", 8),
    ("_a -> b", 0),
    ("a -> a", 5),
    ("a: 'str' -> b", 3),
    (", a -> b", 0),
    ("a,, b -> c", 2),
    ("a: -> b", 3),
    ("a: int | -> b", 9),
    ("a: list[str -> b", 12),
    ("a: list[] -> b", 8),
    ("a: str 'unterminated -> b", 7),
    ("a: List[int, str] -> b", 13),
    ("a: dict[str] -> b", 11),
    ("a: str[int] -> b", 6),
    ("a: Optional -> b", 3),
    ("a: List -> b", 3),
    ("a: Literal -> b", 3),
    ("a: object -> b", 3),
    ("a: bytearray -> b", 3),
    ("a: Callable -> b", 3),
    ("a: Strr -> b", 3),
    ("a: dspy.Citations -> b", 3),
    ("a: Literal[007] -> b", 11),
    ("x: __import__('os').system('x') -> a", 3),
    ("instructions -> answer", 0),
    ("question -> fields", 12),
    ("model_dump -> b", 0),
]

WE_REFUSE = [
    # DSPy keeps one of two same-named fields without a word.
    ("a, a -> b", 3),
    ("a -> b, b", 8),
    # DSPy reads `x: None` as `x: str`, and `Optional[None]`/`NoneType` as a field that can only
    # be None; neither is a useful field type.
    ("a: None -> b", 3),
    ("a: Optional[None] -> b", 3),
    ("a: NoneType -> b", 3),
    # DSPy's `def f(...)` trick accepts (and ignores) defaults, and silently drops the fields
    # before `/` and after `*`; comments swallow the rest of a line.
    ("a: int = 3 -> b", 7),
    ("a, *, b -> c", 3),
    ("a, /, b -> c", 3),
    ("*a -> b", 0),
    ("a # c\n, d -> e", 2),
    # Python syntax that is not a type.
    ("a: (int) -> b", 3),
    ("a: tuple[()] -> b", 9),
    # Meaningless arities, which only typing's older spellings reject.
    ("a: list[int, str] -> b", 13),
    # Names outside the registry: DSPy imports modules named in the text; we never do.
    ("a: os.PathLike -> b", 3),
    ("a: Type[int] -> b", 3),
    ("a: Annotated[str, Field(description='x')] -> b", 3),
    # Literal values outside PEP 586 (floats, bytes), string prefixes, implicit concatenation,
    # and escapes Python itself deprecates.
    ("a: Literal[1.5] -> b", 12),
    ("a: Literal[b'x'] -> b", 11),
    ("a: Literal[r'x'] -> b", 11),
    ("a: Literal['a' 'b'] -> b", 15),
    ("a: Literal['\\q'] -> b", 12),
    # Names that shadow dspy.Signature members: DSPy warns, and the field hides the member.
    ("json -> b", 0),
    ("a -> copy", 5),
    ("model_dump_extra -> b", 0),
]

WE_ACCEPT = [
    # DSPy counts '->' in the raw text, so an arrow inside a string breaks it.
    "a: Literal['a->b'] -> b",
    # Negative integers are valid Literal values (PEP 586); DSPy's AST walk misses UnaryOp.
    "a: Literal[-1, -2] -> b",
    # Descriptions: the extension DSPy lacks.
    'question: str "the user\'s question" -> answer',
    "q 'no type, a description' -> a: int 'an answer'",
]


def dspy_signature(text: str, instructions: str | None = None) -> Any:
    """``dspy.Signature(text)``, with its warnings (shadowed names) silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dspy.Signature(text, instructions)


def assert_same_class(ours: Any, theirs: Any) -> None:
    assert ours.__name__ == theirs.__name__
    assert list(ours.input_fields) == list(theirs.input_fields)
    assert list(ours.output_fields) == list(theirs.output_fields)
    for name, field in theirs.fields.items():
        assert ours.fields[name].annotation == field.annotation, name
        assert ours.fields[name].json_schema_extra == field.json_schema_extra, name
    assert ours.instructions == theirs.instructions


def test_corpus_is_large_enough() -> None:
    assert len(AGREE) + len(BOTH_REJECT) + len(WE_REFUSE) + len(WE_ACCEPT) >= 60


@pytest.mark.parametrize("text", AGREE)
def test_agrees_with_dspy(text: str) -> None:
    # Given a text both accept / When both build a class / Expect the same class
    assert_same_class(Signature.parse(text).to_dspy(), dspy_signature(text))


@pytest.mark.parametrize("text", [SEED, "a, b: int -> c"])
def test_agrees_with_dspy_on_instructions(text: str) -> None:
    ours = Signature.parse(text, instructions="Answer tersely.").to_dspy()
    assert_same_class(ours, dspy_signature(text, "Answer tersely."))


@pytest.mark.parametrize(("text", "position"), BOTH_REJECT)
def test_rejects_what_dspy_rejects(text: str, position: int) -> None:
    with pytest.raises(Exception):  # noqa: B017 - DSPy raises many kinds
        dspy_signature(text)
    with pytest.raises(SignatureError) as caught:
        Signature.parse(text)
    assert caught.value.position == position, str(caught.value)


@pytest.mark.parametrize(("text", "position"), WE_REFUSE)
def test_refuses_what_dspy_accepts_by_accident(text: str, position: int) -> None:
    dspy_signature(text)  # DSPy accepts it ...
    with pytest.raises(SignatureError) as caught:  # ... we do not, on purpose
        Signature.parse(text)
    assert caught.value.position == position, str(caught.value)


@pytest.mark.parametrize("text", WE_ACCEPT)
def test_accepts_what_dspy_rejects(text: str) -> None:
    with pytest.raises(Exception):  # noqa: B017
        dspy_signature(text)
    compiled = Signature.parse(text).to_dspy()
    assert issubclass(compiled, dspy.Signature)


def test_descriptions_become_desc() -> None:
    compiled = Signature.parse("q 'no type, a description' -> a: int 'an answer'").to_dspy()
    assert compiled.fields["q"].json_schema_extra["desc"] == "no type, a description"
    assert compiled.fields["q"].json_schema_extra["IS_TYPE_UNDEFINED"] is True
    assert compiled.fields["a"].json_schema_extra["desc"] == "an answer"
    assert compiled.fields["a"].annotation is int


def test_code_language_is_a_string_not_a_tuple() -> None:
    # DSPy's parser passes the language as a tuple: Code_('python',), language ('python',).
    # We compile dspy.Code['python'], which is what the text means.
    theirs = dspy_signature("a: dspy.Code['python'] -> b").fields["a"].annotation
    ours = Signature.parse("a: dspy.Code['python'] -> b").to_dspy().fields["a"].annotation
    assert theirs.language == ("python",)
    assert ours.language == "python"
    assert issubclass(ours, dspy.Code)
