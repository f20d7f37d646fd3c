"""The router: send each operation to a native or a DSPy implementation, fall back, and count.

An operation (``signature.validate``, ``template.render``, ``predict``, ``metric.token_f1``, or
one of yours) has implementations of two kinds: ``native`` (plain Python, runs anywhere, no
DSPy) and ``dspy`` (runs in a worker, on a workload queue). The router picks one per request
(:mod:`.strategy`: what the job forces, what the request needs, native first), falls back to
the next when the chosen one cannot handle the request or fails transiently (:mod:`.fallback`;
never on validation errors), and reports every decision as a ``dspex.router.route`` event and
in-process counters (:mod:`.metrics`).

Example::

    from dspex_jobs.router import default_router

    router = default_router()
    router.call("metric.token_f1", "Eiffel Tower in Paris", ["the Eiffel Tower"])  # 0.67
    route = router.route("predict")        # Route(implementation=dspy, queue='general', ...)
    router.stats()["metric.token_f1"]["native"].succeeded                       # 1

Layout: :mod:`.registry` (operations and implementations, entry points), :mod:`.strategy`,
:mod:`.fallback`, :mod:`.metrics`, :mod:`.router` (the :class:`Router`), :mod:`.defaults` (the
built-ins and the process-wide router), :mod:`.native` and :mod:`.dspy_ops` (the built-in
implementations). Importing this package imports neither DSPy nor Jinja.
"""

from dspex_jobs.errors import DuplicateImplementation, NoImplementation, UnsupportedOperation
from dspex_jobs.router.defaults import (
    builtin_registry,
    default_registry,
    default_router,
    implementation,
    register_builtins,
)
from dspex_jobs.router.fallback import Attempt, FallbackPolicy, FallbackReason, fallback_reason
from dspex_jobs.router.metrics import (
    FALLBACK_EVENT,
    ROUTE_EVENT,
    ImplementationStats,
    RouterMetrics,
)
from dspex_jobs.router.registry import (
    ENTRY_POINT_GROUP,
    Implementation,
    ImplementationKind,
    Registry,
)
from dspex_jobs.router.router import Outcome, Router
from dspex_jobs.router.strategy import Route, Strategy, requirements_of

__all__ = [
    # Routing
    "Outcome",
    "Route",
    "Router",
    "Strategy",
    "default_router",
    "requirements_of",
    # Registry
    "ENTRY_POINT_GROUP",
    "Implementation",
    "ImplementationKind",
    "Registry",
    "builtin_registry",
    "default_registry",
    "implementation",
    "register_builtins",
    # Fallback
    "Attempt",
    "FallbackPolicy",
    "FallbackReason",
    "fallback_reason",
    # Metrics and events
    "FALLBACK_EVENT",
    "ROUTE_EVENT",
    "ImplementationStats",
    "RouterMetrics",
    # Errors
    "DuplicateImplementation",
    "NoImplementation",
    "UnsupportedOperation",
]
