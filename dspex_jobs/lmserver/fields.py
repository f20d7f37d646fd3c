"""Output field types as DSPy renders them, turned into something the server can answer.

DSPy's adapters describe each field as ``1. `name` (type): description`` and, for
non-string outputs, add a note to the structure section, e.g.::

    {label}    # note: the value you produce must exactly match (no extra characters) one of: a; b
    {ok}       # note: the value you produce must be True or False
    {items}    # note: the value you produce must adhere to the JSON schema: {"type": "array"}

:func:`field_spec` combines the rendered type name and that note into a :class:`FieldSpec`
whose ``kind`` is one of ``str``, ``int``, ``float``, ``bool``, ``choice``, ``list`` or
``json``. Nothing here imports DSPy.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["FieldSpec", "Kind", "field_spec", "split_type_args"]

Kind = Literal["str", "int", "float", "bool", "choice", "list", "json"]

_SCALARS: dict[str, Kind] = {
    "str": "str",
    "string": "str",
    "Reasoning": "str",
    "int": "int",
    "float": "float",
    "bool": "bool",
}
_SEQUENCES = {"list", "List", "tuple", "Tuple", "set", "Set", "frozenset", "Sequence"}
_MAPPINGS = {"dict", "Dict", "Mapping"}
_NONE_NAMES = {"None", "NoneType"}
_ONE_OF = re.compile(r"must (?:exactly match \(no extra characters\) )?(?:be )?one of: (.*)$")
_SCHEMA = re.compile(r"must adhere to the JSON schema: (.*)$")


@dataclass(frozen=True)
class FieldSpec:
    """One output field the server must produce.

    Attributes:
        name: Field name, as in ``[[ ## name ## ]]``.
        type_name: The type as DSPy rendered it (``list[str]``, ``Literal['a', 'b']``).
        kind: How to answer it (see the module docstring).
        choices: Allowed values for ``choice`` fields, in prompt order.
        item_kind: Kind of the items of a ``list`` field.
        schema: JSON schema of a ``json`` field (or of a list's items), when DSPy gave one.
        description: The field's description from the prompt.
    """

    name: str
    type_name: str = "str"
    kind: Kind = "str"
    choices: tuple[Any, ...] = ()
    item_kind: Kind = "str"
    schema: dict[str, Any] | None = field(default=None, compare=False)
    description: str = ""


def split_type_args(text: str, sep: str = ",") -> list[str]:
    """Split ``a, b[c, d], 'e, f'`` at top-level ``sep``, respecting brackets and quotes."""
    parts: list[str] = []
    depth, quote, start = 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote and text[i - 1] != "\\":
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def _generic(type_name: str) -> tuple[str, list[str]]:
    """``list[str]`` -> (``list``, [``str``]); ``int`` -> (``int``, [])."""
    name = type_name.strip()
    if name.endswith("]") and "[" in name:
        head, _, rest = name.partition("[")
        return head.strip().rsplit(".", 1)[-1], split_type_args(rest[:-1])
    return name.rsplit(".", 1)[-1], []


def _strip_optional(type_name: str) -> str:
    head, args = _generic(type_name)
    if head == "Optional" and args:
        return args[0]
    if head == "Union":
        rest = [a for a in args if a not in _NONE_NAMES]
        return rest[0] if len(rest) == 1 else type_name
    union = split_type_args(type_name, "|")
    if len(union) > 1:
        rest = [a for a in union if a not in _NONE_NAMES]
        return rest[0] if len(rest) == 1 else type_name
    return type_name


def _literal_choices(args: list[str]) -> tuple[Any, ...]:
    values: list[Any] = []
    for arg in args:
        try:
            values.append(ast.literal_eval(arg))
        except (ValueError, SyntaxError):
            values.append(arg.strip("'\""))
    return tuple(values)


def _note_choices(note: str) -> tuple[str, ...]:
    match = _ONE_OF.search(note)
    if not match:
        return ()
    return tuple(v.strip() for v in match.group(1).split(";") if v.strip())


def _note_schema(note: str) -> dict[str, Any] | None:
    match = _SCHEMA.search(note)
    if not match:
        return None
    try:
        schema = json.loads(match.group(1))
    except ValueError:
        return None
    return schema if isinstance(schema, dict) else None


def _simple_kind(type_name: str) -> Kind | None:
    head, args = _generic(_strip_optional(type_name))
    if head in _SCALARS and not args:
        return _SCALARS[head]
    if head == "Literal":
        return "choice"
    if head in _SEQUENCES:
        return "list"
    if head in _MAPPINGS:
        return "json"
    return None


def field_spec(name: str, type_name: str, note: str = "", description: str = "") -> FieldSpec:
    """Decide how to answer one output field.

    Args:
        name: The field name.
        type_name: The type as rendered in "Your output fields are:" (``str`` when unknown).
        note: The ``# note: the value you produce ...`` text from the structure section.
        description: The field's description.

    Returns:
        The field's :class:`FieldSpec`.
    """
    base = _strip_optional(type_name or "str")
    args = _generic(base)[1]
    schema = _note_schema(note)
    common: dict[str, Any] = {"name": name, "type_name": type_name, "description": description}
    kind = _simple_kind(base)
    if kind == "choice":
        return FieldSpec(kind="choice", choices=_literal_choices(args), **common)
    if kind == "list":
        item = args[0] if args else "str"
        item_kind = _simple_kind(item) or ("json" if schema else "str")
        if item_kind == "list":
            item_kind = "json"
        item_schema = schema.get("items") if schema else None
        return FieldSpec(
            kind="list",
            item_kind=item_kind,
            choices=_literal_choices(_generic(item)[1]) if item_kind == "choice" else (),
            schema=item_schema if isinstance(item_schema, dict) else None,
            **common,
        )
    if kind is not None:
        return FieldSpec(kind=kind, schema=schema, **common)
    if "must be True or False" in note:
        return FieldSpec(kind="bool", **common)
    if "single int value" in note:
        return FieldSpec(kind="int", **common)
    if "single float value" in note:
        return FieldSpec(kind="float", **common)
    choices = _note_choices(note)
    if choices:
        return FieldSpec(kind="choice", choices=choices, **common)
    if schema is not None:
        return FieldSpec(kind="json", schema=schema, **common)
    return FieldSpec(kind="str", **common)
