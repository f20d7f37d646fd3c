"""The :class:`Router`: decide (strategy), run with fallback, count and report every decision.

``route()`` only decides: which implementation, which fallbacks, which queue. A pipeline runs
the ``native`` routes in process and sends ``dspy`` ones to the route's queue. ``call()``
decides and runs in process, falling back as :mod:`.fallback` allows; a worker uses it for
``dspy`` implementations too (they import DSPy on first use).

Decisions are cached per (operation, forced implementation, requirements, queue) and the cache
is dropped whenever the registry changes, so a warm decision costs a dict lookup and a
counter; the clock is read and an event built only when a telemetry handler listens.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from dspex_jobs.errors import DSPexError
from dspex_jobs.router.fallback import (
    Attempt,
    FallbackPolicy,
    fallback_reason,
    run_with_fallback,
)
from dspex_jobs.router.metrics import (
    FALLBACK_EVENT,
    ROUTE_EVENT,
    ImplementationStats,
    RouterMetrics,
)
from dspex_jobs.router.registry import Implementation, Registry
from dspex_jobs.router.strategy import Route, Strategy
from dspex_jobs.telemetry import emit, has_handlers

__all__ = ["DECISION_CACHE_SIZE", "Outcome", "Router"]

DECISION_CACHE_SIZE: Final = 4096
"""Cached routing decisions per router; the cache is emptied when it is full."""

_DecisionKey = tuple[str, str | None, frozenset[str], str | None]
_NOTHING: Final[frozenset[str]] = frozenset()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What :meth:`Router.run` did.

    Attributes:
        value: What the implementation returned.
        route: The decision.
        implementation: The implementation that produced ``value``.
        attempts: Implementations that failed before it, with why the router moved on.
    """

    value: Any
    route: Route
    implementation: Implementation
    attempts: tuple[Attempt, ...] = ()

    @property
    def fell_back(self) -> bool:
        """Whether an implementation other than the first choice answered."""
        return bool(self.attempts)


