"""The grammar, canonical text, equality and error reports of the native parser."""

from __future__ import annotations

import pytest

from dspex_jobs.signature import Field, Signature, SignatureError, TypeExpr
from dspex_jobs.signature.nodes import ELLIPSIS, NamedType, ValueArg
from dspex_jobs.signature.parser import MAX_TYPE_DEPTH, parse_fields
from dspex_jobs.signature.quick import TYPE_CACHE_SIZE, _types, clear_type_cache, quick_parse
from dspex_jobs.signature.signature import _parse_uncached
from dspex_jobs.signature.types import BUILTIN_TYPES

SEED = "question: str, context: list[str] -> answer: str, confidence: float"


def fault(text: str) -> SignatureError:
    with pytest.raises(SignatureError) as caught:
        _parse_uncached(text)
    return caught.value


def test_seed_signature() -> None:
    # Given the seed's signature / When parsed / Expect its fields, types and canonical text
    sig = Signature.parse(SEED)
    assert [f.name for f in sig.inputs] == ["question", "context"]
    assert [f.name for f in sig.outputs] == ["answer", "confidence"]
    assert [str(f.type) for f in sig.fields] == ["str", "list[str]", "str", "float"]
    assert str(sig) == SEED
    assert sig.instructions is None
    assert repr(sig) == f"Signature({SEED!r})"
    with pytest.raises(AttributeError):
        sig.instructions = "changed"  # type: ignore[misc]  # shared through the cache


def test_untyped_fields_are_str_and_remember_it() -> None:
    sig = Signature.parse("question -> answer")
    assert [str(f.type) for f in sig.fields] == ["str", "str"]
    assert [f.typed for f in sig.fields] == [False, False]
    assert str(sig) == "question -> answer"
    assert sig != Signature.parse("question: str -> answer")


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("->", "->"),
        ("a ->", "a ->"),
        ("-> b", "-> b"),
        ("a, -> b,", "a -> b"),
        (" a:int->b : Dict[ str,List[int] ] ", "a: int -> b: Dict[str, List[int]]"),
        ("a: typing.List[typing.Any] -> b", "a: List[Any] -> b"),
        ("a: Optional[int] -> b", "a: int | None -> b"),
        ("a: Union[int, Optional[str]] -> b", "a: int | str | None -> b"),
        ("a: Union[int, int] -> b", "a: int -> b"),
        ("a: Union[int] -> b", "a: int -> b"),
        ("a: NoneType | int -> b", "a: NoneType | int -> b"),
        ('a: Literal["x", \'y\', 1, True, None, -3, 0x10] -> b',
         "a: Literal['x', 'y', 1, True, None, -3, 16] -> b"),
        ("a: Literal['a', 'a', 1, True] -> b", "a: Literal['a', 1, True] -> b"),
        ("a: Literal['it\\'s', \"\\\"q\\\"\"] -> b", "a: Literal[\"it's\", '\"q\"'] -> b"),
        ("a: tuple[int, ...] -> b: Tuple[int, str,]", "a: tuple[int, ...] -> b: Tuple[int, str]"),
        ("a: dspy . Code [ 'python' ] -> b", "a: dspy.Code['python'] -> b"),
        ('q: str "the user\'s question" -> a \'x\'', "q: str \"the user's question\" -> a 'x'"),
        ("a: list[int | None] | None -> b", "a: list[int | None] | None -> b"),
    ],
)  # fmt: skip
def test_canonical_text(text: str, canonical: str) -> None:
    sig = _parse_uncached(text)
    assert str(sig) == canonical
    assert _parse_uncached(canonical) == sig


def test_equality_and_hash() -> None:
    a = _parse_uncached("a: Optional[int] -> b", "Do it.")
    b = _parse_uncached("a:int|None->b", "Do it.")
    assert a == b
    assert hash(a) == hash(b)
    assert a != _parse_uncached("a: Optional[int] -> b")  # instructions differ
    assert a != _parse_uncached("a: None | int -> b", "Do it.")  # member order differs
    assert a != "a: int | None -> b"
    assert repr(a) == "Signature('a: int | None -> b', instructions='Do it.')"
    assert len({a, b}) == 1


