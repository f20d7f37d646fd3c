"""The size and bound of every per-process cache, in one report.

A long-lived worker must not grow with the number of jobs it has run, so every cache it
keeps is an LRU with a fixed bound. :func:`cache_sizes` reads them all (without importing
anything: a cache whose module was never imported is simply absent), so a ``ping`` job can
report them and a memory benchmark can show they stop growing. See ``docs/caching.md``.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["cache_sizes"]

_LRU_FUNCTIONS = (
    ("signature.parsed", "dspex_jobs.signature.signature", "_parse_cached"),
    ("signature.parsed_typed", "dspex_jobs.signature.signature", "_parse_cached_with_types"),
    ("signature.compiled", "dspex_jobs.signature.compiler", "compile_signature"),
    ("signature.validators", "dspex_jobs.signature.validator", "input_adapter"),
    ("templates.compiled", "dspex_jobs.templates.template", "_compile_cached"),
    ("router.modules", "dspex_jobs.router.dspy_ops", "_module"),
    ("protocol.arrow_rows", "dspex_jobs.protocol._arrow", "_row_builder"),
    ("runtime.type_adapters", "dspex_jobs.runtime.type_adapters", "adapter_for"),
)
"""(report name, module, ``functools.lru_cache``-wrapped function)."""

_MAPPINGS = (
    ("signature.types", "dspex_jobs.signature.quick", "_types", "TYPE_CACHE_SIZE"),
    ("pipeline.modules", "dspex_jobs.pipeline.dspy_modules", "_modules", "MODULE_CACHE_SIZE"),
    ("pipeline.plans", "dspex_jobs.pipeline.state", "_plans", "PLAN_CACHE_SIZE"),
    ("runtime.model_metadata", "dspex_jobs.runtime.model_metadata", "_answers", "MAX_MODELS"),
)
"""(report name, module, the cache mapping, the constant that bounds it)."""


def cache_sizes(runtime: Any | None = None) -> dict[str, dict[str, int]]:
    """``{name: {"size": entries, "max": bound}}`` for each cache this process has.

    Args:
        runtime: The worker's :class:`~dspex_jobs.runtime.Runtime`, if built: adds its
            module cache and LM clients.
    """
    report: dict[str, dict[str, int]] = {}
    for name, module_name, function in _LRU_FUNCTIONS:
        module = sys.modules.get(module_name)
        info = getattr(getattr(module, function, None), "cache_info", None)
        if info is not None:
            stats = info()
            report[name] = {"size": int(stats.currsize), "max": int(stats.maxsize or 0)}
    for name, module_name, attribute, bound in _MAPPINGS:
        module = sys.modules.get(module_name)
        mapping = getattr(module, attribute, None)
        if mapping is not None:
            report[name] = {"size": len(mapping), "max": int(getattr(module, bound, 0))}
    if runtime is not None:
        report["runtime.modules"] = {
            "size": len(runtime.modules),
            "max": int(runtime.modules.max_entries),
        }
        report["runtime.lms"] = {"size": len(runtime.lms), "max": int(runtime.lms.max_entries)}
    return report
