"""Producer-side input validation: pydantic checks a job's inputs against a signature.

One pydantic ``TypeAdapter`` per signature checks everything in a single call: a ``TypedDict``
whose keys are the input names (no others allowed) and whose value types are the fields'
*producer types*. As in ``dspy.Predict``, an input may be left out only when its type admits
``None`` (``str | None``, ``Optional[int]``).

Producer types are the annotations DSPy would use, except for DSPy's own types, which the
producer cannot import and receives as JSON anyway: ``dspy.Image``, ``dspy.Audio``,
``dspy.File``, ``dspy.Code`` and ``dspy.Reasoning`` accept a string or a JSON object,
``dspy.History`` a JSON object, ``dspy.ToolCalls``/``dspy.ToolCallResults`` an object or a list,
and ``dspy.Tool`` anything.

Adapters are built on first use (pydantic is imported then, not before) and kept in a bounded LRU.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, NotRequired, cast

from dspex_jobs.errors import SignatureError, SignatureValidationError
from dspex_jobs.signature.nodes import NamedType, TypeExpr, UnionType

if TYPE_CHECKING:
    from pydantic import TypeAdapter
    from pydantic import ValidationError as PydanticValidationError

    from dspex_jobs.signature.signature import Signature

__all__ = ["ADAPTER_CACHE_SIZE", "input_adapter", "validate"]

ADAPTER_CACHE_SIZE: Final = 1024
"""How many signatures' input validators are kept (least recently used go first)."""


@functools.lru_cache(maxsize=ADAPTER_CACHE_SIZE)
def input_adapter(signature: Signature) -> TypeAdapter[dict[str, Any]]:
    """The pydantic adapter that validates ``signature``'s inputs as one mapping.

    Raises:
        SignatureError: If an input's type is one pydantic cannot validate (a custom class
            that is not a pydantic model, say); DSPy could not use it on the worker either.
    """
    from pydantic import ConfigDict, PydanticUserError, TypeAdapter
    from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

    fields: dict[str, Any] = {}
    for field in signature.inputs:
        value_type = field.type.producer_type()
        fields[field.name] = NotRequired[value_type] if _allows_none(field.type) else value_type
    inputs = cast(Any, TypedDict)("SignatureInputs", fields)
    inputs.__pydantic_config__ = ConfigDict(extra="forbid")
    try:
        return TypeAdapter(inputs)
    except PydanticUserError as error:
        raise SignatureError(
            f"an input type of {str(signature)!r} cannot be validated by pydantic (nor used by "
            f"DSPy): {error.message}"
        ) from error


def _allows_none(node: TypeExpr) -> bool:
    """Whether DSPy lets this input be left out: its type is a union with ``None`` in it."""
    return isinstance(node, UnionType) and any(
        isinstance(member, NamedType) and member.spec.annotation in (None, type(None))
        for member in node.members
    )


def validate(signature: Signature, inputs: Mapping[str, Any], mode: str) -> dict[str, Any]:
    """Validate and convert ``inputs``; see :meth:`Signature.validate_inputs`."""
    from pydantic import ValidationError

    if not isinstance(inputs, Mapping):
        problem = {"field": "", "message": "inputs must be a mapping", "type": "dict_type"}
        message = f"inputs must be a mapping of input names to values, not {type(inputs).__name__}"
        raise SignatureValidationError([problem], message)
    adapter = input_adapter(signature)
    try:
        values = adapter.validate_python(inputs)
    except ValidationError as error:
        raise SignatureValidationError(_problems(error, signature)) from None
    if mode == "json":
        return cast(dict[str, Any], adapter.dump_python(values, mode="json"))
    return values


def _problems(error: PydanticValidationError, signature: Signature) -> list[dict[str, Any]]:
    names = ", ".join(field.name for field in signature.inputs) or "none"
    problems: list[dict[str, Any]] = []
    for item in error.errors(include_url=False, include_context=False, include_input=False):
        location = item["loc"]
        kind = item["type"]
        field = str(location[0]) if location else ""
        if kind == "missing":
            message = "required input is missing"
        elif kind == "extra_forbidden":
            message = f"not an input of this signature (inputs: {names})"
        else:
            message = item["msg"]
            if len(location) > 1:
                path = field + "".join(f"[{part!r}]" for part in location[1:])
                message = f"{message} (at {path})"
        problems.append({"field": field, "message": message, "type": kind})
    return problems
