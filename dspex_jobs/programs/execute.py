"""Worker side of the program job kinds: ``program`` (one call of a registered program),
``program_batch`` (a chunk of rows, each row's failure recorded rather than fatal) and
``optimize`` (handed to :mod:`dspex_jobs.optimize.runner`).

Each worker process keeps one :class:`~dspex_jobs.programs.loader.ProgramCache`: a program
version is loaded once per process, and an alias is resolved per job so a promote is seen
at the next job.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from dspex_jobs.errors import ValidationError
from dspex_jobs.jobs import Job, JobKind
from dspex_jobs.programs.classes import import_program_modules
from dspex_jobs.programs.loader import ProgramCache
from dspex_jobs.programs.registry import ProgramRegistry
from dspex_jobs.runtime.runner import RunOutcome

if TYPE_CHECKING:
    from dspex_jobs.worker import WorkerContext

__all__ = ["program_cache", "run_program_job"]

_lock = threading.Lock()


def program_cache(ctx: WorkerContext) -> ProgramCache:
    """This process's program cache (created on first use, with the program modules
    imported)."""
    cache: ProgramCache | None = getattr(ctx, "_dspex_program_cache", None)
    if cache is None:
        with _lock:
            cache = getattr(ctx, "_dspex_program_cache", None)
            if cache is None:
                import_program_modules(ctx.settings.program_modules)
                registry = ProgramRegistry(
                    ctx.store.client, ctx.keys, ctx.settings.program_max_bytes
                )
                cache = ProgramCache(registry, ctx.settings.program_cache_size)
                ctx._dspex_program_cache = cache  # type: ignore[attr-defined]
    return cache


def run_program_job(ctx: WorkerContext, job: Job) -> RunOutcome:
    """Run a ``program``, ``program_batch`` or ``optimize`` job."""
    if job.kind is JobKind.OPTIMIZE:
        from dspex_jobs.optimize.runner import run_optimize_job

        return run_optimize_job(ctx, job)
    if not job.program:
        raise ValidationError(f"a {job.kind.value} job names no program", field="program")
    _, module = program_cache(ctx).get(job.program)
    if job.kind is JobKind.PROGRAM:
        on_chunk = ctx.stream_writer(job.id).chunk if job.stream else None
        return ctx.runtime().run(job, on_chunk, module=module)
    return _run_batch(ctx, job, module)


def _run_batch(ctx: WorkerContext, job: Job, module: Any) -> RunOutcome:
    """Run every row of a chunk; a row's failure is recorded with its code, never fatal."""
    import dspy
    from pydantic_core import to_jsonable_python

    from dspex_jobs.runtime.errors import map_exception

    rows = job.inputs.get("rows")
    if not isinstance(rows, list):
        raise ValidationError("a program_batch job needs inputs.rows (a list)", field="rows")
    lm = ctx.runtime().lms.get(job.lm)

    def one(row: Any) -> dict[str, Any]:
        if not isinstance(row, dict):
            return {
                "error": {
                    "code": "validation_error",
                    "message": f"a row must be an object, not {type(row).__name__}",
                }
            }
        try:
            with dspy.context(lm=lm, disable_history=True, track_usage=False):
                prediction = module(**row)
            return {"outputs": to_jsonable_python(prediction.toDict(), fallback=str)}
        except Exception as exc:  # recorded per row; the chunk goes on
            error = map_exception(exc, job_id=job.id)
            return {"error": {"code": error.code, "message": error.message}}

    threads = max(1, min(ctx.settings.batch_row_threads, len(rows)))
    with ThreadPoolExecutor(threads, thread_name_prefix="dspex-batch") as pool:
        results = list(pool.map(one, rows))
    errors = sum(1 for r in results if "error" in r)
    return RunOutcome({"rows": results, "errors": errors}, {}, lm.model)
