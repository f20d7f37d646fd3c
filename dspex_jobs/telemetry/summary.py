"""Readable, secret-free one-line summaries of jobs, for Flower and logs.

Celery shows a task's arguments as ``argsrepr`` (set by the producer in the message headers);
without it Flower would show the whole envelope, input values included. The summary names the
kind, the signature, the input *names* and the trace id: enough to find a job, never its data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dspex_jobs.jobs import Job

__all__ = ["MAX_SIGNATURE_CHARS", "task_summary"]

MAX_SIGNATURE_CHARS = 80
"""Longer signatures are cut, so a summary stays one readable line."""


def task_summary(job: Job) -> str:
    """``predict 'question -> answer' inputs=[question] queue=general trace=<id>``."""
    parts = [job.kind.value]
    if job.signature:
        signature = " ".join(job.signature.split())
        if len(signature) > MAX_SIGNATURE_CHARS:
            signature = signature[: MAX_SIGNATURE_CHARS - 1] + "…"
        parts.append(repr(signature))
    if job.inputs:
        parts.append(f"inputs=[{', '.join(sorted(job.inputs))}]")
    parts.append(f"queue={job.target_queue}")
    if job.session_id:
        parts.append(f"session={job.session_id}")
    parts.append(f"trace={job.trace_id}")
    return " ".join(parts)
