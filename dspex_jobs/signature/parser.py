"""Recursive-descent parser for DSPy's signature text, with one extension (descriptions).

Grammar (whitespace is allowed between any two tokens)::

    signature := fields "->" fields
    fields    := [field ("," field)* [","]]
    field     := NAME [":" type] [STRING]           # STRING: the description (our extension)
    type      := primary ("|" primary)*
    primary   := DOTTED_NAME ["[" args [","] "]"]
    args      := arg ("," arg)*                     # types; values for Literal and dspy.Code;
                                                    # "..." as the second argument of tuple

DSPy parses the same text by wrapping each side in ``def f(...): pass`` and handing it to
Python's :mod:`ast`, then resolving names (importing modules when needed). That accepts a few
things by accident, which are refused here with a positioned :class:`SignatureError`: default
values, ``*args``, ``/`` and ``*`` markers (which make DSPy drop fields silently), comments,
repeated names (DSPy keeps one), ``x: None`` (DSPy reads it as ``str``), parenthesised types,
unregistered or imported types. ``docs/signatures.md`` lists every difference.

The parser works on tokens only; positions are recovered from :func:`tokenizer.offsets` when
there is an error to report, which keeps the accepting path fast. Valid signatures rarely reach
it as a whole: the quick path (:mod:`.quick`) cuts them into fields with string methods first,
and asks :func:`parse_type` only for the type texts it has not seen before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, NoReturn

from dspex_jobs.errors import SignatureError
from dspex_jobs.signature.names import BAD_NAMES, BAD_PREFIXES, KEYWORDS, RESERVED_NAMES
from dspex_jobs.signature.nodes import (
    ELLIPSIS,
    GENERIC,
    LANGUAGE,
    LITERAL,
    OPTIONAL,
    PLAIN,
    TUPLE,
    UNION,
    Field,
    GenericType,
    NamedType,
    TypeExpr,
    UnionType,
    ValueArg,
    make_union,
)
from dspex_jobs.signature.tokenizer import EscapeError, decode_string, offsets, scan
from dspex_jobs.signature.types import BUILTIN_TYPES, TypeSpec, known_names, lookup

__all__ = ["MAX_TYPE_DEPTH", "parse_fields", "parse_type"]

MAX_TYPE_DEPTH: Final = 32
"""How deeply type arguments may nest (``list[list[...]]``); deeper is refused, not recursed."""

_STR_NODE: Final = BUILTIN_TYPES["str"].node
_NONE_NODE: Final = BUILTIN_TYPES["None"].node
_NONE_SPEC: Final = BUILTIN_TYPES["None"]
_NONETYPE_SPEC: Final = BUILTIN_TYPES["NoneType"]
_QUOTES: Final = ("'", '"')
_CONSTANTS: Final[Mapping[str, object]] = {"True": True, "False": False, "None": None}
_STRING_PREFIXES: Final = frozenset({"r", "u", "b", "f", "br", "rb", "fr", "rf"})
_new_field: Final = tuple.__new__


def parse_fields(
    text: str, extra: Mapping[str, TypeSpec] | None = None
) -> tuple[tuple[Field, ...], tuple[Field, ...]]:
    """Parse signature text into its input and output fields.

    Args:
        text: Signature text such as ``"question: str -> answer: str"``.
        extra: Custom types for this call only, by name.

    Returns:
        The input fields and the output fields, in the order written.

    Raises:
        SignatureError: For anything that is not a valid signature, with the offset of the fault.
    """
    tokens = scan(text)
    tokens.append("")  # end of text
    parser = _Parser(text, tokens, extra)
    return parser.fields(True), parser.fields(False)


def parse_type(text: str) -> TypeExpr:
    """The type ``text`` names, as a field's type: spaces around it, and nothing else.

    This is how the quick path reads the type text after a field's colon: the same parser on a
    piece of the signature, resolving built-in and registered types (never per-call ones).

    Raises:
        SignatureError: If ``text`` is not one type and nothing more (a description after it, for
            instance) or is just ``None``. Its position is within ``text``: the quick path only
            uses it to give up, and the whole signature is parsed again for the real error.
    """
    tokens = scan(text)
    tokens.append("")
    parser = _Parser(text, tokens, None)
    node = parser.type_expr(0)
    if tokens[parser.i]:
        parser.fail(f"expected the end of the type, found {_describe(tokens[parser.i])}")
    if type(node) is not GenericType and _only_none(node):
        parser.fail("a field's type cannot be just None", 0)
    return node


def _describe(token: str) -> str:
    return "end of text" if not token else repr(token if len(token) <= 20 else token[:17] + "...")


class _Parser:
    """The reference parser: complete, and precise about errors; see :func:`parse_fields`."""

    __slots__ = ("extra", "i", "seen", "text", "tokens")

    def __init__(self, text: str, tokens: list[str], extra: Mapping[str, TypeSpec] | None) -> None:
        self.text = text
        self.tokens = tokens
        self.extra = extra
        self.i = 0
        self.seen: dict[str, bool] = {}

    def fail(self, message: str, index: int | None = None, shift: int = 0) -> NoReturn:
        """Raise a SignatureError at token ``index`` (default: the current one)."""
        index = self.i if index is None else index
        starts = offsets(self.text)
        position = starts[index] + shift if index < len(starts) else len(self.text.rstrip())
        raise SignatureError(message, self.text, position)

    def fields(self, inputs: bool) -> tuple[Field, ...]:
        tokens = self.tokens
        stop = "->" if inputs else ""
        found: list[Field] = []
        while tokens[self.i] != stop:
            found.append(self.field(inputs))
            token = tokens[self.i]
            if token == ",":  # nosec B105
                self.i += 1
            elif token != stop:
                self.fail_after_field(inputs, found[-1].name)
        self.i += 1
        return tuple(found)

    def field(self, inputs: bool) -> Field:
        tokens = self.tokens
        i = self.i
        name = tokens[i]
        if (
            name in self.seen
            or name in BAD_NAMES
            or name.startswith(BAD_PREFIXES)
            or not name.isidentifier()
            or not name.isascii()
        ):
            name = self.name(inputs)  # raises, or returns the name normalised
        typed = tokens[i + 1] == ":"
        field_type: TypeExpr = _STR_NODE
        if typed:
            self.i = i + 2
            field_type = self.type_expr(0)
            if type(field_type) is not GenericType and _only_none(field_type):
                self.fail("a field's type cannot be just None", i + 2)
            i = self.i
        else:
            i += 1
        description = None
        token = tokens[i]
        if token[:1] in _QUOTES:
            self.i = i
            description = self.string(token)
            i += 1
        self.i = i
        self.seen[name] = inputs
        return _new_field(Field, (name, field_type, description, typed))

    def fail_after_field(self, inputs: bool, name: str) -> NoReturn:
        token = self.tokens[self.i]
        if token == "->":  # nosec B105
            self.fail("a signature has exactly one '->'")
        if not token:
            self.fail("expected '->' between the inputs and the outputs")
        expected = "',' or '->'" if inputs else "',' or end of text"
        hint = " (default values are not supported)" if token.startswith("=") else ""
        self.fail(f"expected {expected} after field {name!r}, found {_describe(token)}{hint}")

    def name(self, inputs: bool) -> str:
        """Check the field name at the current token; return it NFKC-normalised, as Python does."""
        token = self.tokens[self.i]
        if not token.isidentifier():
            if token == "->" and not inputs:  # nosec B105
                self.fail("a signature has exactly one '->'")
            if not token and inputs:
                self.fail("expected '->' between the inputs and the outputs")
            self.fail(f"expected a field name, found {_describe(token)}")
        if not token.isascii():
            import unicodedata

            token = unicodedata.normalize("NFKC", token)  # as Python does with identifiers
        if token in BAD_NAMES or token.startswith(BAD_PREFIXES):
            if token in KEYWORDS:
                self.fail(f"{token!r} is a Python keyword and cannot be a field name")
            if token.startswith("_"):
                self.fail(f"field names cannot start with an underscore: {token!r}")
            if token in RESERVED_NAMES:
                self.fail(f"{token!r} is reserved by DSPy (a member of dspy.Signature)")
            self.fail(
                f"{token!r} is in pydantic's protected namespaces (model_dump*, model_validate*)"
            )
        previous = self.seen.get(token)
        if previous is not None:
            if previous == inputs:
                self.fail(f"field {token!r} is defined twice")
            self.fail(f"field {token!r} is both an input and an output")
        return token

    def type_expr(self, depth: int) -> TypeExpr:
        """``primary ("|" primary)*``; a primary is a dotted name with optional arguments."""
        tokens = self.tokens
        members: list[TypeExpr] = []
        while True:
            start = self.i
            name = tokens[start]
            if not name.isidentifier():
                self.fail_type(name)
            self.i += 1
            while tokens[self.i] == ".":
                part = tokens[self.i + 1]
                if not part.isidentifier():
                    self.fail(f"expected a name after '.', found {_describe(part)}", self.i + 1)
                name = f"{name}.{part}"
                self.i += 2
            spec = BUILTIN_TYPES.get(name) or lookup(name, self.extra)
            if spec is None:
                self.fail_unknown(name, start)
            if tokens[self.i] == "[":
                members.append(self.subscript(spec, depth + 1))
            elif spec.bare:
                members.append(spec.node)
            else:
                self.fail(f"{name} needs arguments in brackets, e.g. {_example(spec)}", start)
            if tokens[self.i] != "|":
                return members[0] if len(members) == 1 else make_union(members)
            self.i += 1

    def fail_type(self, token: str) -> NoReturn:
        if token in _QUOTES:
            self.fail("unterminated string")
        if token[:1] in _QUOTES:
            self.fail("expected a type, found a string (types are written unquoted)")
        if "(" in token or ")" in token:
            self.fail(
                f"expected a type, found {_describe(token)} (parentheses and calls are not "
                "allowed: nothing in a signature is evaluated)"
            )
        self.fail(f"expected a type, found {_describe(token)}")

    def fail_unknown(self, name: str, start: int) -> NoReturn:
        import difflib

        names = {known.lower(): known for known in known_names(self.extra)}
        close = difflib.get_close_matches(name.lower(), names, n=1)
        hint = f"; did you mean {names[close[0]]!r}?" if close else ""
        self.fail(
            f"unknown type {name!r}{hint} (custom types must be registered: "
            f"Signature.parse(..., types={{{name!r}: ...}}) or register_type(); "
            "nothing named in the text is ever imported)",
            start,
        )

    def subscript(self, spec: TypeSpec, depth: int) -> TypeExpr:
        tokens = self.tokens
        if spec.kind == PLAIN:
            self.fail(f"{spec.name} takes no arguments")
        if depth > MAX_TYPE_DEPTH:
            self.fail(f"type arguments nest more than {MAX_TYPE_DEPTH} deep")
        self.i += 1
        args: list[TypeExpr] = []
        starts: list[int] = []
        while True:
            starts.append(self.i)
            args.append(self.argument(spec, args, depth))
            token = tokens[self.i]
            if token == ",":  # nosec B105
                self.i += 1
                if tokens[self.i] != "]":
                    continue
            elif token != "]":  # nosec B105
                self.fail_in_brackets(spec, token)
            self.i += 1
            return self.build(spec, args, starts)

    def argument(self, spec: TypeSpec, args: list[TypeExpr], depth: int) -> TypeExpr:
        if spec.kind == LITERAL or spec.kind == LANGUAGE:
            return self.value(spec)
        if args and args[-1] is ELLIPSIS:
            self.fail("'...' must be the last argument")
        if self.tokens[self.i] != "...":
            return self.type_expr(depth)
        if spec.kind != TUPLE or len(args) != 1:
            self.fail(
                "'...' is only allowed as the second argument of tuple, as in tuple[int, ...]"
            )
        self.i += 1
        return ELLIPSIS

    def fail_in_brackets(self, spec: TypeSpec, token: str) -> NoReturn:
        if token == "." and spec.kind == LITERAL:  # nosec B105
            self.fail("Literal values are strings, integers, True, False or None (not floats)")
        self.fail(f"expected ',' or ']' in {spec.name}[...], found {_describe(token)}")

    def build(self, spec: TypeSpec, args: list[TypeExpr], starts: list[int]) -> TypeExpr:
        """The node for ``spec[args]``, once its arguments are checked against its kind."""
        kind = spec.kind
        if kind == UNION:
            return make_union(args)
        if kind == LITERAL:
            unique = list(dict.fromkeys(args))  # Literal['a', 'a'] is Literal['a'], as in typing
            return GenericType(spec, tuple(unique))
        wanted = 1 if kind in (OPTIONAL, LANGUAGE) else spec.arity if kind == GENERIC else len(args)
        if len(args) != wanted:
            plural = "" if wanted == 1 else "s"
            where = starts[wanted] if len(args) > wanted else self.i - 1
            self.fail(f"{spec.name} takes {wanted} argument{plural}, got {len(args)}", where)
        if kind == OPTIONAL:
            return make_union([args[0], _NONE_NODE])
        return GenericType(spec, tuple(args))

    def value(self, spec: TypeSpec) -> ValueArg:
        token = self.tokens[self.i]
        head = token[:1]
        value: object
        if head in _QUOTES:
            value = self.string(token)
        elif spec.kind == LANGUAGE:
            self.fail("expected the language as a string, as in dspy.Code['python']")
        elif token in _CONSTANTS:
            value = _CONSTANTS[token]
        elif token.isascii() and (head.isdigit() or (head == "-" and token[1:2].isdigit())):
            value = self.integer(token)
        elif token in _STRING_PREFIXES and self.tokens[self.i + 1][:1] in _QUOTES:
            self.fail("string prefixes (r, b, u, f) are not supported")
        else:
            self.fail(
                "expected a Literal value (a string, an integer, True, False or None), "
                f"found {_describe(token)}"
            )
        self.i += 1
        return ValueArg(value)

    def integer(self, token: str) -> int:
        try:
            return int(token, 0)  # 10, -3, 0x1F and 1_000, as Python reads them; not 007
        except ValueError:
            self.fail(f"{_describe(token)} is not an integer")

    def string(self, token: str) -> str:
        if token in _QUOTES:
            self.fail("unterminated string")
        try:
            return decode_string(token)
        except EscapeError as error:
            self.fail(error.message, shift=error.index)


def _only_none(node: TypeExpr) -> bool:
    """Whether ``node`` is ``None``, ``NoneType``, or a union of just those."""
    if isinstance(node, NamedType):
        return node.spec is _NONE_SPEC or node.spec is _NONETYPE_SPEC
    return isinstance(node, UnionType) and all(map(_only_none, node.members))


def _example(spec: TypeSpec) -> str:
    examples = {OPTIONAL: "[str]", UNION: "[int, str]", LITERAL: "['a', 'b']", TUPLE: "[int, ...]"}
    return spec.name + examples.get(spec.kind, "[str]" if spec.arity == 1 else "[str, int]")
