"""Which field names a signature may use, and why the others are refused.

A field name must be a Python identifier (DSPy parses it as a function parameter), and it
becomes an attribute of a pydantic model: so no keywords, no leading underscore (pydantic
refuses those), nothing in pydantic's protected namespaces, and nothing that is already a member
of ``dspy.Signature``, its metaclass or ``pydantic.BaseModel`` (DSPy fails on ``instructions``
or ``fields``, and warns that ``json`` or ``copy`` would shadow the member).
"""

from __future__ import annotations

import keyword
from typing import Final

__all__ = ["BAD_NAMES", "BAD_PREFIXES", "KEYWORDS", "RESERVED_NAMES"]

RESERVED_NAMES: Final = frozenset(
    {
        "append", "append_instructions", "construct", "copy", "delete", "dict", "dump_state",
        "equals", "fields", "from_orm", "input_fields", "insert", "instructions", "json",
        "load_state", "model_computed_fields", "model_config", "model_construct", "model_copy",
        "model_dump", "model_dump_json", "model_extra", "model_fields", "model_fields_set",
        "model_json_schema", "model_parametrized_name", "model_post_init", "model_rebuild",
        "model_validate", "model_validate_json", "model_validate_strings", "mro",
        "output_fields", "parse_file", "parse_obj", "parse_raw", "prepend", "register", "schema",
        "schema_json", "signature", "update_forward_refs", "validate", "with_instructions",
        "with_updated_fields",
    }
)  # fmt: skip
"""Field names DSPy cannot use (kept in step with DSPy by a test)."""

KEYWORDS: Final = frozenset(keyword.kwlist)
"""Python's keywords; soft keywords (``match``, ``case``, ``type``) are fine as names."""

BAD_NAMES: Final = KEYWORDS | RESERVED_NAMES
"""Every name refused outright."""

BAD_PREFIXES: Final = ("_", "model_dump", "model_validate")
"""Refused prefixes: private names, and pydantic's protected namespaces."""
