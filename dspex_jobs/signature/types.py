"""The type registry: every type name a signature may mention, and what it means on each side.

DSPy resolves a type name by looking it up in :mod:`typing`, then among a few builtins, and
failing that by *importing a module of that name* (``x: os.PathLike`` imports ``os``). A producer
must never do that with text it was handed, so here every name is listed up front:

* builtins (``str``, ``list``, ...), ``Any``, ``None``, the :mod:`typing` spellings (``List``,
  ``Optional``, ``Literal``, also written ``typing.List``), a few well-known stdlib classes
  (``datetime.datetime``, ``uuid.UUID``, ...) and DSPy's own types (``dspy.Image``, ...);
* custom types, registered project-wide with :func:`register_type` or passed per call as
  ``Signature.parse(..., types={"Person": Person})``.

Each :class:`TypeSpec` knows two meanings. Its *annotation* is what DSPy would put on the field
(resolved lazily, so ``dspy.Image`` imports DSPy only on the worker). Its *producer type* is what
``validate_inputs`` checks on the producer, where DSPy is not imported: DSPy's media and history
types accept the JSON-able shapes they are sent as (a string or an object; see
``docs/signatures.md``).
"""

from __future__ import annotations

import importlib
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, NamedTuple

from dspex_jobs.signature.nodes import (
    GENERIC,
    LANGUAGE,
    LITERAL,
    OPTIONAL,
    PLAIN,
    TUPLE,
    UNION,
    NamedType,
)

__all__ = [
    "BUILTIN_TYPES",
    "TypeSpec",
    "lookup",
    "register_type",
    "registered_types",
    "unregister_type",
]


class LazyRef(NamedTuple):
    """An attribute of a module that is imported only when the annotation is needed."""

    module: str
    attribute: str

    def resolve(self) -> Any:
        """Import the module and return the attribute."""
        return getattr(importlib.import_module(self.module), self.attribute)


class TypeSpec:
    """What one type name means.

    Args:
        name: Canonical spelling, used in canonical signature text (``List``, ``dspy.Image``).
        kind: How arguments are parsed: one of the kind constants of :mod:`.nodes`.
        annotation: The object DSPy puts on the field, or a :class:`LazyRef` to it.
        producer: What inputs are checked against on the producer; ``None`` means the annotation.
        arity: Number of type arguments for ``GENERIC`` kinds.
        bare: Whether the name may appear without arguments (``list`` may, ``List`` may not).
    """

    __slots__ = ("_key", "annotation", "arity", "bare", "kind", "name", "node", "producer")

    def __init__(
        self,
        name: str,
        kind: str,
        annotation: object,
        producer: object = None,
        arity: int = 0,
        bare: bool = True,
    ) -> None:
        self.name = name
        self.kind = kind
        self.annotation = annotation
        self.producer = producer
        self.arity = arity
        self.bare = bare
        self._key = (name, kind, arity, bare, annotation, producer)
        self.node = NamedType(self)

    def resolve_annotation(self) -> Any:
        """The object DSPy would use, importing its module if it is a :class:`LazyRef`."""
        target = self.annotation
        return target.resolve() if isinstance(target, LazyRef) else target

    def resolve_producer(self) -> Any:
        """The type ``validate_inputs`` checks values against (never imports DSPy)."""
        if self.producer is not None:
            return self.producer
        return self.resolve_annotation()

    def __eq__(self, other: object) -> bool:
        return self is other or (isinstance(other, TypeSpec) and self._key == other._key)

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        return f"TypeSpec({self.name!r}, {self.kind!r})"


def _json_shapes() -> tuple[Any, Any, Any]:
    """Producer-side stand-ins for DSPy types: JSON string-or-object, object, object-or-list."""
    return str | dict[str, Any], dict[str, Any], dict[str, Any] | list[Any]


