"""Conditions for :class:`~dspex_jobs.pipeline.steps.When`: a tiny, safe comparison language.

A predicate reads one context field and compares it with a JSON literal; nothing is ever
evaluated as code, so a pipeline document from anywhere cannot run anything. The forms::

    confidence >= 0.5          a comparison: ==, !=, <, <=, >, >=
    label == "billing"         values are JSON: numbers, "strings", true, false, null, [lists]
    label in ["a", "b"]        membership (also: not in)
    len(passages) > 0          the length of a list, string or mapping
    needs_search               truthy
    not needs_search           falsy
    retrieve.passages          a dotted name reads one output of a named step

A field missing from the context is ``None`` (so ``not x`` holds and ``x > 1`` does not).
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from dspex_jobs.errors import PipelineValidationError

__all__ = ["OPERATORS", "Predicate"]

_COMPARE: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "in": lambda a, b: a in b,
    "not in": lambda a, b: a not in b,
}

OPERATORS: Final = ("truthy", "falsy", *_COMPARE)
"""Every operator a predicate may use."""

_FIELD = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)?"
_SYNTAX = re.compile(
    rf"^\s*(?:(?P<not>not)\s+(?P<negated>{_FIELD})"
    rf"|(?P<len>len\(\s*)?(?P<field>{_FIELD})(?(len)\s*\))"
    rf"(?:\s*(?P<op>==|!=|<=|>=|<|>|not\s+in|in)\s*(?P<value>.+?))?)\s*$"
)


@dataclass(frozen=True)
class Predicate:
    """One condition on the context.

    Attributes:
        field: The context field it reads (``step.field`` reads one output of a step).
        op: One of :data:`OPERATORS`.
        value: The JSON value compared against (unused by ``truthy``/``falsy``).
        length: Compare ``len(field)`` instead of the field.
    """

    field: str
    op: str = "truthy"
    value: Any = None
    length: bool = False

    def __post_init__(self) -> None:
        if self.op not in OPERATORS:
            raise PipelineValidationError(
                f"unknown predicate operator {self.op!r}; expected one of {', '.join(OPERATORS)}",
                field="when",
            )
        if not re.fullmatch(_FIELD, self.field):
            raise PipelineValidationError(
                f"predicate field {self.field!r} is not a field name", field="when"
            )

    @classmethod
    def parse(cls, source: str | Mapping[str, Any] | Predicate) -> Predicate:
        """Read a predicate from its text (see the module docstring) or mapping form.

        Raises:
            PipelineValidationError: It is neither.
        """
        if isinstance(source, Predicate):
            return source
        if isinstance(source, Mapping):
            unknown = set(source) - {"field", "op", "value", "length"}
            if unknown or "field" not in source:
                raise PipelineValidationError(
                    f"a predicate mapping takes field, op, value, length; got {sorted(source)}",
                    field="when",
                )
            return cls(
                str(source["field"]),
                str(source.get("op", "truthy")),
                source.get("value"),
                bool(source.get("length", False)),
            )
        match = _SYNTAX.match(str(source))
        if match is None:
            raise PipelineValidationError(
                f"cannot read the condition {source!r}: expected 'field', 'not field', "
                "'field OP value' or 'len(field) OP value' with OP one of "
                "==, !=, <, <=, >, >=, in, not in",
                field="when",
            )
        if match["negated"]:
            return cls(match["negated"], "falsy")
        op = re.sub(r"\s+", " ", match["op"]) if match["op"] else "truthy"
        value = _literal(match["value"], str(source)) if match["value"] else None
        return cls(match["field"], op, value, bool(match["len"]))

    @property
    def source(self) -> str:
        """The context field this predicate needs (the step name, for ``step.field``)."""
        return self.field

    def evaluate(self, context: Mapping[str, Any]) -> bool:
        """Whether the condition holds for ``context``; a type mismatch is ``False``."""
        value = _lookup(context, self.field)
        if self.length:
            value = len(value) if isinstance(value, list | str | dict) else 0
        if self.op == "truthy":
            return bool(value)
        if self.op == "falsy":
            return not value
        try:
            return bool(_COMPARE[self.op](value, self.value))
        except TypeError:
            return False

    def to_text(self) -> str:
        """The text form, which :meth:`parse` reads back to an equal predicate."""
        field = f"len({self.field})" if self.length else self.field
        if self.op == "truthy":
            return field
        if self.op == "falsy":
            return f"not {field}"
        return f"{field} {self.op} {json.dumps(self.value)}"

    def __str__(self) -> str:
        return self.to_text()


def _lookup(context: Mapping[str, Any], path: str) -> Any:
    head, _, tail = path.partition(".")
    value = context.get(head)
    if tail:
        value = value.get(tail) if isinstance(value, Mapping) else None
    return value


def _literal(text: str, whole: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise PipelineValidationError(
            f"in the condition {whole!r}, {text!r} is not a JSON value (quote strings: "
            '"like this")',
            field="when",
        ) from None
