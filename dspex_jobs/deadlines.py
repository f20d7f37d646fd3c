"""Deadlines and time limits that hold in every pool, thread pools included.

Celery enforces ``--soft-time-limit``/``--time-limit`` only in prefork (it signals or kills
the child); thread and solo pools silently ignore both, and no pool stops a job whose own
``deadline_at`` passes while it runs. :func:`run_bounded` closes that gap: the job's work runs
on a helper thread while the pool's thread waits for it, for at most the time that is left,
and gives up with :class:`~dspex_jobs.errors.DeadlineExceeded` (or
:class:`~dspex_jobs.errors.JobCancelled` when the producer cancels meanwhile).

A Python thread cannot be killed: work that is given up on runs to its own end in the
background (an LM call is bounded by ``DSPEX_LM_TIMEOUT_S``), and its outputs are discarded.
What the deadline buys is that the job's slot, and the producer waiting on it, are freed on
time. Jobs with no bound to enforce (prefork, no deadline) run directly: no helper thread.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from dspex_jobs.errors import DeadlineExceeded, JobCancelled

__all__ = ["CANCEL_POLL_S", "run_bounded"]

T = TypeVar("T")

CANCEL_POLL_S = 0.5
"""How often a bounded job looks for a cancel request while it waits."""


def run_bounded(
    work: Callable[[], T],
    *,
    job_id: str,
    limit_s: float | None = None,
    deadline_at: float | None = None,
    cancelled: Callable[[], bool] | None = None,
    poll_s: float = CANCEL_POLL_S,
) -> T:
    """Run ``work`` and return its value, unless a bound passes first.

    Args:
        work: The job's body. It runs on a helper thread with this thread's context
            variables (trace ids, DSPy settings), so it sees what the caller sees.
        job_id: For the error messages.
        limit_s: Most seconds the work may take (the pool's soft time limit).
        deadline_at: The job's deadline (epoch s).
        cancelled: Polled every ``poll_s`` while waiting; ``True`` stops waiting.

    Raises:
        DeadlineExceeded: ``limit_s`` or ``deadline_at`` passed first.
        JobCancelled: ``cancelled()`` said so first.
        Exception: Whatever ``work`` raised.
    """
    if limit_s is None and deadline_at is None and cancelled is None:
        return work()
    started = time.monotonic()
    end = started + limit_s if limit_s is not None else None
    if deadline_at is not None:
        until_deadline = started + (deadline_at - time.time())
        end = until_deadline if end is None else min(end, until_deadline)
    box: dict[str, Any] = {}
    finished = threading.Event()
    context = contextvars.copy_context()

    def target() -> None:
        try:
            box["value"] = context.run(work)
        except BaseException as exc:  # handed over to the waiting thread
            box["error"] = exc
        finally:
            finished.set()

    threading.Thread(target=target, name=f"dspex-job-{job_id[:12]}", daemon=True).start()
    while True:
        wait = poll_s if cancelled is not None else None
        if end is not None:
            left = max(0.0, end - time.monotonic())
            wait = left if wait is None else min(wait, left)
        if finished.wait(wait):
            break
        if end is not None and time.monotonic() >= end:
            raise _timed_out(job_id, limit_s, deadline_at, time.monotonic() - started)
        if cancelled is not None and cancelled():
            raise JobCancelled(
                f"job {job_id} was cancelled while it ran; its outputs will be discarded",
                job_id=job_id,
            )
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


def _timed_out(
    job_id: str, limit_s: float | None, deadline_at: float | None, ran_s: float
) -> DeadlineExceeded:
    if deadline_at is not None and time.time() >= deadline_at:
        why = "reached its deadline"
    else:
        why = f"ran past the worker's time limit of {limit_s:g} s"
    return DeadlineExceeded(
        f"job {job_id} {why} after running {ran_s:.1f} s; it was stopped "
        "and its outputs, if they come, are discarded",
        job_id=job_id,
    )