def _builtin_specs() -> Iterator[tuple[tuple[str, ...], TypeSpec]]:
    def typing_spec(name: str, kind: str, arity: int = 0) -> tuple[tuple[str, ...], TypeSpec]:
        spec = TypeSpec(name, kind, getattr(typing, name), arity=arity, bare=kind == PLAIN)
        return (name, f"typing.{name}"), spec

    for plain in (str, int, float, bool, bytes, complex):
        yield (plain.__name__,), TypeSpec(plain.__name__, PLAIN, plain)
    for generic, arity in ((list, 1), (set, 1), (frozenset, 1), (dict, 2)):
        yield (generic.__name__,), TypeSpec(generic.__name__, GENERIC, generic, arity=arity)
    yield ("tuple",), TypeSpec("tuple", TUPLE, tuple)
    # DSPy keeps the spellings apart inside builtin generics: list[None] is not list[NoneType].
    yield ("None",), TypeSpec("None", PLAIN, None, producer=type(None))
    yield ("NoneType",), TypeSpec("NoneType", PLAIN, type(None))
    yield typing_spec("Any", PLAIN)
    for name in ("List", "Set", "FrozenSet", "Sequence"):
        yield typing_spec(name, GENERIC, 1)
    for name in ("Dict", "Mapping"):
        yield typing_spec(name, GENERIC, 2)
    yield typing_spec("Tuple", TUPLE)
    yield typing_spec("Optional", OPTIONAL)
    yield typing_spec("Union", UNION)
    yield typing_spec("Literal", LITERAL)
    for module, names in (
        ("datetime", ("datetime", "date", "time", "timedelta")),
        ("decimal", ("Decimal",)),
        ("uuid", ("UUID",)),
        ("pathlib", ("Path",)),
    ):
        for name in names:
            dotted = f"{module}.{name}"
            yield (dotted,), TypeSpec(dotted, PLAIN, LazyRef(module, name))
    text_or_object, json_object, object_or_list = _json_shapes()
    for name, producer in (
        ("Image", text_or_object),
        ("Audio", text_or_object),
        ("File", text_or_object),
        ("Reasoning", text_or_object),
        ("History", json_object),
        ("ToolCalls", object_or_list),
        ("ToolCallResults", object_or_list),
        ("Tool", Any),
    ):
        yield (f"dspy.{name}",), TypeSpec(f"dspy.{name}", PLAIN, LazyRef("dspy", name), producer)
    yield ("dspy.Code",), TypeSpec("dspy.Code", LANGUAGE, LazyRef("dspy", "Code"), text_or_object)


def _build_table() -> dict[str, TypeSpec]:
    return {name: spec for names, spec in _builtin_specs() for name in names}


BUILTIN_TYPES: Final[Mapping[str, TypeSpec]] = _build_table()
"""Every built-in type name (including ``typing.`` spellings), mapped to its spec."""

_registered: dict[str, TypeSpec] = {}
_listeners: list[Callable[[], None]] = []


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not all(part.isidentifier() for part in name.split(".")):
        raise ValueError(f"a type name is an identifier or a dotted name, not {name!r}")
    if name in BUILTIN_TYPES:
        raise ValueError(f"{name!r} is a built-in type name and cannot be redefined")
    return name


def custom_spec(name: str, target: object, producer: object = None) -> TypeSpec:
    """Describe a custom type (a pydantic model, a class, or a typing alias such as ``list[int]``).

    Args:
        name: The name signatures use for it; plain or dotted.
        target: The object put on the DSPy field, and validated against unless ``producer`` is
            given.
        producer: What producers validate against instead, when ``target`` is not usable there.

    Raises:
        ValueError: If the name is not an identifier or dotted name, or is a built-in type name,
            or the target is None.
    """
    if target is None:
        raise ValueError(f"custom type {name!r} needs a type, not None")
    return TypeSpec(_check_name(name), PLAIN, target, producer)


def register_type(name: str, target: object, *, producer: object = None) -> None:
    """Make a custom type available to every signature in this process.

    Example::

        class Person(pydantic.BaseModel):
            name: str

        register_type("Person", Person)
        Signature.parse("bio: str -> person: Person")

    Args:
        name: The name signatures use for it; plain (``Person``) or dotted (``models.Person``).
        target: The type: a class (usually a pydantic model) or a typing alias.
        producer: What producers validate inputs against, if not ``target`` itself.

    Raises:
        ValueError: If the name is not an identifier or dotted name, or is a built-in type name.
    """
    _registered[name] = custom_spec(name, target, producer)
    _changed()


def unregister_type(name: str) -> None:
    """Forget a type registered with :func:`register_type`; unknown names are ignored."""
    if _registered.pop(name, None) is not None:
        _changed()


def registered_types() -> dict[str, object]:
    """The custom types registered project-wide, by name."""
    return {name: spec.annotation for name, spec in _registered.items()}


def on_change(listener: Callable[[], None]) -> None:
    """Call ``listener`` whenever the project-wide registry changes (caches clear themselves)."""
    _listeners.append(listener)


def _changed() -> None:
    for listener in _listeners:
        listener()


def lookup(name: str, extra: Mapping[str, TypeSpec] | None = None) -> TypeSpec | None:
    """The spec for ``name``: built-ins first, then per-call ``extra`` types, then registered."""
    spec = BUILTIN_TYPES.get(name)
    if spec is None and extra is not None:
        spec = extra.get(name)
    if spec is None:
        spec = _registered.get(name)
    return spec


def known_names(extra: Mapping[str, TypeSpec] | None = None) -> list[str]:
    """Every name :func:`lookup` resolves, for "did you mean" hints."""
    return [*BUILTIN_TYPES, *(extra or {}), *_registered]
