"""Producer side of optimizations: build and submit the request, follow its progress.

Light: no DSPy. ``Client.optimize`` calls :func:`submit_optimize`; the returned
:class:`OptimizeHandle` is a :class:`~dspex_jobs.client.JobHandle` with :meth:`progress` and
:meth:`follow` (what ``dspex-jobs optimize --follow`` draws).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TextIO

from dspex_jobs.client import JobHandle
from dspex_jobs.errors import OptimizeRequestError, ProgramNotFound, ValidationError
from dspex_jobs.jobs import JobKind
from dspex_jobs.optimize.datasets import DatasetSource, check_rows, load_rows
from dspex_jobs.optimize.progress import Progress, read_progress
from dspex_jobs.optimize.request import (
    OptimizeRequest,
    canonical_optimizer,
    check_optimizer_args,
    dataset_hash,
)
from dspex_jobs.programs.registry import ProgramRegistry, _spec
from dspex_jobs.programs.spec import ProgramSpec, check_name
from dspex_jobs.results import JobResult, JobStatus

if TYPE_CHECKING:
    from dspex_jobs.client import Client

__all__ = ["OptimizeHandle", "build_request", "render_progress", "submit_optimize"]


class OptimizeHandle(JobHandle):
    """A submitted optimization: a job handle with live progress."""

    def progress(self) -> Progress | None:
        """The latest progress record (``None`` until a worker starts it)."""
        return read_progress(self._store.client, self._store.keys, self.id)

    def follow(
        self,
        *,
        interval_s: float = 0.5,
        timeout: float | None = None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> JobResult:
        """Call ``on_progress`` with each new record until the job ends; return its result.

        Raises:
            JobTimeout: ``timeout`` passed first.
            DSPexError: The job failed (or was cancelled).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last: tuple[Any, ...] | None = None
        while True:
            record = self.progress()
            if record is not None and on_progress is not None:
                key = (record.phase, record.metric_calls, record.trials_done, record.elapsed_s)
                if key != last:
                    on_progress(record)
                    last = key
            if self.status() in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED):
                return self.result(timeout=5)
            if deadline is not None and time.monotonic() > deadline:
                return self.result(timeout=0.01)
            time.sleep(interval_s)


def render_progress(record: Progress, width: int = 30) -> str:
    """One progress-bar line: phase, bar, counts, best score, elapsed, ETA."""
    done = record.fraction()
    if done is None:
        bar = "-" * width
        pct = "   ?%"
    else:
        filled = round(done * width)
        bar = "#" * filled + "-" * (width - filled)
        pct = f"{done * 100:4.0f}%"
    parts = [
        f"{record.phase:<9}",
        f"[{bar}]",
        pct,
        f"metric calls {record.metric_calls}" + (f"/{record.budget}" if record.budget else ""),
    ]
    if record.trials_total:
        parts.append(f"trials {record.trials_done}/{record.trials_total}")
    if record.best_score is not None:
        parts.append(f"best {record.best_score:.3f}")
    parts.append(f"{record.elapsed_s:.0f}s")
    if record.eta_s is not None:
        parts.append(f"ETA {record.eta_s:.0f}s")
    if record.resumed:
        parts.append("(resumed)")
    return " ".join(parts)


def print_progress(record: Progress, stream: TextIO = sys.stderr) -> None:
    """Redraw the progress line in place."""
    stream.write("\r" + render_progress(record).ljust(100))
    stream.flush()


