"""Turn the values a template is rendered with into plain data.

A template sees strings, numbers, booleans, ``None``, lists and string-keyed mappings, and
nothing else: never the caller's objects, whose methods and attributes are the way out of a
sandbox. Anything richer is converted the way it would be encoded for the wire (pydantic's
JSON-able form: datetimes become ISO strings, models and dataclasses become mappings, enums
their values); what has no JSON-able form is refused with the name of the value.

Strings stay strings: a value such as ``"{{ config }}"`` is text to print, never template
source, because Jinja only ever compiles the template itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from dspex_jobs.errors import TemplateRenderError
from dspex_jobs.templates.limits import MAX_VALUE_DEPTH

__all__ = ["plain_value", "plain_values"]

_SCALARS: Final = frozenset({str, int, float, bool, type(None)})


def plain_values(
    values: Mapping[str, Any], base: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A copy of ``values`` holding plain data only.

    Args:
        values: Template variables by name.
        base: Entries the result starts with (the sandbox's globals), which ``values`` may
            override.

    Returns:
        A new dict; strings and numbers are shared, containers are copied.

    Raises:
        TemplateRenderError: ``values`` is not a mapping with string keys, or a value cannot be
            turned into plain data (it names the value and its type).
    """
    if not isinstance(values, Mapping):
        raise TemplateRenderError(
            f"template values must be a mapping of names to values, not {type(values).__name__}"
        )
    plain: dict[str, Any] = dict(base) if base else {}
    for name, value in values.items():
        if type(name) is not str:
            raise TemplateRenderError(f"template variable names must be strings, not {name!r}")
        plain[name] = value if type(value) in _SCALARS else plain_value(value, name)
    return plain


def plain_value(value: Any, path: str = "value", depth: int = 0) -> Any:
    """``value`` as plain data (see the module docstring); ``path`` names it in errors."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if depth >= MAX_VALUE_DEPTH:
        raise TemplateRenderError(
            f"value {path!r} nests deeper than {MAX_VALUE_DEPTH} levels (or refers to itself)",
            variable=_root(path),
        )
    if isinstance(value, Mapping):
        return {
            _key(key, path): plain_value(item, f"{path}.{key}", depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [plain_value(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    if isinstance(value, set | frozenset):
        items = [plain_value(item, f"{path}[]", depth + 1) for item in value]
        try:
            return sorted(items)  # a set's order changes between processes; a prompt must not
        except TypeError:
            return sorted(items, key=repr)
    if isinstance(value, str):  # a str subclass (StrEnum, Markup): keep only the text
        return "".join((value,))
    if isinstance(value, int):  # int and float subclasses (IntEnum); bool has none
        return int(value)
    if isinstance(value, float):
        return float(value)
    return plain_value(_jsonable(value, path), path, depth + 1)


def _key(key: Any, path: str) -> str:
    if type(key) is str:
        return key
    if type(key) in _SCALARS:
        return str(key)
    raise TemplateRenderError(
        f"mapping keys in template values must be strings or numbers; {path!r} has a "
        f"{type(key).__name__} key",
        variable=_root(path),
    )


def _jsonable(value: Any, path: str) -> Any:
    from pydantic_core import PydanticSerializationError, to_jsonable_python

    try:
        converted = to_jsonable_python(value)
    except (PydanticSerializationError, ValueError, TypeError):
        converted = value
    if converted is value or type(converted) is type(value):
        raise TemplateRenderError(
            f"value {path!r} is a {type(value).__name__}, which a template cannot use: pass "
            "strings, numbers, booleans, None, lists and mappings (or pydantic models, "
            "dataclasses, dates, enums: they are converted)",
            variable=_root(path),
            type=type(value).__name__,
        )
    return converted


def _root(path: str) -> str:
    """The top-level variable a value path starts with (``doc`` for ``doc.tags[2]``)."""
    return path.split(".", 1)[0].split("[", 1)[0]
