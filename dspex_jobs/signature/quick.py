"""The quick path: the common signature parsed in one tight loop, or not at all.

Most signatures are lists of ``name`` and ``name: simple_type`` fields, sometimes with a
one-argument generic (``context: list[str]``). For those, the reference parser's method calls
per token are most of the cost, so this loop reads the tokens directly, with every lookup bound
to a local. It gives up (returns ``None``) at the first thing it does not handle, including every
error, and the reference parser takes over; a property test checks the two agree whenever this
one returns a result.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from dspex_jobs.signature.names import BAD_NAMES, BAD_PREFIXES
from dspex_jobs.signature.nodes import GENERIC, Field, GenericType, TypeExpr
from dspex_jobs.signature.types import BUILTIN_TYPES, TypeSpec

__all__ = ["quick_parse"]

_SIMPLE_NODES: Final[Mapping[str, TypeExpr]] = {
    name: spec.node
    for name, spec in BUILTIN_TYPES.items()
    if spec.bare and spec.annotation is not None and spec.annotation is not type(None)
}
"""What the quick path accepts as a type on its own, or as the argument of a generic."""
_ONE_ARG_SPECS: Final[Mapping[str, TypeSpec]] = {
    name: spec for name, spec in BUILTIN_TYPES.items() if spec.kind == GENERIC and spec.arity == 1
}
"""What the quick path accepts as ``generic`` in ``generic[simple]``."""
_STR_NODE: Final = BUILTIN_TYPES["str"].node
_new_field: Final = tuple.__new__


def quick_parse(tokens: list[str]) -> tuple[tuple[Field, ...], tuple[Field, ...]] | None:
    """The fields of ``tokens`` (ending with ``""``), or ``None`` for the reference parser.

    Handles fields written ``name``, ``name: simple`` and ``name: generic[simple]`` with built-in
    types, in ASCII text (the caller checks). Anything else (custom or dotted types, unions,
    descriptions, and every error) returns ``None``.
    """
    simple, generics, new_field, field = _SIMPLE_NODES, _ONE_ARG_SPECS, _new_field, Field
    bad_names, bad_prefixes, untyped = BAD_NAMES, BAD_PREFIXES, _STR_NODE
    inputs: list[Field] = []
    outputs: list[Field] = []
    found, stop = inputs, "->"
    seen: set[str] = set()
    i = 0
    while True:
        name = tokens[i]
        if name == stop:
            if found is outputs:
                return tuple(inputs), tuple(outputs)
            found, stop = outputs, ""
            i += 1
            continue
        if name in seen or name in bad_names or name.startswith(bad_prefixes):
            return None
        if not name.isidentifier():
            return None
        seen.add(name)
        if tokens[i + 1] != ":":
            found.append(new_field(field, (name, untyped, None, False)))
            i += 1
        else:
            if not tokens[i + 2]:  # "name:" at the end of the text
                return None
            node = simple.get(tokens[i + 2])
            if tokens[i + 3] == "[":
                spec = generics.get(tokens[i + 2])
                inner = simple.get(tokens[i + 4])
                if spec is None or inner is None or tokens[i + 5] != "]":
                    return None
                node = GenericType(spec, (inner,))
                i += 6
            elif node is None:
                return None
            else:
                i += 3
            found.append(new_field(field, (name, node, None, True)))
        if tokens[i] == ",":
            i += 1
        elif tokens[i] != stop:
            return None
