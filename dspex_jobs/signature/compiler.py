"""Compile a parsed signature into a ``dspy.Signature`` class, on the worker.

This is the only module that imports DSPy, and only when called. It builds the same class
``dspy.Signature(text)`` would build for the same text: ``InputField`` for inputs (marked
``IS_TYPE_UNDEFINED`` when the text gave no type, as DSPy does), ``OutputField`` for outputs,
annotations resolved from the parsed types, and instructions (DSPy's default when ``None``).
Descriptions, our extension, become each field's ``desc``.

Classes are cached per signature in a bounded LRU: building one costs about a millisecond.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from dspex_jobs.signature.nodes import Field
    from dspex_jobs.signature.signature import Signature

__all__ = ["DSPY_CACHE_SIZE", "compile_signature"]

DSPY_CACHE_SIZE: Final = 1024
"""How many compiled ``dspy.Signature`` classes are kept (least recently used go first)."""

IS_TYPE_UNDEFINED: Final = "IS_TYPE_UNDEFINED"
"""The ``json_schema_extra`` key DSPy sets on inputs written without a type."""


@functools.lru_cache(maxsize=DSPY_CACHE_SIZE)
def compile_signature(signature: Signature) -> type[Any]:
    """The ``dspy.Signature`` subclass for ``signature`` (see :meth:`Signature.to_dspy`)."""
    import dspy

    fields: dict[str, tuple[Any, Any]] = {}
    for field in signature.inputs:
        options = _options(field)
        options[IS_TYPE_UNDEFINED] = not field.typed
        fields[field.name] = (field.type.annotation(), dspy.InputField(**options))
    for field in signature.outputs:
        fields[field.name] = (field.type.annotation(), dspy.OutputField(**_options(field)))
    compiled: type[Any] = dspy.Signature(fields, signature.instructions)
    return compiled


def _options(field: Field) -> dict[str, Any]:
    return {} if field.description is None else {"desc": field.description}
