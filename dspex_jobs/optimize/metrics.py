"""Metrics by name, wrapped for DSPy optimizers (worker side).

A name resolves to, in order: a callable registered here with :func:`register_metric`
(``fn(example, prediction, trace=None) -> float | bool``), or the router operation
``metric.<name>`` (:mod:`dspex_jobs.router`: ``exact_match``, ``token_f1`` and any you
registered there), applied to each compared output field and averaged. Metrics never come as
import paths from the wire: a worker runs only metrics its own code registered.

Every wrapped call ticks the job's :class:`~.progress.ProgressReporter`, which counts metric
calls and stops the optimization once the job is cancelled.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from dspex_jobs.errors import OptimizeRequestError
from dspex_jobs.optimize.progress import ProgressReporter

__all__ = ["MetricFn", "build_metric", "gepa_metric", "register_metric", "registered_metrics"]

MetricFn = Callable[..., Any]
"""``fn(example, prediction, trace=None)``: a float in [0, 1] or a bool."""

F = TypeVar("F", bound=MetricFn)

_metrics: dict[str, MetricFn] = {}
_lock = threading.Lock()


def register_metric(name: str) -> Callable[[F], F]:
    """Register ``fn(example, prediction, trace=None)`` as metric ``name`` in this process.

    Example::

        @register_metric("contains_answer")
        def contains_answer(example, prediction, trace=None):
            return example.answer.lower() in prediction.answer.lower()
    """

    def decorate(fn: F) -> F:
        with _lock:
            _metrics[name] = fn
        return fn

    return decorate


def registered_metrics() -> list[str]:
    """Names registered with :func:`register_metric` in this process."""
    with _lock:
        return sorted(_metrics)


def build_metric(name: str, fields: Sequence[str], reporter: ProgressReporter | None) -> MetricFn:
    """The metric ``name`` as DSPy optimizers call it, counted by ``reporter``.

    Raises:
        OptimizeRequestError: No metric of that name.
    """
    base = _metrics.get(name)
    if base is None:
        base = _router_metric(name, tuple(fields))

    def metric(example: Any, prediction: Any, trace: Any = None) -> Any:
        value = base(example, prediction, trace)
        if reporter is not None:
            reporter.metric_call()
        return value

    return metric


def gepa_metric(metric: MetricFn) -> MetricFn:
    """GEPA's five-argument form of a metric (it takes a float as the score)."""

    def feedback_metric(
        gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None
    ) -> float:
        return float(metric(gold, pred, trace))

    return feedback_metric


def _router_metric(name: str, fields: tuple[str, ...]) -> MetricFn:
    from dspex_jobs.router import default_router

    router = default_router()
    operation = f"metric.{name}"
    if operation not in router.registry:
        known = sorted(
            {
                op[len("metric.") :]
                for op in router.registry.operations()
                if op.startswith("metric.")
            }
            | set(registered_metrics())
        )
        raise OptimizeRequestError(
            f"unknown metric {name!r}; known here: {', '.join(known)}", field="metric"
        )
    if not fields:
        raise OptimizeRequestError(
            f"metric {name!r} compares output fields, and none is known: pass metric_fields",
            field="metric_fields",
        )

    def score(example: Any, prediction: Any, trace: Any = None) -> float:
        total = 0.0
        for field in fields:
            predicted = prediction.get(field) if hasattr(prediction, "get") else None
            total += float(router.call(operation, str(predicted or ""), _answers(example[field])))
        value = total / len(fields)
        # Bootstrapping (trace set) keeps a demo only on a pass.
        return value >= 1.0 if trace is not None else value

    return score


def _answers(value: Any) -> list[str]:
    if isinstance(value, list | tuple):
        return [str(v) for v in value] or [""]
    return [str(value)]
