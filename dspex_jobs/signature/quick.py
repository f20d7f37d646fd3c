"""The quick path: a signature cut into fields with string methods, or not parsed at all.

In CPython a parse that walks tokens one at a time costs a method call or a regex match per
token, which is most of a budget of a few microseconds. So the common signature is not
tokenized: :meth:`str.partition` splits it at ``->``, :meth:`str.split` into fields at commas,
and each field at its first ``:``. The names are checked here. The text after a colon is looked
up in a bounded cache of type texts; only a text not seen before is tokenized and parsed (by the
reference parser's :func:`~.parser.parse_type`), so ``list[str]`` or ``Literal['a', 'b']`` is
parsed once per process, not once per signature. A cached text whose brackets are still open
(``" dict[str"``) says so, and the field goes on past the next comma; one that is not a type
(``" str 'a description'"``) says that too, so giving up on it is as cheap as the next time.

It gives up (returns ``None``) at the first thing it does not handle, and the reference parser
takes over: every error (so errors and their positions come from one place), descriptions,
non-ASCII text (names need normalising), and per-call types (the caller checks).

Why cutting at characters gives the reference parser's answer: outside quoted strings, every
``,``, ``:`` and ``->`` is a token of its own, so the pieces are runs of whole tokens. A cut
inside a quoted string leaves its piece with an unterminated quote, which no name is and which
``parse_type`` refuses, so such text always falls back. A property test checks the two parsers
agree on every text this one accepts.

The hot loop avoids what is slow in CPython 3.11 even in C: ``str.startswith`` with a tuple and
``str.count`` (argument-tuple parsing), and calling an ``lru_cache`` wrapper (no vectorcall);
a plain dict's ``get`` is several times cheaper.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from dspex_jobs.errors import SignatureError
from dspex_jobs.signature.names import BAD_NAMES, BAD_PREFIXES
from dspex_jobs.signature.nodes import Field, TypeExpr
from dspex_jobs.signature.parser import parse_type
from dspex_jobs.signature.types import BUILTIN_TYPES

__all__ = ["TYPE_CACHE_SIZE", "clear_type_cache", "quick_parse"]

TYPE_CACHE_SIZE: Final = 1024
"""How many type texts the quick path keeps parsed (the oldest go first)."""


class _Mark(TypeExpr):
    """A cached verdict on a type text that is not a type: brackets still open, or refused."""

    __slots__ = ()


_OPEN: Final = _Mark()
"""The type text's brackets are still open: the field goes on past the next comma."""
_REFUSED: Final = _Mark()
"""The type text is not one type (an error, or a description after it): give up."""
_types: dict[str, TypeExpr] = {}
"""Type text (as written after the colon, spaces included) -> its type, or a mark."""
_STR_NODE: Final = BUILTIN_TYPES["str"].node
_new_field: Final = tuple.__new__


def clear_type_cache() -> None:
    """Forget every parsed type text (registered types changed what a name means)."""
    _types.clear()


def quick_parse(text: str) -> tuple[tuple[Field, ...], tuple[Field, ...]] | None:
    """The input and output fields of ``text``, or ``None`` for the reference parser.

    Only built-in and registered types are known here: callers with per-call types use the
    reference parser.
    """
    if not text.isascii():
        return None
    left, arrow, right = text.partition("->")
    if not arrow:
        return None
    new_field, field, untyped, get = _new_field, Field, _STR_NODE, _types.get
    open_, refused = _OPEN, _REFUSED
    seen: set[str] = set()
    add = seen.add
    sides: list[tuple[Field, ...]] = []
    for side in (left, right):
        found: list[Field] = []
        pieces = iter(side.split(","))
        for piece in pieces:
            name, colon, type_text = piece.partition(":")
            name = name.strip()
            if name in seen or not name.isidentifier() or name[0] == "_":
                if name or colon or next(pieces, None) is not None:
                    return None
                break  # nothing after a trailing comma, or an empty side
            add(name)
            if not colon:
                found.append(new_field(field, (name, untyped, None, False)))
                continue
            node = get(type_text)
            if node is None or node is open_ or node is refused:
                node = _resolve(type_text, pieces)
                if node is None:
                    return None
            found.append(new_field(field, (name, node, None, True)))
        sides.append(tuple(found))
    if not BAD_NAMES.isdisjoint(seen):  # keywords and DSPy's reserved names
        return None
    if "model_" in text and any(name.startswith(BAD_PREFIXES) for name in seen):
        return None  # pydantic's protected namespaces
    return sides[0], sides[1]


def _resolve(type_text: str, pieces: Iterator[str]) -> TypeExpr | None:
    """The type of a field's text after the colon, taking pieces past commas inside brackets.

    Returns ``None`` if the text is not one type, or its brackets never close. Verdicts are
    cached like types, so a signature with a description does not pay twice for trying.
    """
    types = _types
    while True:
        node = types.get(type_text)
        if node is None:
            node = _verdict(type_text)
            if len(types) >= TYPE_CACHE_SIZE:
                types.pop(next(iter(types), type_text), None)  # the oldest
            types[type_text] = node
        if node is _REFUSED:
            return None
        if node is not _OPEN:
            return node
        more = next(pieces, None)
        if more is None:
            return None
        type_text = f"{type_text},{more}"


def _verdict(type_text: str) -> TypeExpr:
    """What a type text not seen before means: a type, or a mark."""
    if type_text.count("[") > type_text.count("]"):
        return _OPEN
    try:
        return parse_type(type_text)
    except SignatureError:
        return _REFUSED
