"""The job envelope: what a producer puts on the wire and a worker takes off it.

An envelope is plain JSON: a job id (also the Celery task id, so Flower and our results
agree), the kind of job, the signature text and inputs, per-job module and LM options,
correlation and trace ids, when it was created, and the protocol version. Nothing in it is
ever pickled, and the API key is never in it: workers take credentials from their own
settings.
"""

from __future__ import annotations

import time
import uuid
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["PROTOCOL_VERSION", "Job", "JobKind", "LMOptions", "new_job_id"]

PROTOCOL_VERSION = 1
"""Version of the envelope format; a worker refuses envelopes newer than it knows."""


class JobKind(StrEnum):
    """What a job runs. Each kind has a Celery task ``dspex.<kind>`` and a workload queue."""

    PREDICT = "predict"
    CHAIN_OF_THOUGHT = "chain_of_thought"
    PING = "ping"
    EMBED = "embed"
    INDEX_ADD = "index_add"
    INDEX_SEARCH = "index_search"
    PROGRAM = "program"
    PROGRAM_BATCH = "program_batch"
    OPTIMIZE = "optimize"

    @property
    def queue(self) -> str:
        """The workload queue this kind runs on by default."""
        return _QUEUE_OF_KIND[self]

    @property
    def task_name(self) -> str:
        """The Celery task name, readable in Flower and logs."""
        return f"dspex.{self.value}"

    @property
    def uses_signature(self) -> bool:
        """Whether jobs of this kind carry a signature (neural jobs carry texts, checked by
        :mod:`dspex_jobs.neural.limits`)."""
        return self not in _NO_SIGNATURE and self.queue != "neural"


_QUEUE_OF_KIND = {
    JobKind.PREDICT: "general",
    JobKind.CHAIN_OF_THOUGHT: "general",
    JobKind.PING: "general",
    JobKind.EMBED: "neural",
    JobKind.INDEX_ADD: "neural",
    JobKind.INDEX_SEARCH: "neural",
    JobKind.PROGRAM: "general",
    JobKind.PROGRAM_BATCH: "general",
    JobKind.OPTIMIZE: "optimizer",
}

_NO_SIGNATURE = frozenset({JobKind.PING, JobKind.PROGRAM, JobKind.PROGRAM_BATCH, JobKind.OPTIMIZE})
"""Kinds whose signature is not in the envelope: registered programs carry their own
(:mod:`dspex_jobs.programs`)."""


def new_job_id() -> str:
    """A fresh job id (a UUID4 in hex form: short, URL-safe, unique)."""
    return uuid.uuid4().hex


class LMOptions(BaseModel):
    """Per-job overrides of the worker's LM; anything left ``None`` keeps the worker's value.

    Only options that change what the LM does travel; credentials never do.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(None, gt=0)
    cache: bool | None = None
    fallbacks: tuple[str, ...] | None = Field(
        None, description="Models to try in order when this one fails retryably."
    )

    def overrides(self) -> dict[str, Any]:
        """The options that were set, as ``dspy.LM`` keyword arguments (fallbacks aside)."""
        return self.model_dump(exclude_none=True, exclude={"fallbacks"})


class Job(BaseModel):
    """One unit of work, exactly as it travels on the wire."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(default_factory=new_job_id, min_length=1, max_length=128)
    kind: JobKind
    signature: str | None = None
    instructions: str | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    lm: LMOptions = Field(default_factory=LMOptions)
    queue: str | None = None
    stream: bool = False
    session_id: str | None = Field(None, max_length=128)
    webhook: str | None = Field(
        None,
        max_length=2048,
        description="POSTed a signed JSON body when the job ends "
        "(dspex_jobs.webhooks); checked against the allowlist by producer and worker.",
    )
    program: str | None = Field(
        None,
        max_length=200,
        description="A registered program (``qa@3``, ``qa@production``) "
        "for program and program_batch jobs (dspex_jobs.programs).",
    )
    attempt: int = Field(1, ge=1, description="1 for the first run; re-scheduled runs count up.")
    deadline_at: float | None = Field(None, description="Not started after this (epoch s).")
    correlation_id: str | None = Field(None, max_length=256)
    trace_id: str = Field(default_factory=new_job_id, max_length=256)
    created_at: float = Field(default_factory=time.time)
    version: int = PROTOCOL_VERSION

    @field_validator("version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value > PROTOCOL_VERSION:
            raise ValueError(
                f"envelope version {value} is newer than this worker understands "
                f"({PROTOCOL_VERSION}); upgrade dspex-jobs on the workers"
            )
        return value

    @property
    def target_queue(self) -> str:
        """The queue this job goes to: its own ``queue`` if set, else its kind's."""
        return self.queue or self.kind.queue

    def to_wire(self) -> dict[str, Any]:
        """The JSON-able dict sent as the Celery task's only argument."""
        return self.model_dump(mode="json", exclude_defaults=False)
