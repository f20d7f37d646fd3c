"""One delivery of a pipeline task in a worker: from reading the run to recording the step.

A task (:mod:`.tasks`) builds a :class:`NodeRun` and calls :meth:`NodeRun.run`, which

1. reads the run (plan, deadline, outcome, its own record) in one round trip; a run that has
   already ended makes the task a no-op (its step is recorded ``cancelled``), and a step whose
   record says it finished (a redelivered copy) is not run twice;
2. checks the ``When`` decisions it depends on (a branch not taken: ``skipped``) and the
   pipeline's deadline;
3. reads its inputs from the context, runs (:mod:`.execute`) and records the outcome with its
   outputs in one round trip;
4. on failure applies the step's policy (:mod:`.policy`): retry as a new Celery delivery,
   fallback in place, skip, or fail the run at once: the outcome is written and the producer
   woken before any other branch finishes;
5. if it is the run's last task, ends the run; if it is the last step of the run's final
   ``Parallel`` to end, merges the branches and ends the run itself (:meth:`NodeRun.join`),
   one queue hop before the chord's merge task would.

The task never raises for a step's failure: the chain goes on, and every later task sees the
ended run and returns in microseconds, so nothing hangs and no chord waits forever.
"""

from __future__ import annotations

import logging
import time
from typing import Any, NoReturn

from celery import Task

from dspex_jobs.errors import (
    DSPexError,
    JobFailed,
    PipelineDeadlineExceeded,
    PipelineStepFailed,
    ValidationError,
)
from dspex_jobs.pipeline.compiler import SERIALIZER
from dspex_jobs.pipeline.document import step_from_dict
from dspex_jobs.pipeline.events import emit_step, emit_stop
from dspex_jobs.pipeline.execute import RunInfo, StepOutcome, StepStopped, execute, run_watched
from dspex_jobs.pipeline.merge import merge_values
from dspex_jobs.pipeline.plan import Node
from dspex_jobs.pipeline.policy import Fail, FailurePolicy, Fallback, Retry, Skip
from dspex_jobs.pipeline.predicate import Predicate
from dspex_jobs.pipeline.state import RunStore, RunView, StepState
from dspex_jobs.pipeline.steps import LeafStep
from dspex_jobs.pipeline.webhook import end_run
from dspex_jobs.resilience.guard import RateLimitWait
from dspex_jobs.telemetry.context import job_context

__all__ = ["NodeRun"]

logger = logging.getLogger("dspex_jobs.pipeline")


