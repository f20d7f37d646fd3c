"""Native DSPy signatures: parse, validate and compile them without importing DSPy.

Producers check a job's signature and inputs before anything is enqueued; importing DSPy for
that would cost half a second, and ``dspy.Signature(text)`` close to a millisecond per call.
This package reads the same text in microseconds and only imports pydantic (to validate inputs)
or DSPy (in :meth:`Signature.to_dspy`, on the worker) when those are used.

Layout: :mod:`.tokenizer` and :mod:`.parser` (with its fast path, :mod:`.quick`, and the name
rules of :mod:`.names`) read text into the tree of :mod:`.nodes`, resolving type names through
the registry in :mod:`.types`; :mod:`.validator` checks inputs with pydantic; :mod:`.compiler`
builds the ``dspy.Signature`` class; :mod:`.signature` ties them together.
"""

from dspex_jobs.errors import SignatureError, SignatureValidationError
from dspex_jobs.signature.nodes import Field, TypeExpr
from dspex_jobs.signature.signature import Signature, clear_caches
from dspex_jobs.signature.types import register_type, registered_types, unregister_type

__all__ = [
    # The signature and its parts
    "Field",
    "Signature",
    "TypeExpr",
    # Errors
    "SignatureError",
    "SignatureValidationError",
    # Custom types and caches
    "clear_caches",
    "register_type",
    "registered_types",
    "unregister_type",
]
