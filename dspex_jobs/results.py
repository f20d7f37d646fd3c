"""What a finished job leaves behind: outputs, usage, timings, worker, or a typed error."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from dspex_jobs.errors import DSPexError, error_from_payload

__all__ = ["JobErrorInfo", "JobResult", "JobStatus", "Timings"]


class JobStatus(StrEnum):
    """Where a job is. ``PENDING`` means queued, or an id nobody submitted (as in Celery)."""

    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Whether the job will not change any more."""
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class Timings(BaseModel):
    """Wall-clock instants (epoch seconds) in a job's life, and the durations they give."""

    model_config = ConfigDict(frozen=True)

    created_at: float
    started_at: float
    finished_at: float

    @property
    def queued_s(self) -> float:
        """Time spent waiting in the queue."""
        return max(0.0, self.started_at - self.created_at)

    @property
    def run_s(self) -> float:
        """Time the worker spent running the job."""
        return max(0.0, self.finished_at - self.started_at)

    @property
    def total_s(self) -> float:
        """From submit to finish."""
        return max(0.0, self.finished_at - self.created_at)


class JobErrorInfo(BaseModel):
    """A failure as stored: a stable code, a message and whether a retry could help."""

    model_config = ConfigDict(frozen=True)

    code: str
    message: str
    retryable: bool = False
    details: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_error(cls, error: DSPexError) -> JobErrorInfo:
        """Store a typed error."""
        return cls.model_validate(error.to_payload())

    def to_exception(self, job_id: str | None = None) -> DSPexError:
        """The typed error to raise on the producer side."""
        return error_from_payload(self.model_dump(), job_id=job_id)


class JobResult(BaseModel):
    """A finished job, as the worker stored it in Redis.

    ``usage`` maps each model to its token counts (``prompt_tokens``, ``completion_tokens``,
    ``total_tokens``), as DSPy's usage tracker reports them.
    """

    model_config = ConfigDict(frozen=True)

    job_id: str
    kind: str
    status: JobStatus
    outputs: dict[str, Any] | None = None
    error: JobErrorInfo | None = None
    usage: dict[str, dict[str, Any]] = Field(default_factory=dict)
    timings: Timings
    worker: str
    attempt: int = 1
    model: str | None = Field(None, description="The LM that answered (after any fallback).")
    correlation_id: str | None = None
    trace_id: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the job succeeded."""
        return self.status is JobStatus.SUCCEEDED

    def total_tokens(self) -> int:
        """Tokens used across every model the job called."""
        return sum(int(u.get("total_tokens") or 0) for u in self.usage.values())