class NodeRun:
    """One delivery of one node's task."""

    def __init__(self, task: Task[Any, Any], run_id: str, name: str) -> None:
        from dspex_jobs.worker import worker_context

        self.task = task
        self.ctx = worker_context(task.app)
        self.store = RunStore(self.ctx.store.client, self.ctx.keys, self.ctx.settings.result_ttl_s)
        self.run_id = run_id
        self.name = name
        self.worker = str(task.request.hostname or self.ctx.worker_name)
        self.started_at = time.time()
        self.attempt = 1

    # -- the lifecycle -----------------------------------------------------------------------

    def run(self) -> dict[str, Any] | None:
        """Run the node (see the module docstring); a short summary for Flower."""
        view = self.store.view(self.run_id, self.name)
        node = view.plan.nodes.get(self.name) if view is not None else None
        if view is None or node is None:
            logger.warning(
                "pipeline run %s has no step %s (expired?); dropped", self.run_id, self.name
            )
            return None
        self.view, self.node = view, node
        # Log lines of the step (and of the jobs it runs in process) carry the run's trace id.
        with job_context(
            run_id=self.run_id,
            step=self.name,
            trace_id=view.trace_id,
            queue=(self.task.request.delivery_info or {}).get("routing_key"),
        ):
            return self._run_node(view, node)

    def _run_node(self, view: RunView, node: Node) -> dict[str, Any] | None:
        prior = view.record or {}
        if StepState(prior.get("state", "pending")).finished:
            if node.final and prior.get("state") != StepState.CANCELLED:
                self.end_run({"status": "succeeded"})  # a redelivered copy: finish, never rerun
            return None
        if view.outcome is not None:
            return self.finish(
                StepState.CANCELLED,
                note=f"not run: the run had ended ({view.outcome.get('status')})",
                end=False,
            )
        if not self.guards_hold():
            return self.finish(StepState.SKIPPED, note="its condition did not hold")
        if view.deadline_at is not None and time.time() >= view.deadline_at:
            return self.fail_run(
                PipelineDeadlineExceeded(
                    f"step {self.name!r} had not started at the pipeline's deadline"
                )
            )
        if node.kind == "merge":
            return self.finish(StepState.DONE, writes=self.merged(node))
        self.attempt = int(prior.get("next_attempt") or 1)
        return self.run_leaf(step_from_dict(node.step, self.name))

    def run_leaf(self, step: Any) -> dict[str, Any] | None:
        assert isinstance(step, LeafStep)
        self.record(StepState.RUNNING)
        try:
            outcome = self.execute(step)
        except RateLimitWait as wait:  # the shared LM rate limit: wait, without a retry spent
            self.retry(wait.wait_s, None, same_attempt=True)
        except StepStopped as stop:
            return self.finish(StepState.CANCELLED, note=f"stopped: {stop}", end=False)
        except PipelineDeadlineExceeded as error:
            return self.fail_run(error)
        except Exception as exc:
            return self.failed(step, _typed(exc, self.name))
        return self.succeeded(outcome)

    def execute(self, step: LeafStep) -> StepOutcome:
        """Read the step's inputs and run it under its timeout and the run's deadline."""
        values = self.inputs(step)
        delivery = self.task.request.delivery_info or {}
        info = RunInfo(self.run_id, self.name, self.view.trace_id, delivery.get("routing_key"))
        return run_watched(
            lambda: execute(self.ctx, step, values, info),
            timeout_s=step.timeout_s,
            deadline_at=self.view.deadline_at,
            stop=lambda: self.store.stop_reason(self.run_id),
        )

    def inputs(self, step: LeafStep) -> dict[str, Any]:
        reads = step.reads()
        context = self.store.context(self.run_id, {s.partition(".")[0] for s in reads.values()})
        values: dict[str, Any] = {}
        for argument, source in reads.items():
            head, _, tail = source.partition(".")
            value = context.get(head)
            if tail:
                value = value.get(tail) if isinstance(value, dict) else None
            if value is None and (head not in context or tail):
                raise JobFailed(
                    f"step {self.name!r} needs {source!r}, which is not in the "
                    "context (a step it depends on was skipped?)",
                    field=source,
                    step=self.name,
                )
            values[argument] = value
        return values

    def guards_hold(self) -> bool:
        for when, branch in self.node.guards:
            decision = self.view.decisions.get(when)
            if decision is None:
                predicate = Predicate.parse(self.view.plan.whens[when])
                head = predicate.field.partition(".")[0]
                value = predicate.evaluate(self.store.context(self.run_id, [head]))
                decision = self.store.decide(self.run_id, when, value)
            if decision is not bool(branch):
                return False
        return True

    def merged(self, merge: Node) -> dict[str, Any]:
        """The fields a ``Parallel``'s merge node writes (see :mod:`.merge`)."""
        sources = {leaf for _, leaves in merge.merge.values() for leaf in leaves}
        return merge_values(merge.merge, self.store.context(self.run_id, sources))

    # -- outcomes ----------------------------------------------------------------------------

    def succeeded(self, outcome: StepOutcome, note: str | None = None) -> dict[str, Any]:
        writes = {self.name: outcome.outputs}
        writes.update({f: outcome.outputs[f] for f in self.node.writes if f in outcome.outputs})
        extra = {"usage": outcome.usage, "model": outcome.model} if outcome.usage else None
        return self.finish(StepState.DONE, writes=writes, note=note, extra=extra)

    def failed(self, step: LeafStep, error: DSPexError) -> dict[str, Any] | None:
        policy: FailurePolicy = step.on_error
        if isinstance(policy, Retry):
            if self.attempt <= policy.times and not isinstance(error, ValidationError):
                self.retry(policy.delay_s(self.attempt), error)
            policy = policy.then
        if isinstance(policy, Fallback):
            return self.fall_back(policy.step, error)
        if isinstance(policy, Skip):
            writes = {self.name: dict(policy.defaults)} if policy.defaults else {}
            writes.update({f: v for f, v in policy.defaults.items() if f in self.node.writes})
            return self.finish(
                StepState.SKIPPED,
                error=error,
                writes=writes,
                note="skipped after an error (on_error: skip)",
            )
        assert isinstance(policy, Fail)
        return self.fail_step(error)

    def fall_back(self, step: Any, error: DSPexError) -> dict[str, Any] | None:
        cause = f"[{error.code}] {error.message}"
        try:
            outcome = self.execute(step)
        except StepStopped as stop:
            return self.finish(StepState.CANCELLED, note=f"stopped: {stop}", end=False)
        except PipelineDeadlineExceeded as deadline:
            return self.fail_run(deadline)
        except Exception as exc:
            second = _typed(exc, self.name)
            return self.fail_step(second, note=f"its fallback failed too, after: {cause}")
        return self.succeeded(
            outcome,
            note=f"answered by its fallback {step.name or ''} after: {cause}".replace("  ", " "),
        )

    def retry(
        self, delay_s: float, error: DSPexError | None, *, same_attempt: bool = False
    ) -> NoReturn:
        """Record the failed attempt and hand the step back to Celery for a later delivery."""
        countdown = min(delay_s, self.ctx.countdown_limit_s)
        self.record(
            StepState.RETRYING,
            error=error,
            next_attempt=self.attempt if same_attempt else self.attempt + 1,
        )
        raise self.task.retry(countdown=countdown, exc=error, serializer=SERIALIZER)

    def fail_step(self, error: DSPexError, note: str | None = None) -> dict[str, Any]:
        self.finish(StepState.FAILED, error=error, note=note, end=False)
        return self.fail_run(
            PipelineStepFailed(
                f"step {self.name!r} failed: [{error.code}] {error.message}",
                step=self.name,
                cause=error.to_payload(),
            ),
            record=False,
        )

    def fail_run(self, error: DSPexError, *, record: bool = True) -> dict[str, Any]:
        """End the run failed (unless it already ended), waking the producer."""
        if record:
            self.finish(StepState.FAILED, error=error, end=False)
        self.end_run({"status": "failed", "step": self.name, "error": error.to_payload()})
        return {"step": self.name, "state": "failed"}

    def end_run(self, outcome: dict[str, Any]) -> None:
        """End the run unless it already ended; whoever ends it sends its webhook, if any
        (recorded with the outcome, :mod:`.webhook`)."""
        view = self.view
        if end_run(
            self.store,
            self.task.app,
            self.run_id,
            outcome,
            pipeline=view.plan.pipeline,
            trace_id=view.trace_id,
            created_at=view.created_at,
            webhook=view.webhook,
            record_ttl_s=self.ctx.settings.webhook_record_ttl_s,
            plan=view.plan,
        ):
            emit_stop(
                self.run_id,
                self.view.plan.pipeline,
                self.view.trace_id,
                outcome,
                self.view.created_at,
            )

    # -- records ---------------------------------------------------------------------------

    def finish(
        self,
        state: StepState,
        *,
        writes: dict[str, Any] | None = None,
        error: DSPexError | None = None,
        note: str | None = None,
        end: bool = True,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Record the step's end (and its writes); end the run if it is the last task."""
        record = self.record(state, writes=writes, error=error, note=note, **(extra or {}))
        emit_step(self.run_id, self.view.plan.pipeline, self.view.trace_id, record)
        if end and self.node.final:
            self.end_run({"status": "succeeded"})
        elif end and self.node.parallel is not None:
            self.join(self.view.plan.nodes[self.node.parallel])
        return {"step": self.name, "state": state.value}

    def join(self, merge: Node) -> None:
        """If this step was the last of the run's final ``Parallel`` to end, merge and end the
        run now. The chord's merge task would do the same one queue hop later (tens of ms on
        a busy worker); when it comes, it finds the merge recorded and does nothing."""
        if not merge.final or merge.guards:
            return
        states = self.store.states(self.run_id, merge.members)
        if not all(StepState(state).finished for state in states):
            return  # another branch still runs: it will join
        writes = self.merged(merge)
        now = time.time()
        record = {
            "name": merge.name,
            "kind": merge.kind,
            "queue": merge.queue,
            "state": StepState.DONE.value,
            "attempt": 1,
            "worker": self.worker,
            "started_at": now,
            "finished_at": now,
            "duration_s": 0.0,
            "note": f"merged by its last branch step, {self.name}",
        }
        self.store.record(self.run_id, merge.name, record, writes)
        emit_step(self.run_id, self.view.plan.pipeline, self.view.trace_id, record)
        self.end_run({"status": "succeeded"})

    def record(
        self,
        state: StepState,
        *,
        writes: dict[str, Any] | None = None,
        error: DSPexError | None = None,
        note: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        now = time.time()
        record: dict[str, Any] = {
            "name": self.name,
            "kind": self.node.kind,
            "queue": self.node.queue,
            "state": state.value,
            "attempt": self.attempt,
            "worker": self.worker,
            "started_at": self.started_at,
            "task_id": self.task.request.id,
            **extra,
        }
        if state.finished:
            record.update(finished_at=now, duration_s=now - self.started_at)
        if error is not None:
            record["error"] = error.to_payload()
        if note:
            record["note"] = note
        self.store.record(self.run_id, self.name, record, writes)
        return record


def _typed(exc: BaseException, step: str) -> DSPexError:
    if isinstance(exc, DSPexError):
        return exc
    logger.exception("pipeline step %s raised", step)
    return JobFailed(f"{type(exc).__name__}: {exc}", step=step)
