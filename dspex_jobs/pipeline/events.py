"""The pipeline's telemetry events (``dspex.pipeline.*``), through :mod:`dspex_jobs.telemetry`.

================================ ========================== ===================================
event                            measurements               metadata
================================ ========================== ===================================
``dspex.pipeline.start``         ``steps``                  run_id, pipeline, trace_id
``dspex.pipeline.step``          ``duration_s``, ``attempt`` run_id, pipeline, trace_id, step,
                                                            kind, queue, state, worker,
                                                            error_code
``dspex.pipeline.stop``          ``duration_s``             run_id, pipeline, trace_id, status,
                                                            failed_step, error_code
================================ ========================== ===================================

``start`` is emitted by the producer that submits the run, ``step`` by the worker that ran the
step (once per step that ends: done, failed, skipped, cancelled), ``stop`` by whichever process
ended the run (the worker of its last or failing step, or the producer that cancelled it or saw
its deadline pass). Every event of a run carries the same ``trace_id``, as do the run's LM jobs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Final

from dspex_jobs.telemetry import emit, has_handlers

__all__ = ["START_EVENT", "STEP_EVENT", "STOP_EVENT", "emit_start", "emit_step", "emit_stop"]

START_EVENT: Final = "dspex.pipeline.start"
STEP_EVENT: Final = "dspex.pipeline.step"
STOP_EVENT: Final = "dspex.pipeline.stop"


def emit_start(run_id: str, pipeline: str, trace_id: str, steps: int) -> None:
    """A run was submitted."""
    emit(
        START_EVENT,
        {"steps": float(steps)},
        {"run_id": run_id, "pipeline": pipeline, "trace_id": trace_id},
    )


def emit_step(run_id: str, pipeline: str, trace_id: str, record: Mapping[str, Any]) -> None:
    """A step ended (``record`` is its stored record)."""
    if not has_handlers(STEP_EVENT):
        return
    error = record.get("error") or {}
    emit(
        STEP_EVENT,
        {
            "duration_s": float(record.get("duration_s") or 0.0),
            "attempt": float(record.get("attempt") or 0),
        },
        {
            "run_id": run_id,
            "pipeline": pipeline,
            "trace_id": trace_id,
            "step": record.get("name"),
            "kind": record.get("kind"),
            "queue": record.get("queue"),
            "state": record.get("state"),
            "worker": record.get("worker"),
            "error_code": error.get("code"),
        },
    )


def emit_stop(
    run_id: str,
    pipeline: str,
    trace_id: str,
    outcome: Mapping[str, Any],
    created_at: float | None,
) -> None:
    """A run ended (``outcome`` is its stored outcome)."""
    if not has_handlers(STOP_EVENT):
        return
    error = outcome.get("error") or {}
    emit(
        STOP_EVENT,
        {"duration_s": max(0.0, time.time() - created_at) if created_at else 0.0},
        {
            "run_id": run_id,
            "pipeline": pipeline,
            "trace_id": trace_id,
            "status": outcome.get("status"),
            "failed_step": outcome.get("step"),
            "error_code": error.get("code"),
        },
    )
