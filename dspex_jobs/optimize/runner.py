"""Run one optimization job on an optimizer worker: the body of ``dspex.optimize``.

The job already holds its lease (:func:`dspex_jobs.tasks.run_job` takes it and the worker's
:class:`~dspex_jobs.resilience.lease.LeaseKeeper` renews it), so no second copy runs while
this one lives; a copy redelivered after the visibility timeout parks until the lease lapses.

Phases: ``load`` -> the optimizer's own (``compile``, ``bootstrap``, ``search``) ->
``evaluate`` (score on the valset) -> ``save`` (a new registry version) -> ``done``.
Checkpoints: the compiled program once compiled (a takeover during evaluation does not
optimize again), the saved version once saved (a takeover never stores a second version),
and per-candidate states for the random search (:mod:`.adapters`).
"""

from __future__ import annotations

import logging
import time
from importlib import metadata as importlib_metadata
from typing import TYPE_CHECKING, Any

from dspex_jobs.errors import OptimizeRequestError, OptimizeTimeLimit
from dspex_jobs.jobs import Job, LMOptions
from dspex_jobs.optimize.progress import OptimizationStopped, Progress, ProgressReporter
from dspex_jobs.optimize.request import OptimizeRequest
from dspex_jobs.programs.registry import ProgramRegistry
from dspex_jobs.runtime.runner import RunOutcome
from dspex_jobs.telemetry import emit

if TYPE_CHECKING:
    from dspex_jobs.worker import WorkerContext

__all__ = ["FAILED_EVENT", "run_optimize_job"]

FAILED_EVENT = "dspex.optimizer.failed"
"""Emitted when an optimization fails (nightly runs alert on it); metadata: job_id,
program, optimizer, schedule, error."""

logger = logging.getLogger("dspex_jobs.optimize")


def run_optimize_job(ctx: WorkerContext, job: Job) -> RunOutcome:
    """Optimize, evaluate and store the program; the outputs name the new version."""
    import dspy
    from celery import current_task
    from celery.exceptions import SoftTimeLimitExceeded

    from dspex_jobs.optimize.adapters import Checkpoint

    try:
        request = OptimizeRequest.model_validate(job.inputs.get("request"))
    except Exception as exc:
        raise OptimizeRequestError(f"malformed optimize request: {exc}", field="request") from None
    client = ctx.store.client
    ttl_s = ctx.settings.result_ttl_s
    starts = int(client.incr(ctx.keys.optimize_starts(job.id)))
    client.expire(ctx.keys.optimize_starts(job.id), ttl_s)
    checkpoint = Checkpoint(client, ctx.keys, job.id, ttl_s)
    progress = Progress(
        job.id, request.optimizer, phase="load", attempt=starts, resumed=checkpoint.exists()
    )
    task = current_task if current_task and current_task.request.id == job.id else None
    reporter = ProgressReporter(
        client,
        ctx.keys,
        progress,
        task=task,
        ttl_s=ttl_s,
        interval_s=ctx.settings.optimizer_progress_interval_s,
    )
    runtime = ctx.runtime()
    lm = _stoppable(runtime.lms.get(job.lm), reporter)
    reflection_lm = (
        _stoppable(runtime.lms.get(LMOptions(model=request.reflection_lm)), reporter)
        if request.reflection_lm
        else lm
    )
    registry = ProgramRegistry(client, ctx.keys, ctx.settings.program_max_bytes)
    limit_s = min(
        request.time_limit_s or ctx.settings.optimizer_time_limit_s,
        ctx.settings.optimizer_time_limit_s,
    )
    reporter.deadline = time.monotonic() + limit_s
    reporter.publish(force=True)
    soft_limit = _SoftLimitWatch(reporter)
    try:
        with soft_limit, dspy.context(lm=lm, disable_history=True, track_usage=False):
            outputs = _optimize(
                ctx, job, request, reporter, checkpoint, registry, lm, reflection_lm
            )
    except BaseException as exc:
        limit = None
        if soft_limit.fired or isinstance(exc, SoftTimeLimitExceeded):  # prefork soft limit
            soft_s = ctx.settings.optimizer_soft_time_limit_s
            limit = OptimizeTimeLimit(
                f"optimization {job.id} ran past the optimizer pool's "
                f"soft time limit of {soft_s} s and was stopped; nothing "
                "was stored",
                job_id=job.id,
                time_limit_s=soft_s,
            )
        elif reporter.timed_out:
            limit = OptimizeTimeLimit(
                f"optimization {job.id} ran past its time limit of "
                f"{limit_s:g} s and was stopped; nothing was stored",
                job_id=job.id,
                time_limit_s=limit_s,
            )
        elif reporter.cancelled or isinstance(exc, OptimizationStopped):
            # (DSPy may wrap our stop signal in its own error: the flag decides.)
            reporter.phase("cancelled")
            return RunOutcome({"cancelled": True}, {}, lm.model)
        reporter.phase("failed")
        failure = limit or exc
        emit(
            FAILED_EVENT,
            {"elapsed_s": progress.elapsed_s},
            {
                "job_id": job.id,
                "program": request.program,
                "optimizer": request.optimizer,
                "schedule": request.schedule,
                "error": f"{type(failure).__name__}: {failure}",
            },
        )
        if limit is not None:
            raise limit from None
        raise
    checkpoint.clear()
    return RunOutcome(outputs, {}, lm.model)