class Router:
    """Routes operations to implementations.

    Args:
        registry: Where operations are looked up.
        strategy: How an implementation is chosen (default: native first).
        fallback_policy: Which failures fall back (default: :func:`fallback_reason`).
    """

    def __init__(
        self,
        registry: Registry,
        *,
        strategy: Strategy | None = None,
        fallback_policy: FallbackPolicy = fallback_reason,
    ) -> None:
        self.registry = registry
        self.strategy = strategy or Strategy()
        self.fallback_policy = fallback_policy
        self.metrics = RouterMetrics()
        self._decisions: dict[_DecisionKey, Route] = {}
        self._decisions_version = registry.version

    def route(
        self,
        operation: str,
        *,
        implementation: str | None = None,
        requires: Iterable[str] = (),
        queue: str | None = None,
    ) -> Route:
        """Decide how ``operation`` runs, without running it.

        Args:
            operation: The operation name.
            implementation: Force a kind (``"native"``, ``"dspy"``) or an implementation name.
            requires: Capabilities the request needs (``"type:dspy.Image"``).
            queue: The job's queue, overriding the implementation's.

        Raises:
            NoImplementation: Unknown operation, nothing matching ``implementation``, or no
                candidate able to handle ``requires``.
            ValidationError: ``queue`` is unknown.
        """
        timed = has_handlers(ROUTE_EVENT)  # clocks are read only for someone listening
        started = time.perf_counter() if timed else 0.0
        chosen = self._decide(operation, implementation, requires, queue)
        self.metrics.routed(operation, chosen.implementation.name)
        if timed:
            emit(
                ROUTE_EVENT,
                {"duration_s": time.perf_counter() - started},
                _metadata(chosen, chosen.implementation, (), call=False),
            )
        return chosen

    def run(
        self,
        operation: str,
        /,
        *args: Any,
        implementation: str | None = None,
        requires: Iterable[str] = (),
        queue: str | None = None,
        **kwargs: Any,
    ) -> Outcome:
        """Decide, then run the operation in process with fallback; report what happened.

        ``args`` and ``kwargs`` go to the implementation; ``implementation``, ``requires`` and
        ``queue`` are the router's (as in :meth:`route`).

        Raises:
            NoImplementation: As :meth:`route`.
            Exception: The error of the last implementation tried (see :mod:`.fallback`).
        """
        attempts: list[Attempt] = []
        chosen, answered, value = self._execute(
            operation, implementation, requires, queue, args, kwargs, attempts
        )
        return Outcome(value, chosen, answered, tuple(attempts))

    def call(
        self,
        operation: str,
        /,
        *args: Any,
        implementation: str | None = None,
        requires: Iterable[str] = (),
        queue: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """:meth:`run`, returning only the value.

        Example::

            router.call("metric.token_f1", "the Eiffel Tower", ["Eiffel Tower"])  # 1.0
        """
        attempts: list[Attempt] = []
        return self._execute(operation, implementation, requires, queue, args, kwargs, attempts)[2]

    def stats(self) -> dict[str, dict[str, ImplementationStats]]:
        """Counters by operation, then implementation (see :class:`ImplementationStats`)."""
        return self.metrics.stats()

    def clear_decisions(self) -> None:
        """Forget cached decisions (done automatically when the registry changes)."""
        self._decisions = {}

    # -- internals -------------------------------------------------------------------------

    def _execute(
        self,
        operation: str,
        implementation: str | None,
        requires: Iterable[str],
        queue: str | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        attempts: list[Attempt],
    ) -> tuple[Route, Implementation, Any]:
        timed = has_handlers(ROUTE_EVENT)
        started = time.perf_counter() if timed else 0.0
        chosen = self._decide(operation, implementation, requires, queue)
        decided = time.perf_counter() if timed else 0.0
        try:
            value, answered = run_with_fallback(
                chosen,
                args,
                kwargs,
                policy=self.fallback_policy,
                on_fallback=self._fell_back,
                attempts=attempts,
            )
        except Exception as error:
            last = _named(chosen, attempts[-1].implementation)
            self.metrics.called(operation, chosen.implementation.name, last.name, ok=False)
            if timed:
                emit(
                    ROUTE_EVENT,
                    _measurements(started, decided),
                    _metadata(chosen, last, attempts, call=True, error=error),
                )
            raise
        self.metrics.called(operation, chosen.implementation.name, answered.name, ok=True)
        if timed:
            emit(
                ROUTE_EVENT,
                _measurements(started, decided),
                _metadata(chosen, answered, attempts, call=True),
            )
        return chosen, answered, value

    def _decide(
        self,
        operation: str,
        implementation: str | None,
        requires: Iterable[str],
        queue: str | None,
    ) -> Route:
        needs = (
            requires
            if isinstance(requires, frozenset)
            else (frozenset(requires) if requires else _NOTHING)
        )
        key = (operation, implementation, needs, queue)
        if self._decisions_version != self.registry.version:
            self._decisions = {}
            self._decisions_version = self.registry.version
        found = self._decisions.get(key)
        if found is None:
            found = self.strategy.choose(
                operation,
                self.registry.implementations(operation),
                implementation=implementation,
                requires=needs,
                queue=queue,
            )
            if len(self._decisions) >= DECISION_CACHE_SIZE:
                self._decisions = {}
            self._decisions[key] = found
        return found

    def _fell_back(self, attempt: Attempt, next_implementation: Implementation) -> None:
        operation = next_implementation.operation
        reason = str(attempt.reason)
        self.metrics.fell_back(operation, attempt.implementation, reason)
        if has_handlers(FALLBACK_EVENT):
            emit(
                FALLBACK_EVENT,
                {"duration_s": attempt.duration_s},
                {
                    "operation": operation,
                    "implementation": attempt.implementation,
                    "next": next_implementation.name,
                    "reason": reason,
                    "error_code": attempt.error_code,
                },
            )


def _measurements(started: float, decided: float) -> dict[str, float]:
    return {"duration_s": decided - started, "total_s": time.perf_counter() - started}


def _metadata(
    route: Route,
    implementation: Implementation,
    attempts: list[Attempt] | tuple[()],
    *,
    call: bool,
    error: Exception | None = None,
) -> dict[str, Any]:
    return {
        "operation": route.operation,
        "implementation": implementation.name,
        "chosen": route.implementation.name,
        "kind": implementation.kind.value,
        "queue": route.queue,
        "fell_back": implementation is not route.implementation,
        "fallback_reasons": [str(a.reason) for a in attempts if a.reason is not None],
        "call": call,
        "ok": error is None,
        "error_code": None
        if error is None
        else (error.code if isinstance(error, DSPexError) else type(error).__name__),
    }


def _named(route: Route, name: str) -> Implementation:
    return next(impl for impl in route.candidates if impl.name == name)
