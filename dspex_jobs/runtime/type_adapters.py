"""A memo of pydantic ``TypeAdapter`` objects for DSPy's prompt formatting, once per worker process.

DSPy formats each input value of a call, and each output placeholder of its system message,
with ``dspy.adapters.utils.serialize_for_json``, which builds ``TypeAdapter(type(value))``
every time: pydantic then generates a core schema and a serializer for the type, about
45 µs, against about 1 µs for the dump itself (``TypeAdapter(str)``, measured with
``timeit``). A one-input Predict formats six values per call, so on a cache hit, where no LM
is waited for, that was a third of DSPy's own time (``py-spy`` of a worker serving
``bench/cache.py``: 0.36 of 1.14 ms in ``Predict.__call__``).

An adapter depends only on the type, so the worker keeps one per type: a
``functools.lru_cache`` of :data:`MAX_TYPES` (reported by ``cache_sizes()`` as
``runtime.type_adapters``), least recently used first out, so types made per job cannot grow
the worker. The serialisation is DSPy's own, line for line: the value dumped in JSON mode,
nested values pydantic cannot serialise as their ``str``, and the whole value as its
``str`` if pydantic cannot handle its type at all (that failure is not remembered: the type
is tried again next time, as DSPy does). Installed by :class:`~dspex_jobs.runtime.Runtime`.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import TypeAdapter

from dspex_jobs.runtime.rebind import rebind

__all__ = ["MAX_TYPES", "adapter_for", "install_type_adapter_memo", "serialize_for_json"]

MAX_TYPES = 256
"""Most types whose adapters are kept."""

_CALLERS = (
    "dspy.adapters.base",
    "dspy.adapters.json_adapter",
    "dspy.adapters.xml_adapter",
    "dspy.primitives.repl_types",
)
"""The modules that imported ``serialize_for_json`` by name: the memo replaces their binding."""


@functools.lru_cache(maxsize=MAX_TYPES)
def adapter_for(kind: Any) -> TypeAdapter[Any]:
    """The adapter of ``kind``, built once while it is among the last :data:`MAX_TYPES`."""
    return TypeAdapter(kind)


def serialize_for_json(value: Any) -> Any:
    """``value`` as JSON-able data: DSPy's function of that name, with the adapter reused."""
    try:
        kind: Any = type(value)  # hashed by identity (typeshed's type is not Hashable)
        return adapter_for(kind).dump_python(value, mode="json", fallback=str)
    except Exception:
        return str(value)


def install_type_adapter_memo() -> bool:
    """Put :func:`serialize_for_json` in DSPy's place (once per process); ``True`` if it is."""
    return rebind(
        "dspy.adapters.utils",
        "serialize_for_json",
        lambda _original: serialize_for_json,
        _CALLERS,
    )