def _optimize(
    ctx: WorkerContext,
    job: Job,
    request: OptimizeRequest,
    reporter: ProgressReporter,
    checkpoint: Any,
    registry: ProgramRegistry,
    lm: Any,
    reflection_lm: Any,
) -> dict[str, Any]:
    import dspy

    from dspex_jobs.optimize.adapters import ADAPTERS, OptimizeRun
    from dspex_jobs.optimize.metrics import build_metric
    from dspex_jobs.programs.execute import program_cache
    from dspex_jobs.programs.loader import build_module, code_version

    started = time.time()
    saved = checkpoint.get("saved")
    if saved is not None:  # a previous run stored the version and died before finishing
        reporter.phase("done", best_score=saved.get("score"))
        return dict(saved)
    program_cache(ctx)  # imports DSPEX_PROGRAM_MODULES so registered classes exist
    spec = request.spec
    inputs = spec.inputs()
    fields = request.metric_fields or _label_fields(spec.outputs(), inputs, request.trainset)
    trainset = [dspy.Example(**row).with_inputs(*inputs) for row in request.trainset]
    valset = (
        None
        if request.valset is None
        else [dspy.Example(**row).with_inputs(*inputs) for row in request.valset]
    )
    metric = build_metric(request.metric, fields, reporter)
    student = build_module(spec)
    compiled_state = checkpoint.get("compiled")
    extra: dict[str, Any] = {}
    if compiled_state is not None:
        compiled = student.reset_copy()
        compiled.load_state(compiled_state)
        extra = checkpoint.get("extra") or {}
        reporter.phase("resumed")
    else:
        run = OptimizeRun(
            request.optimizer,
            student,
            trainset,
            valset,
            metric,
            dict(request.optimizer_args),
            lm,
            reflection_lm,
            ctx.settings.optimizer_num_threads,
            reporter,
            checkpoint,
        )
        reporter.check_cancel()
        compiled = ADAPTERS[request.optimizer](run)
        extra = run.extra
        checkpoint.put("compiled", compiled.dump_state())
        checkpoint.put("extra", extra)
    score = None
    if valset:
        reporter.phase("evaluate", budget=reporter.progress.metric_calls + len(valset))
        evaluate = dspy.Evaluate(
            devset=valset,
            metric=metric,
            display_progress=False,
            display_table=False,
            num_threads=ctx.settings.optimizer_num_threads,
        )
        score = round(float(evaluate(compiled).score) / 100, 4)
        reporter.phase("evaluate", best_score=score)
    reporter.check_cancel()
    reporter.phase("save")
    meta = {
        "optimizer": request.optimizer,
        "optimizer_args": request.optimizer_args,
        "metric": request.metric,
        "metric_fields": list(fields),
        "score": score,
        "trainset_size": len(trainset),
        "valset_size": len(valset or []),
        "trainset_hash": request.trainset_hash,
        "valset_hash": request.valset_hash,
        "dspy_version": dspy.__version__,
        "code_version": code_version(spec),
        "dspex_jobs_version": _version(),
        "job_id": job.id,
        "schedule": request.schedule,
        "metric_calls": reporter.progress.metric_calls,
        "elapsed_s": round(time.time() - started, 3),
        "lm": lm.model,
        **extra,
    }
    stored = registry.save(request.program, spec, compiled.dump_state(), meta)
    promoted = None
    if request.promote_to and (
        request.min_score is None or (score is not None and score >= request.min_score)
    ):
        registry.promote(stored.ref, request.promote_to)
        promoted = request.promote_to
    outputs = {
        "program": stored.ref,
        "name": stored.name,
        "version": stored.version,
        "score": score,
        "promoted": promoted,
        "metric_calls": reporter.progress.metric_calls,
    }
    checkpoint.put("saved", outputs)
    reporter.phase("done", best_score=score if score is not None else reporter.progress.best_score)
    return outputs