def test_type_nodes() -> None:
    (field,) = _parse_uncached("a: list[Literal['x', 1]] -> ").inputs
    assert isinstance(field, Field)
    assert isinstance(field.type, TypeExpr)
    assert repr(field.type) == "GenericType(\"list[Literal['x', 1]]\")"
    assert str(field) == "a: list[Literal['x', 1]]"
    assert field.type == field.type
    assert ValueArg(1) != ValueArg(True)  # Literal[1] is not Literal[True]
    assert str(ELLIPSIS) == "..."
    assert NamedType(BUILTIN_TYPES["str"]) == BUILTIN_TYPES["str"].node
    assert NamedType(BUILTIN_TYPES["str"]) != ValueArg("str")
    assert repr(BUILTIN_TYPES["str"]) == "TypeSpec('str', 'plain')"
    base = TypeExpr()
    for method in (base.key, base.annotation, base.producer_type):
        with pytest.raises(NotImplementedError):
            method()


def test_unicode_names_are_normalised_like_python() -> None:
    sig = _parse_uncached("\ufb01le, café -> \uff52ésumé")  # ligature fi, fullwidth r
    assert [f.name for f in sig.fields] == ["file", "café", "résumé"]


def test_escapes_in_strings() -> None:
    sig = _parse_uncached(r"a: str '\x41\u00e9\U0001F600\N{BULLET}\101\n\t\\\'\"\a\b\f\v\r' -> b")
    assert sig.inputs[0].description == "Aé😀•A\n\t\\'\"\a\b\f\v\r"
    assert _parse_uncached(str(sig)) == sig


def test_parse_is_cached_and_bounded() -> None:
    assert Signature.parse(SEED) is Signature.parse(SEED)
    assert Signature.parse(SEED, "x") is not Signature.parse(SEED)
    from dspex_jobs.signature.signature import PARSE_CACHE_SIZE, _parse_cached

    assert _parse_cached.cache_info().maxsize == PARSE_CACHE_SIZE


def test_wrong_argument_types() -> None:
    with pytest.raises(TypeError, match="must be a str"):
        Signature.parse(b"a -> b")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="instructions must be"):
        Signature.parse("a -> b", 3)  # type: ignore[arg-type]


def test_deep_nesting_is_refused_not_recursed() -> None:
    ok = "a: " + "list[" * MAX_TYPE_DEPTH + "int" + "]" * MAX_TYPE_DEPTH + " -> b"
    assert _parse_uncached(ok).inputs[0].type is not None
    deep = "a: " + "list[" * 5000 + "int" + "]" * 5000 + " -> b"
    error = fault(deep)
    assert "nest" in error.reason
    assert error.position == 3 + 5 * MAX_TYPE_DEPTH + 4


@pytest.mark.parametrize(
    ("text", "position", "reason"),
    [
        ("", 0, "expected '->'"),
        ("a, b", 4, "expected '->'"),
        ("a -> b -> c", 7, "exactly one '->'"),
        ("-> -> b", 3, "exactly one '->'"),
        ("a b -> c", 2, "expected ',' or '->' after field 'a'"),
        ("-> a b", 5, "expected ',' or end of text after field 'a'"),
        ("a: int = 3 -> b", 7, "default values are not supported"),
        ("a, *b -> c", 3, "expected a field name, found '*b'"),
        ("class -> b", 0, "Python keyword"),
        ("_a -> b", 0, "underscore"),
        ("signature -> b", 0, "reserved by DSPy"),
        ("model_validate_x -> b", 0, "protected namespaces"),
        ("a, b, a -> c", 6, "defined twice"),
        ("a -> a", 5, "both an input and an output"),
        ("a: -> b", 3, "expected a type, found '->'"),
        ("a:", 2, "expected a type, found end of text"),
        ("-> a:", 5, "expected a type, found end of text"),
        ("-> a: list[", 11, "expected a type, found end of text"),
        ("a: 'str' -> b", 3, "types are written unquoted"),
        ("a: str 'x -> b", 7, "unterminated string"),
        ("a: Literal['x] -> b", 11, "unterminated string"),
        ("a: 'x -> b", 3, "unterminated string"),
        ("a: f(x) -> b", 3, "nothing in a signature is evaluated"),
        ("a: dspy.1 -> b", 8, "expected a name after '.'"),
        ("a: Strr -> b", 3, "did you mean 'str'?"),
        ("a: Zqxjk -> b", 3, "unknown type 'Zqxjk' (custom"),
        ("a: str[int] -> b", 6, "str takes no arguments"),
        ("a: List -> b", 3, "List needs arguments in brackets, e.g. List[str]"),
        ("a: Dict -> b", 3, "e.g. Dict[str, int]"),
        ("a: Optional -> b", 3, "e.g. Optional[str]"),
        ("a: Union -> b", 3, "e.g. Union[int, str]"),
        ("a: Literal -> b", 3, "e.g. Literal['a', 'b']"),
        ("a: Tuple -> b", 3, "e.g. Tuple[int, ...]"),
        ("a: list[str, int] -> b", 13, "list takes 1 argument, got 2"),
        ("a: dict[str] -> b", 11, "dict takes 2 arguments, got 1"),
        ("a: Optional[int, str] -> b", 17, "Optional takes 1 argument, got 2"),
        ("a: dspy.Code['a', 'b'] -> b", 18, "dspy.Code takes 1 argument, got 2"),
        ("a: dspy.Code[python] -> b", 13, "the language as a string"),
        ("a: list[str -> b", 12, "expected ',' or ']' in list[...]"),
        ("a: Literal[1.5] -> b", 12, "not floats"),
        ("a: Literal[x] -> b", 11, "expected a Literal value"),
        ("a: Literal[r'x'] -> b", 11, "string prefixes"),
        ("a: Literal[007] -> b", 11, "'007' is not an integer"),
        ("a: Literal[1e5] -> b", 11, "is not an integer"),
        ("a: tuple[..., int] -> b", 9, "second argument of tuple"),
        ("a: list[int, ...] -> b", 13, "second argument of tuple"),
        ("a: tuple[int, ..., str] -> b", 19, "must be the last argument"),
        ("a: None -> b", 3, "cannot be just None"),
        ("a: None | NoneType -> b", 3, "cannot be just None"),
        ("a: str '\\q' -> b", 8, "unknown escape"),
        ("a: str 'ab\\U00110000' -> b", 10, "names no Unicode character"),
        ("a: str '\\N{NO SUCH NAME}' -> b", 8, "unknown Unicode character name"),
        ("a: str '\\N{BULLET' -> b", 8, "unknown escape"),
    ],
)
def test_errors_say_where_and_why(text: str, position: int, reason: str) -> None:
    error = fault(text)
    assert error.position == position, str(error)
    assert reason in error.reason
    assert error.text == text
    assert isinstance(error, ValueError)
    if text:  # SignatureError draws the caret under the fault
        assert str(error).splitlines()[-1] == "  " + " " * position + "^"