def build_request(
    client: Client,
    *,
    program: str | ProgramSpec | Mapping[str, Any],
    optimizer: str,
    trainset: DatasetSource,
    valset: DatasetSource | None = None,
    metric: str = "exact_match",
    name: str | None = None,
    signature: str | None = None,
    module: str | None = None,
    metric_fields: tuple[str, ...] | list[str] | None = None,
    reflection_lm: str | None = None,
    promote_to: str | None = None,
    min_score: float | None = None,
    schedule: str | None = None,
    time_limit_s: float | None = None,
    **optimizer_args: Any,
) -> OptimizeRequest:
    """Check everything and build the request (no Redis writes).

    Raises:
        OptimizeRequestError, ValidationError: What is wrong, with the field (and row).
        ProgramNotFound: ``program`` names an undefined program and no signature was given.
    """
    optimizer = canonical_optimizer(optimizer)
    args = check_optimizer_args(optimizer, optimizer_args)
    if (
        optimizer == "GEPA"
        and sum(k in args for k in ("auto", "max_full_evals", "max_metric_calls")) != 1
    ):
        raise OptimizeRequestError(
            "GEPA needs exactly one budget: auto, max_full_evals or max_metric_calls",
            field="optimizer_args",
        )
    program_name, spec = _program(client, program, name, signature, module)
    if not isinstance(metric, str) or not metric:
        raise OptimizeRequestError("metric must be a registered metric's name", field="metric")
    max_rows = client.settings.batch_max_rows
    train_rows = load_rows(trainset, field="trainset", max_rows=max_rows)
    if not train_rows:
        raise OptimizeRequestError("trainset is empty", field="trainset")
    val_rows = None if valset is None else load_rows(valset, field="valset", max_rows=max_rows)
    inputs = spec.inputs()
    check_rows(train_rows, inputs, field="trainset")
    if val_rows is not None:
        check_rows(val_rows, inputs, field="valset")
    if metric_fields:
        check_rows(train_rows, metric_fields, field="trainset")
    try:
        return OptimizeRequest(
            program=program_name,
            spec=spec,
            optimizer=optimizer,
            optimizer_args=args,
            trainset=train_rows,
            valset=val_rows,
            metric=metric,
            metric_fields=tuple(metric_fields) if metric_fields else None,
            reflection_lm=reflection_lm,
            promote_to=promote_to,
            min_score=min_score,
            trainset_hash=dataset_hash(train_rows),
            valset_hash=None if val_rows is None else dataset_hash(val_rows),
            schedule=schedule,
            time_limit_s=time_limit_s,
        )
    except Exception as exc:  # pydantic: a wrong type of a scalar option
        raise OptimizeRequestError(f"optimize request: {exc}", field="request") from None


def submit_optimize(
    client: Client, *, idempotency_key: str | None = None, **arguments: Any
) -> OptimizeHandle:
    """Build the request and enqueue it on the ``optimizer`` queue."""
    request = build_request(client, **arguments)
    handle = client.submit(
        JobKind.OPTIMIZE,
        None,
        {"request": request.model_dump(mode="json")},
        idempotency_key=idempotency_key,
    )
    return OptimizeHandle(handle.id, client, JobKind.OPTIMIZE)


def _program(
    client: Client,
    program: str | ProgramSpec | Mapping[str, Any],
    name: str | None,
    signature: str | None,
    module: str | None,
) -> tuple[str, ProgramSpec]:
    registry = ProgramRegistry(client._redis, client._keys, client.settings.program_max_bytes)
    if isinstance(program, str):
        program_name = check_name(program.partition("@")[0])
        if signature is not None or module is not None:
            spec = _spec({"module": module or "predict", "signature": signature})
            return program_name, spec
        try:
            return program_name, registry.spec(program_name)
        except ProgramNotFound:
            raise ProgramNotFound(
                f"no program named {program_name!r}: pass signature= (and module=) to define "
                "it, or define it first (client.programs.define)",
                name=program_name,
            ) from None
    if name is None:
        raise ValidationError(
            "a program given as a spec needs name= (what to store it as)", field="name"
        )
    return check_name(name), _spec(program)


def iter_progress(handle: OptimizeHandle, interval_s: float = 0.5) -> Iterator[Progress]:
    """Each new progress record until the job ends (for custom displays)."""
    seen: tuple[Any, ...] | None = None
    while handle.status() not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED):
        record = handle.progress()
        if record is not None and (record.phase, record.metric_calls) != seen:
            seen = (record.phase, record.metric_calls)
            yield record
        time.sleep(interval_s)