class _SoftLimitWatch:
    """Marks the job timed out when the prefork pool's soft time limit fires.

    Billiard raises ``SoftTimeLimitExceeded`` from its SIGUSR1 handler in the child's main
    thread, wherever that thread is; DSPy code that catches ``Exception`` (a bootstrap
    counts it as one failed example) can swallow it. So the handler is chained: it first
    moves the reporter's deadline to now, which stops every later LM and metric call of the
    job (DSPy's worker threads included) with :class:`OptimizationStopped`, then raises as
    before. Does nothing outside a prefork child's main thread.
    """

    def __init__(self, reporter: ProgressReporter) -> None:
        self.reporter = reporter
        self.fired = False
        self._previous: Any = None

    def __enter__(self) -> _SoftLimitWatch:
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread() or not hasattr(
            signal, "SIGUSR1"
        ):
            return self
        previous: Any = signal.getsignal(signal.SIGUSR1)
        if getattr(previous, "__name__", "") != "soft_timeout_sighandler":  # not billiard's
            return self

        def on_soft_limit(signum: int, frame: Any) -> None:
            self.fired = True
            self.reporter.deadline = 0.0
            previous(signum, frame)  # raises SoftTimeLimitExceeded

        self._previous = previous
        signal.signal(signal.SIGUSR1, on_soft_limit)
        return self

    def __exit__(self, *_: object) -> None:
        if self._previous is not None:
            import signal

            signal.signal(signal.SIGUSR1, self._previous)


def _stoppable(lm: Any, reporter: ProgressReporter) -> Any:
    """A copy of ``lm`` that refuses to call the model once the job is cancelled or past its
    time limit, so the examples DSPy already handed to its threads end at once instead of
    each finishing an LM call. Copies DSPy makes of it (``lm.copy(rollout_id=...)``) keep the
    check, since they keep its class."""
    base = type(lm)

    class StoppableLM(base):  # type: ignore[misc, valid-type]
        def forward(self, *args: Any, **kwargs: Any) -> Any:
            reporter.check_stop()
            return super().forward(*args, **kwargs)

        async def aforward(self, *args: Any, **kwargs: Any) -> Any:
            reporter.check_stop()
            return await super().aforward(*args, **kwargs)

    StoppableLM.__name__ = StoppableLM.__qualname__ = f"Stoppable{base.__name__}"
    copied = lm.copy()
    copied.__class__ = StoppableLM
    return copied


def _label_fields(
    outputs: tuple[str, ...], inputs: tuple[str, ...], rows: list[dict[str, Any]]
) -> tuple[str, ...]:
    """The fields a metric compares: the signature's outputs that rows carry (else the rows'
    non-input fields)."""
    first = rows[0] if rows else {}
    found = tuple(name for name in outputs if name in first)
    return found or tuple(name for name in first if name not in inputs)


def _version() -> str:
    try:
        return importlib_metadata.version("dspex-jobs")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"