def test_errors_from_the_quick_path_carry_positions() -> None:
    # The quick path gives up on these; the reference parser's positions must still be exact.
    assert fault("question, context").position == len("question, context")
    assert fault("question:   strr -> a").position == len("question:   ")


def test_parse_fields_returns_tuples() -> None:
    inputs, outputs = parse_fields("a, b: int -> c")
    assert isinstance(inputs, tuple)
    assert [f.name for f in inputs + outputs] == ["a", "b", "c"]


@pytest.mark.parametrize(
    "text",
    [
        SEED,
        "question -> answer",
        "image: dspy.Image, history: dspy.History | None -> tags: dict[str, list[int]]",
        "review: str -> sentiment: Literal['positive', 'negative', 'neutral'], score: float",
        "a, b, -> c,",
        "->",
        " -> a",
        "a: Optional[list[Dict[str, int]]] -> b: tuple[int, ...], c: Literal['x, y', 1]",
        "model_name: str, type -> match",
    ],
)
def test_quick_path_takes_common_signatures(text: str) -> None:
    # Given a signature the quick path handles, expect exactly the reference parser's fields.
    found = quick_parse(text)
    assert found is not None
    assert found == parse_fields(text)


@pytest.mark.parametrize(
    "text",
    [
        "q: str 'the question' -> a",  # a description
        "café -> a",  # non-ASCII: names are normalised
        "a: dict[str, -> b",  # a bracket never closed
        "a: Literal['x->y'] -> b",  # an arrow inside a string (the reference accepts it)
        "a, , b -> c",
        "a -> b -> c",
        "a: None -> b",
        "a: -> b",
        "a b -> c",
        "a: strr -> b",
        "class -> b",
        "_a -> b",
        "model_dump_x -> b",
        "a, a -> b",
        "a -> a",
        "a, b",
    ],
)
def test_quick_path_leaves_the_rest_to_the_reference_parser(text: str) -> None:
    assert quick_parse(text) is None
    assert quick_parse(text) is None  # again, from the cached verdict on its type text


def test_quick_path_type_cache_is_bounded() -> None:
    # Given more distinct type texts than the cache holds
    clear_type_cache()
    try:
        for i in range(TYPE_CACHE_SIZE + 10):
            found = quick_parse(f"a: Literal[{i}] -> b")
            assert found is not None
            assert str(found[0][0].type) == f"Literal[{i}]"
        # Expect: the oldest are gone and the newest kept, never more than the bound
        assert len(_types) == TYPE_CACHE_SIZE
        assert " Literal[0] " not in _types
        assert f" Literal[{TYPE_CACHE_SIZE + 9}] " in _types
    finally:
        clear_type_cache()
