"""Following a pipeline run from the producer: status while it runs, result when it ends.

``handle.status()`` reads every step's record (state, queue, attempt, timings, error) in one
round trip, readable at any moment. ``handle.result(timeout)`` blocks on the run's done list
(``BLPOP``: it wakes the moment the run ends, including the moment one branch of a
``Parallel`` fails while others still run) and returns the context and step records, or raises
the run's error. ``handle.cancel()`` ends the run: steps not started never run, running ones
stop within a fraction of a second and their outputs are dropped.

The producer also enforces the pipeline's deadline: if it passes while the producer waits or
asks for status, the run is ended with ``PipelineDeadlineExceeded`` (workers enforce it too).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dspex_jobs.errors import (
    DSPexError,
    JobCancelled,
    JobTimeout,
    PipelineDeadlineExceeded,
    error_from_payload,
)
from dspex_jobs.pipeline.events import emit_stop
from dspex_jobs.pipeline.state import RunState, RunStore, StepState
from dspex_jobs.pipeline.webhook import end_run

if TYPE_CHECKING:
    from dspex_jobs.client import Client

__all__ = ["PipelineHandle", "PipelineResult", "PipelineStatus", "StepStatus"]


@dataclass(frozen=True)
class StepStatus:
    """One step (or ``Parallel`` merge) of a run.

    Attributes:
        name: The step's name.
        kind: ``native``, ``dspy``, ``map`` or ``merge``.
        queue: The queue its task went to.
        state: pending, running, retrying, done, failed, skipped or cancelled.
        attempt: Which attempt (1 for the first).
        started_at: When its current attempt started (epoch s), if it did.
        finished_at: When it ended, if it did.
        duration_s: How long its last attempt ran.
        worker: The worker that ran it.
        error: Its error, as stored (``code``, ``message``, ``details``).
        note: Why it was skipped, stopped, or answered by its fallback.
        usage: LM token counts by model.
    """

    name: str
    kind: str
    queue: str
    state: StepState
    attempt: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    duration_s: float | None = None
    worker: str | None = None
    error: dict[str, Any] | None = None
    note: str | None = None
    usage: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> StepStatus:
        """Read a stored step record."""
        return cls(
            record["name"],
            record.get("kind", "?"),
            record.get("queue", "?"),
            StepState(record.get("state", "pending")),
            int(record.get("attempt") or 0),
            record.get("started_at"),
            record.get("finished_at"),
            record.get("duration_s"),
            record.get("worker"),
            record.get("error"),
            record.get("note"),
            dict(record.get("usage") or {}),
        )


@dataclass(frozen=True)
class PipelineStatus:
    """A run at one moment: its state and every step's, in plan order."""

    run_id: str
    pipeline: str
    state: RunState
    trace_id: str
    created_at: float
    finished_at: float | None
    steps: list[StepStatus]
    error: dict[str, Any] | None = None

    def __getitem__(self, name: str) -> StepStatus:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    def render(self) -> str:
        """A table for people: one line per step."""
        lines = [
            f"pipeline {self.pipeline} run {self.run_id}: {self.state.value} "
            f"(trace {self.trace_id})",
            f"  {'step':<24}{'state':<11}{'queue':<10}{'try':>4}{'time s':>9}  note",
        ]
        for s in self.steps:
            took = (
                f"{s.duration_s:.3f}"
                if s.duration_s is not None
                else (f"{time.time() - s.started_at:.1f}+" if s.started_at else "-")
            )
            note = s.note or (f"[{s.error['code']}] {s.error['message']}" if s.error else "")
            lines.append(
                f"  {s.name:<24}{s.state.value:<11}{s.queue:<10}{s.attempt:>4}"
                f"{took:>9}  {note[:70]}"
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class PipelineResult:
    """A run that succeeded: its whole context and every step's record.

    ``result["answer"]`` reads a field; ``result.outputs_of("cot")`` one step's outputs.
    """

    run_id: str
    pipeline: str
    trace_id: str
    context: dict[str, Any]
    steps: list[StepStatus]
    created_at: float
    finished_at: float

    def __getitem__(self, name: str) -> Any:
        return self.context[name]

    def outputs_of(self, step: str) -> dict[str, Any]:
        """Everything ``step`` wrote (empty if it was skipped without defaults)."""
        value = self.context.get(step)
        return dict(value) if isinstance(value, dict) else {}

    @property
    def duration_s(self) -> float:
        """From submit to end."""
        return max(0.0, self.finished_at - self.created_at)

    def usage(self) -> dict[str, dict[str, Any]]:
        """LM token counts by model, summed over every step."""
        total: dict[str, dict[str, Any]] = {}
        for step in self.steps:
            for model, counts in step.usage.items():
                merged = total.setdefault(model, {})
                for key, count in counts.items():
                    if isinstance(count, int | float):
                        merged[key] = merged.get(key, 0) + count
        return total


class PipelineHandle:
    """A submitted pipeline run. Cheap to rebuild from its id: ``client.pipeline_run(id)``."""

    def __init__(self, run_id: str, client: Client) -> None:
        self.id = run_id
        self._client = client
        self._store = RunStore(client._redis, client._keys, client.settings.result_ttl_s)

    def status(self) -> PipelineStatus:
        """Every step's state, queue, attempt, timings and error, as of now."""
        meta = self._known_meta()
        outcome = meta["outcome"] or self._check_deadline(meta)
        records = self._store.records(self.id)
        plan = self._store.plan(self.id)
        order = list(plan.nodes) if plan is not None else sorted(records)
        steps = [StepStatus.from_record(records[n]) for n in order if n in records]
        if outcome:
            state = RunState(outcome["status"])
        elif any(s.state is not StepState.PENDING for s in steps):
            state = RunState.RUNNING
        else:
            state = RunState.PENDING
        return PipelineStatus(
            self.id,
            str(meta["pipeline"]),
            state,
            str(meta["trace_id"]),
            float(meta["created_at"] or 0.0),
            outcome.get("finished_at") if outcome else None,
            steps,
            outcome.get("error") if outcome else None,
        )

    def result(self, timeout: float | None = None) -> PipelineResult:
        """Wait for the run to end; its context and step records.

        Args:
            timeout: Seconds to wait; ``None`` waits as long as it takes (up to the
                pipeline's deadline, if it has one).

        Raises:
            JobTimeout: Not ended after ``timeout`` seconds (it may still run).
            PipelineStepFailed: A step failed under the ``fail`` policy (``.step``, ``.cause``).
            PipelineDeadlineExceeded: The run passed its deadline.
            JobCancelled: The run was cancelled.
        """
        meta = self._known_meta()
        deadline = float(meta["deadline_at"] or 0.0) or None
        wait_s = timeout
        if deadline is not None:
            left = max(0.0, deadline - time.time())
            wait_s = left if timeout is None else min(timeout, left)
        outcome = self._store.wait(self.id, wait_s)
        if outcome is None:
            outcome = self._check_deadline(self._store.meta(self.id))
        if outcome is None:
            raise JobTimeout(
                f"pipeline run {self.id} did not end within {timeout} s", job_id=self.id
            )
        if outcome["status"] != RunState.SUCCEEDED:
            raise _error(outcome, self.id)
        status = self.status()
        return PipelineResult(
            self.id,
            status.pipeline,
            status.trace_id,
            self._store.context(self.id),
            status.steps,
            status.created_at,
            float(outcome.get("finished_at") or time.time()),
        )

    def cancel(self) -> bool:
        """End the run as cancelled; whether it was still running.

        Steps not started are never run; running ones stop within a fraction of a second
        (their outputs are dropped); ``result()`` raises :class:`JobCancelled`.
        """
        self._store.request_cancel(self.id)
        return self._end(
            {
                "status": RunState.CANCELLED.value,
                "error": JobCancelled(
                    f"pipeline run {self.id} was cancelled", job_id=self.id
                ).to_payload(),
            }
        )

    def _known_meta(self) -> dict[str, Any]:
        meta = self._store.meta(self.id)
        if meta["trace_id"] is None:
            raise JobTimeout(
                f"no pipeline run {self.id} (never submitted, or expired)", job_id=self.id
            )
        return meta

    def _check_deadline(self, meta: dict[str, Any]) -> dict[str, Any] | None:
        deadline = float(meta.get("deadline_at") or 0.0)
        if meta.get("outcome") or not deadline or time.time() < deadline:
            return meta.get("outcome")
        error = PipelineDeadlineExceeded(
            f"pipeline run {self.id} was still running at its deadline", job_id=self.id
        )
        self._store.request_cancel(self.id)
        self._end({"status": RunState.FAILED.value, "error": error.to_payload()})
        return self._store.outcome(self.id)

    def _end(self, outcome: dict[str, Any]) -> bool:
        """End the run unless it already ended (and send its webhook if this call ended it:
        :mod:`.webhook`)."""
        meta = self._store.meta(self.id)
        ended = end_run(
            self._store,
            self._client.app,
            self.id,
            outcome,
            pipeline=str(meta["pipeline"]),
            trace_id=str(meta["trace_id"]),
            created_at=float(meta["created_at"] or 0.0),
            webhook=meta["webhook"],
            record_ttl_s=self._client.settings.webhook_record_ttl_s,
        )
        if ended:
            emit_stop(
                self.id,
                str(meta["pipeline"]),
                str(meta["trace_id"]),
                outcome,
                float(meta["created_at"] or 0.0),
            )
        return ended

    def __repr__(self) -> str:
        return f"<PipelineHandle {self.id}>"


def _error(outcome: dict[str, Any], run_id: str) -> DSPexError:
    payload = outcome.get("error") or {"code": "job_failed", "message": "the run failed"}
    return error_from_payload(payload, job_id=run_id)
