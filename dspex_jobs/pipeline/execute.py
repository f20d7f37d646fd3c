"""Run one leaf step inside a worker, under its timeout, stopping when the run is cancelled.

- Native steps call the operation through the worker's router (``default_router()``), or
  through their :class:`~.operations.OperationSpec`'s ``call``.
- ``Predict`` and ``ChainOfThought`` steps become a :class:`~dspex_jobs.jobs.Job` run by the
  worker's :class:`~dspex_jobs.runtime.Runtime`: the same module cache, LM clients, circuit
  breakers, rate limits and LM fallbacks as plain jobs, and the run's trace id.
- Other DSPy modules are built by :mod:`.dspy_modules`.
- A ``Map`` runs its step for each item on a small thread pool (LM calls overlap).

The work runs on a helper thread while the task's thread watches the clock and the run: past
the step's timeout it raises :class:`~dspex_jobs.errors.StepTimeout`, past the pipeline's
deadline :class:`~dspex_jobs.errors.PipelineDeadlineExceeded`, and when the run is cancelled
or ended by another step :class:`StepStopped`. The task then returns at once and frees its
worker slot; the abandoned call's result, if it ever comes, is dropped. (Thread pools ignore
Celery's time limits, so this is what enforces timeouts there; prefork pools get both.)
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from dspex_jobs.errors import JobFailed, PipelineDeadlineExceeded, StepTimeout
from dspex_jobs.jobs import Job, JobKind
from dspex_jobs.pipeline.operations import NativeCall, default_call
from dspex_jobs.pipeline.steps import Dspy, LeafStep, Map, Native

__all__ = ["POLL_INTERVAL_S", "RunInfo", "StepOutcome", "StepStopped", "execute", "run_watched"]

POLL_INTERVAL_S: Final = 0.2
"""How often a running step looks whether its run was cancelled (one Redis read)."""

T = TypeVar("T")


class StepStopped(Exception):
    """The run was cancelled or ended while the step ran: drop its outputs."""


@dataclass(frozen=True)
class RunInfo:
    """The run a step belongs to, and the queue its task was taken from."""

    run_id: str
    step: str
    trace_id: str
    queue: str | None = None


@dataclass
class StepOutcome:
    """What a step produced: outputs, LM usage by model, and the model that answered."""

    outputs: dict[str, Any]
    usage: dict[str, dict[str, Any]] = field(default_factory=dict)
    model: str | None = None


def run_watched(
    work: Callable[[], T],
    *,
    timeout_s: float | None = None,
    deadline_at: float | None = None,
    stop: Callable[[], str | None] | None = None,
    poll_s: float = POLL_INTERVAL_S,
) -> T:
    """Run ``work`` on a helper thread; give up on timeout, deadline or a stop request.

    Raises:
        StepTimeout: ``timeout_s`` passed first.
        PipelineDeadlineExceeded: ``deadline_at`` (epoch s) passed first.
        StepStopped: ``stop()`` returned a reason.
        Exception: Whatever ``work`` raised.
    """
    box: dict[str, Any] = {}
    finished = threading.Event()

    def target() -> None:
        try:
            box["value"] = work()
        except BaseException as exc:  # handed to the waiting thread
            box["error"] = exc
        finally:
            finished.set()

    started = time.monotonic()
    # The helper thread runs in a copy of this context: the step's log lines keep the trace.
    context = contextvars.copy_context()
    threading.Thread(
        target=context.run, args=(target,), name="dspex-pipeline-step", daemon=True
    ).start()
    step_end = None if timeout_s is None else started + timeout_s
    while not finished.wait(_slice(poll_s, step_end, deadline_at)):
        now = time.monotonic()
        if step_end is not None and now >= step_end:
            raise StepTimeout(f"the step did not finish within its timeout of {timeout_s} s")
        if deadline_at is not None and time.time() >= deadline_at:
            raise PipelineDeadlineExceeded("the pipeline reached its deadline while this step ran")
        reason = stop() if stop is not None else None
        if reason:
            raise StepStopped(reason)
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


def _slice(poll_s: float, step_end: float | None, deadline_at: float | None) -> float:
    wait = poll_s
    if step_end is not None:
        wait = min(wait, step_end - time.monotonic())
    if deadline_at is not None:
        wait = min(wait, deadline_at - time.time())
    return max(0.0, wait)


def execute(ctx: Any, step: LeafStep, values: Mapping[str, Any], run: RunInfo) -> StepOutcome:
    """Run ``step`` on ``values`` in this thread (``ctx`` is the worker's ``WorkerContext``)."""
    if isinstance(step, Map):
        return _map(ctx, step, values, run)
    if isinstance(step, Native):
        return StepOutcome(_native(ctx, step, values, run))
    assert isinstance(step, Dspy)
    return _dspy(ctx, step, dict(values), run)


def _native(ctx: Any, step: Native, values: Mapping[str, Any], run: RunInfo) -> dict[str, Any]:
    from dspex_jobs.router import default_router

    where = NativeCall(default_router(), step.operation, getattr(ctx, "settings", None), run.queue)
    spec = step.spec
    if spec is not None and spec.call is not None:
        return spec.call(where, step.params, values)
    return default_call(where, step.params, values, step.writes())


_MODULE_KINDS: Final = {"Predict": JobKind.PREDICT, "ChainOfThought": JobKind.CHAIN_OF_THOUGHT}


def _dspy(ctx: Any, step: Dspy, values: dict[str, Any], run: RunInfo) -> StepOutcome:
    kind = _MODULE_KINDS.get(str(step.module))
    if kind is None:
        from dspex_jobs.pipeline.dspy_modules import run_module

        return run_module(ctx.runtime(), step, values, f"{run.run_id}.{run.step}")
    job = Job(
        id=f"{run.run_id}.{run.step}",
        kind=kind,
        signature=step.signature,
        instructions=step.instructions,
        inputs=values,
        lm=step.lm,
        trace_id=run.trace_id,
        correlation_id=run.run_id,
    )
    outcome = ctx.runtime().run(job)
    return StepOutcome(dict(outcome.outputs), dict(outcome.usage), outcome.model)


def _map(ctx: Any, step: Map, values: Mapping[str, Any], run: RunInfo) -> StepOutcome:
    items = values[step.item]
    if not isinstance(items, list):
        raise JobFailed(f"map over {step.over!r}: expected a list, got {type(items).__name__}")
    shared = {k: v for k, v in values.items() if k != step.item}
    inner = step.step

    def one(position: int) -> StepOutcome:
        item_run = RunInfo(run.run_id, f"{run.step}.{position}", run.trace_id, run.queue)
        return run_watched(
            lambda: execute(ctx, inner, {**shared, step.item: items[position]}, item_run),
            timeout_s=inner.timeout_s,
        )

    workers = max(1, min(step.max_concurrency, len(items)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dspex-map") as pool:
        results = list(pool.map(one, range(len(items))))
    outputs: dict[str, Any] = {"items": [r.outputs for r in results]}
    for name in step.writes():
        outputs[name] = [r.outputs.get(name) for r in results]
    usage: dict[str, dict[str, Any]] = {}
    for result in results:
        for model, counts in result.usage.items():
            merged = usage.setdefault(model, {})
            for key, count in counts.items():
                if isinstance(count, int | float):
                    merged[key] = merged.get(key, 0) + count
    return StepOutcome(outputs, usage, next((r.model for r in results if r.model), None))
