"""How the task that ends a ``Parallel`` combines one field written by several branches.

The branches' own values stay under their step names; the merged value is written flat. A
branch that did not write the field (it was skipped, or its condition did not hold) is left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["merge_values"]


def merge_values(rules: Mapping[str, Sequence[Any]], context: Mapping[str, Any]) -> dict[str, Any]:
    """The merged fields.

    Args:
        rules: Field -> ``[rule, [step names in branch order]]`` (a plan's merge node).
        context: The context, holding at least each named step's outputs.

    Returns:
        Field -> merged value (``first`` with no value present writes nothing).
    """
    merged: dict[str, Any] = {}
    for field, (rule, steps) in rules.items():
        values = [
            context[step][field]
            for step in steps
            if isinstance(context.get(step), Mapping) and field in context[step]
        ]
        if rule == "list":
            merged[field] = values
        elif rule == "first":
            if values:
                merged[field] = values[0]
        else:
            joined = [
                item for value in values for item in (value if isinstance(value, list) else [value])
            ]
            merged[field] = _unique(joined) if rule == "unique" else joined
    return merged


def _unique(items: list[Any]) -> list[Any]:
    seen: list[Any] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen
