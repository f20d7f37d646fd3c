"""The built-in operations, and the process-wide registry and router that hold them.

Built-ins (native first: the default strategy prefers them):

================== ========================================= ==================================
operation          native                                    dspy (queue)
================== ========================================= ==================================
signature.validate ``native:validate_signature``             -
template.render    ``native:render_template``                -
metric.exact_match ``native:exact_match``                    ``dspy_ops:exact_match`` (optimizer)
metric.token_f1    ``native:token_f1``                       ``dspy_ops:token_f1`` (optimizer)
predict            -                                         ``dspy_ops:predict`` (general)
chain_of_thought   -                                         ``dspy_ops:chain_of_thought``
                                                             (general)
search             ``neural.operations:search_operation``    -
================== ========================================= ==================================

Everything is registered by import path, so building the default registry imports
nothing; each implementation is imported on its first call.

Tests and embedders build their own :class:`Registry` and :class:`Router` instead of touching
these globals; :func:`builtin_registry` gives a fresh registry with the built-ins.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from dspex_jobs.jobs import JobKind
from dspex_jobs.router.registry import ENTRY_POINT_GROUP, ImplementationKind, Registry
from dspex_jobs.router.router import Router

__all__ = [
    "builtin_registry",
    "default_registry",
    "default_router",
    "implementation",
    "register_builtins",
]

F = TypeVar("F", bound=Callable[..., Any])

_NATIVE = "dspex_jobs.router.native"
_DSPY = "dspex_jobs.router.dspy_ops"

_lock = threading.Lock()
_registry: Registry | None = None
_router: Router | None = None


def register_builtins(registry: Registry) -> Registry:
    """Register the built-in operations (see the module docstring) on ``registry``."""
    native, dspy = ImplementationKind.NATIVE, ImplementationKind.DSPY
    registry.register(
        "signature.validate",
        target=f"{_NATIVE}:validate_signature",
        kind=native,
        description="parse a signature and validate inputs against it",
    )
    registry.register(
        "template.render",
        target=f"{_NATIVE}:render_template",
        kind=native,
        description="render a sandboxed prompt template",
    )
    for metric in ("exact_match", "token_f1"):
        registry.register(
            f"metric.{metric}",
            target=f"{_NATIVE}:{metric}",
            kind=native,
            description=f"SQuAD-style {metric}, native",
        )
        registry.register(
            f"metric.{metric}",
            target=f"{_DSPY}:{metric}",
            kind=dspy,
            queue="optimizer",
            description=f"dspy.evaluate {metric}",
        )
    registry.register(
        "search",
        target="dspex_jobs.neural.operations:search_operation",
        kind=native,
        description="nearest documents of a vector index "
        "(in process on a neural worker, else a job on the neural queue)",
    )
    for kind in (JobKind.PREDICT, JobKind.CHAIN_OF_THOUGHT):
        registry.register(
            kind.value,
            target=f"{_DSPY}:{kind.value}",
            kind=dspy,
            queue=kind.queue,
            description=f"run a dspy module ({kind.value})",
        )
    return registry


def builtin_registry(*, entry_point_group: str | None = None) -> Registry:
    """A new registry holding the built-in operations (independent of the default one)."""
    return register_builtins(Registry(entry_point_group=entry_point_group))


def default_registry() -> Registry:
    """The process-wide registry: the built-ins, plus the ``dspex_jobs.operations`` entry
    points (loaded when an unknown operation is first looked up)."""
    global _registry
    if _registry is None:
        with _lock:
            if _registry is None:
                _registry = builtin_registry(entry_point_group=ENTRY_POINT_GROUP)
    return _registry


def default_router() -> Router:
    """The process-wide router over :func:`default_registry`."""
    global _router
    if _router is None:
        registry = default_registry()
        with _lock:
            if _router is None:
                _router = Router(registry)
    return _router


def implementation(
    operation: str,
    *,
    kind: ImplementationKind | str = ImplementationKind.NATIVE,
    name: str | None = None,
    queue: str | None = None,
    unsupported: Iterable[str] = (),
    priority: int = 0,
    description: str = "",
    replace: bool = False,
) -> Callable[[F], F]:
    """Register the decorated function on the default registry (see
    :meth:`Registry.implementation`).

    Example::

        from dspex_jobs.router import implementation

        @implementation("acme.score")
        def score(prediction: str, answers: list[str]) -> float: ...
    """
    return default_registry().implementation(
        operation,
        kind=kind,
        name=name,
        queue=queue,
        unsupported=unsupported,
        priority=priority,
        description=description,
        replace=replace,
    )
