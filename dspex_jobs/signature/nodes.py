"""The parsed form of a signature: fields and the type expressions on them.

A parsed type is a small immutable tree, not a Python type: building ``typing.List[str]`` or
importing ``dspy`` to resolve ``dspy.Image`` is deferred until a consumer asks
(:meth:`TypeExpr.annotation` on the worker, :meth:`TypeExpr.producer_type` in
``validate_inputs``). The tree knows its canonical text, ``str(node)``, which re-parses to an equal
tree; equality is structural, so two signatures written differently but meaning the same thing
(``Optional[int]`` and ``int | None``) compare equal.
"""

from __future__ import annotations

import typing
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from dspex_jobs.signature.types import TypeSpec

__all__ = ["ELLIPSIS", "Field", "GenericType", "NamedType", "TypeExpr", "UnionType", "ValueArg"]

PLAIN = "plain"
"""Kind of a type that takes no arguments (``str``, ``dspy.Image``, custom classes)."""
GENERIC = "generic"
"""Kind of a container with a fixed number of type arguments (``list[str]``, ``Dict[str, int]``)."""
TUPLE = "tuple"
"""Kind of ``tuple``/``Tuple``: one or more type arguments, or ``X, ...``."""
OPTIONAL = "optional"
"""Kind of ``Optional[X]``: exactly one type argument."""
UNION = "union"
"""Kind of ``Union[X, ...]``: one or more type arguments."""
LITERAL = "literal"
"""Kind of ``Literal[...]``: one or more values (strings, integers, booleans, None)."""
LANGUAGE = "language"
"""Kind of ``dspy.Code``: bare, or with one string, the language (``dspy.Code['python']``)."""


class TypeExpr:
    """Base of the type tree. ``str()`` is the canonical text; equality is structural."""

    __slots__ = ()

    def key(self) -> tuple[Any, ...]:
        """What equality and hashing compare."""
        raise NotImplementedError

    def annotation(self) -> Any:
        """The annotation DSPy puts on a field of this type (imports DSPy for DSPy types)."""
        raise NotImplementedError

    def producer_type(self) -> Any:
        """The type inputs are validated against on the producer, where DSPy is not imported."""
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        return (
            isinstance(other, TypeExpr) and type(other) is type(self) and self.key() == other.key()
        )

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.key()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class NamedType(TypeExpr):
    """A type named without arguments: ``str``, ``list``, ``None``, ``dspy.Image``, ``Person``."""

    __slots__ = ("spec",)

    def __init__(self, spec: TypeSpec) -> None:
        self.spec = spec

    def key(self) -> tuple[Any, ...]:
        return (self.spec,)

    def annotation(self) -> Any:
        return self.spec.resolve_annotation()

    def producer_type(self) -> Any:
        return self.spec.resolve_producer()

    def __str__(self) -> str:
        return self.spec.name


class GenericType(TypeExpr):
    """A subscripted type: ``list[str]``, ``Literal['a', 1]``, ``dspy.Code['python']``.

    ``args`` holds types, or :class:`ValueArg` for literal values and the ``...`` of
    ``tuple[int, ...]``.
    """

    __slots__ = ("args", "spec")

    def __init__(self, spec: TypeSpec, args: tuple[TypeExpr, ...]) -> None:
        self.spec = spec
        self.args = args

    def key(self) -> tuple[Any, ...]:
        return (self.spec, self.args)

    def annotation(self) -> Any:
        params = tuple(arg.annotation() for arg in self.args)
        return self.spec.resolve_annotation()[params if len(params) > 1 else params[0]]

    def producer_type(self) -> Any:
        if self.spec.kind == LANGUAGE:  # dspy.Code['python'] is checked as dspy.Code
            return self.spec.resolve_producer()
        params = tuple(arg.producer_type() for arg in self.args)
        return self.spec.resolve_producer()[params if len(params) > 1 else params[0]]

    def __str__(self) -> str:
        return f"{self.spec.name}[{', '.join(map(str, self.args))}]"


class UnionType(TypeExpr):
    """``A | B``, also written ``Union[A, B]`` or (with ``None``) ``Optional[A]``.

    Members are flattened and de-duplicated, as :data:`typing.Union` does, so there are always at
    least two of them.
    """

    __slots__ = ("members",)

    def __init__(self, members: tuple[TypeExpr, ...]) -> None:
        self.members = members

    def key(self) -> tuple[Any, ...]:
        return self.members

    def annotation(self) -> Any:
        return typing.Union[tuple(member.annotation() for member in self.members)]  # noqa: UP007

    def producer_type(self) -> Any:
        return typing.Union[tuple(member.producer_type() for member in self.members)]  # noqa: UP007

    def __str__(self) -> str:
        return " | ".join(map(str, self.members))


class ValueArg(TypeExpr):
    """A value inside brackets: a ``Literal`` member, a ``dspy.Code`` language, or ``...``."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def key(self) -> tuple[Any, ...]:
        return (type(self.value), self.value)  # Literal[1] is not Literal[True]

    def annotation(self) -> Any:
        return self.value

    def producer_type(self) -> Any:
        return self.value

    def __str__(self) -> str:
        return "..." if self.value is Ellipsis else repr(self.value)


ELLIPSIS = ValueArg(Ellipsis)
"""The ``...`` of ``tuple[int, ...]``."""


def make_union(members: list[TypeExpr]) -> TypeExpr:
    """Flatten nested unions and drop repeats, as :data:`typing.Union` does.

    Returns the single member when only one is left (``Union[int, int]`` is ``int``).
    """
    flat: list[TypeExpr] = []
    for member in members:
        for item in member.members if isinstance(member, UnionType) else (member,):
            if item not in flat:
                flat.append(item)
    return flat[0] if len(flat) == 1 else UnionType(tuple(flat))


class Field(NamedTuple):
    """One input or output of a signature.

    Attributes:
        name: The field's name, a Python identifier.
        type: Its type; ``str(field.type)`` is the canonical type text.
        description: The quoted description written after the type, if any (DSPy's ``desc``).
        typed: False when the text gave no type (the type is then ``str``); DSPy marks such inputs.
    """

    name: str
    type: TypeExpr
    description: str | None = None
    typed: bool = True

    def __str__(self) -> str:
        text = f"{self.name}: {self.type}" if self.typed else self.name
        if self.description is not None:
            text += f" {self.description!r}"
        return text
