"""Batch inference: a registered program over every row of a dataset (producer side, light).

The rows are split into chunks (``DSPEX_BATCH_CHUNK_ROWS``); each chunk is one
``program_batch`` job on the ``general`` queue, so chunks run in parallel across every
worker, and each worker runs a chunk's rows on ``DSPEX_BATCH_ROW_THREADS`` threads. A row
that fails (bad input, LM error) is recorded with its error code; the run goes on.

Resuming: finished chunks are written as they arrive to ``<output>.parts/chunk-NNNNN.jsonl``
next to a ``manifest.json`` (program version, input hash, chunk size, job ids). Running the
same command again skips every finished chunk, waits for chunks whose jobs are still known,
and submits only the rest. The program reference is resolved once (``qa@latest`` -> ``qa@4``)
and kept in the manifest, so every chunk, resumed or not, runs the same version. When every
chunk is in, the output is written in input order (``{"row": i, "outputs": ...}`` or
``{"row": i, "error": {"code", "message"}}`` per line) and the parts are removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dspex_jobs.errors import DSPexError, JobTimeout, ValidationError
from dspex_jobs.jobs import JobKind
from dspex_jobs.optimize.datasets import DatasetSource, iter_rows
from dspex_jobs.programs.spec import ProgramRef
from dspex_jobs.programs.submit import check_inputs
from dspex_jobs.results import JobStatus

if TYPE_CHECKING:
    from dspex_jobs.client import Client

__all__ = ["BatchProgress", "BatchReport", "render_batch_progress", "run_batch"]

_POLL_S = 0.05
"""Pause between two sweeps over the unfinished chunks' results."""


@dataclass
class BatchProgress:
    """Where a batch run is: what ``--progress`` draws."""

    rows_done: int
    rows_total: int
    chunks_done: int
    chunks_total: int
    errors: int
    elapsed_s: float
    rows_per_s: float
    eta_s: float | None


@dataclass
class BatchReport:
    """A finished batch run."""

    program: str
    output: str
    rows: int
    errors: int
    chunks: int
    chunks_resumed: int
    elapsed_s: float
    rows_per_s: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-able."""
        return asdict(self)


def run_batch(
    client: Client,
    program: str,
    input: DatasetSource,
    output: str | Path,
    *,
    chunk_rows: int | None = None,
    timeout_s: float | None = None,
    on_progress: Callable[[BatchProgress], None] | None = None,
) -> BatchReport:
    """Run ``program`` over every row of ``input``; write answers to ``output`` (JSONL).

    Args:
        client: The client to submit through.
        program: A program reference (``qa@latest``, ``qa@3``, ``qa@production``).
        input: A dataset file (JSONL, JSON, CSV, Parquet) or a list of row objects.
        output: The JSONL file to write; ``<output>.parts/`` holds progress until done.
        chunk_rows: Rows per job (default ``DSPEX_BATCH_CHUNK_ROWS``).
        timeout_s: Give up waiting after this long (finished chunks are kept: run again to
            resume).
        on_progress: Called after each chunk with a :class:`BatchProgress`.

    Raises:
        ProgramNotFound: The program (or its version or alias) does not exist.
        ValidationError: The input is not a dataset, or is over ``DSPEX_BATCH_MAX_ROWS``.
        JobTimeout: ``timeout_s`` passed; run again to resume.
    """
    started = time.monotonic()
    size = chunk_rows or client.settings.batch_chunk_rows
    if size <= 0:
        raise ValidationError("chunk_rows must be positive", field="chunk_rows")
    rows = list(iter_rows(input, field="input"))
    if len(rows) > client.settings.batch_max_rows:
        raise ValidationError(
            f"input has {len(rows)} rows, over DSPEX_BATCH_MAX_ROWS "
            f"({client.settings.batch_max_rows})",
            field="input",
        )
    out = Path(output)
    parts = out.with_name(out.name + ".parts")
    manifest = _open_manifest(client, parts, program, rows, size)
    ref = manifest["program"]
    spec = client.programs.spec(ProgramRef.parse(ref).name)
    chunks = [(start, rows[start : start + size]) for start in range(0, len(rows), size)]
    done = {i for i in range(len(chunks)) if _part(parts, i).exists()}
    resumed = len(done)
    progress = _Progress(len(rows), len(chunks), started)
    for i in sorted(done):
        progress.add(*_count(_part(parts, i)))
    pending: dict[int, str] = {}
    for i, (start, chunk) in enumerate(chunks):
        if i in done:
            continue
        known = manifest["jobs"].get(str(i))
        if known and client.job(known).status() is not JobStatus.PENDING:
            pending[i] = known  # it ran (or runs): wait for it rather than run it again
            continue
        pending[i] = _submit(client, ref, spec, start, chunk, parts, i)
        manifest["jobs"][str(i)] = pending[i]
    _write_json(parts / "manifest.json", manifest)
    deadline = None if timeout_s is None else started + timeout_s
    while pending:
        finished = _sweep(client, pending)
        for i, result in finished.items():
            start, chunk = chunks[i]
            records = _records(result, start, len(chunk), parts, i)
            _write_lines(_part(parts, i), records)
            progress.add(len(records), sum(1 for r in records if "error" in r))
            del pending[i]
            if on_progress is not None:
                on_progress(progress.snapshot())
        if pending and deadline is not None and time.monotonic() > deadline:
            raise JobTimeout(
                f"batch did not finish in {timeout_s} s: {len(pending)} of "
                f"{len(chunks)} chunks left; run again to resume"
            )
        if not finished:
            time.sleep(_POLL_S)
    _assemble(parts, out, len(chunks))
    elapsed = time.monotonic() - started
    return BatchReport(
        ref,
        str(out),
        len(rows),
        progress.errors,
        len(chunks),
        resumed,
        round(elapsed, 3),
        round(len(rows) / elapsed, 1) if elapsed else 0.0,
    )


class _Progress:
    def __init__(self, rows_total: int, chunks_total: int, started: float) -> None:
        self.rows_total = rows_total
        self.chunks_total = chunks_total
        self.started = started
        self.rows = 0
        self.chunks = 0
        self.errors = 0

    def add(self, rows: int, errors: int) -> None:
        self.rows += rows
        self.chunks += 1
        self.errors += errors

    def snapshot(self) -> BatchProgress:
        elapsed = time.monotonic() - self.started
        rate = self.rows / elapsed if elapsed > 0 else 0.0
        eta = (self.rows_total - self.rows) / rate if rate > 0 else None
        return BatchProgress(
            self.rows,
            self.rows_total,
            self.chunks,
            self.chunks_total,
            self.errors,
            round(elapsed, 2),
            round(rate, 1),
            None if eta is None else round(eta, 1),
        )


def render_batch_progress(p: BatchProgress, width: int = 30) -> str:
    """One progress-bar line: bar, rows, rows/s, errors, ETA."""
    done = p.rows_done / p.rows_total if p.rows_total else 1.0
    filled = round(done * width)
    eta = "?" if p.eta_s is None else f"{p.eta_s:.0f}s"
    return (
        f"[{'#' * filled}{'-' * (width - filled)}] {p.rows_done}/{p.rows_total} rows "
        f"{p.rows_per_s:.1f} rows/s errors {p.errors} ETA {eta}"
    )


def _open_manifest(
    client: Client, parts: Path, program: str, rows: list[dict[str, Any]], size: int
) -> dict[str, Any]:
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()
    path = parts / "manifest.json"
    if path.exists():
        manifest: dict[str, Any] = json.loads(path.read_text())
        if (
            manifest.get("input_hash") == digest
            and manifest.get("chunk_rows") == size
            and manifest.get("requested") == program
        ):
            return manifest
        shutil.rmtree(parts)  # another input, chunking or program: start over
    ref = ProgramRef.parse(program)
    resolved = f"{ref.name}@{client.programs.resolve(ref)}"
    parts.mkdir(parents=True, exist_ok=True)
    manifest = {
        "requested": program,
        "program": resolved,
        "input_hash": digest,
        "chunk_rows": size,
        "rows": len(rows),
        "jobs": {},
    }
    _write_json(path, manifest)
    return manifest


def _submit(
    client: Client,
    ref: str,
    spec: Any,
    start: int,
    chunk: list[dict[str, Any]],
    parts: Path,
    index: int,
) -> str:
    """Submit one chunk; rows that fail validation are recorded now and not sent."""
    valid: list[dict[str, Any]] = []
    for offset, row in enumerate(chunk):
        try:
            valid.append(check_inputs(spec, row, where=f"row {start + offset}"))
        except DSPexError as error:
            valid.append({"__dspex_invalid__": {"code": error.code, "message": error.message}})
    handle = client.submit(
        JobKind.PROGRAM_BATCH,
        None,
        {"rows": [r for r in valid if "__dspex_invalid__" not in r], "offset": start},
        program=ref,
    )
    invalid = {i: r["__dspex_invalid__"] for i, r in enumerate(valid) if "__dspex_invalid__" in r}
    if invalid:
        _write_json(parts / f"invalid-{index:05d}.json", {str(k): v for k, v in invalid.items()})
    return handle.id


def _sweep(client: Client, pending: dict[int, str]) -> dict[int, Any]:
    """The results of every pending chunk that finished (one pipelined round trip)."""
    from dspex_jobs.results import JobResult

    store = client._store
    indexes = list(pending)
    pipe = store.client.pipeline(transaction=False)
    for i in indexes:
        pipe.get(store.keys.result(pending[i]))
    found: dict[int, Any] = {}
    for i, raw in zip(indexes, pipe.execute(), strict=True):
        if raw is not None:
            found[i] = JobResult.model_validate_json(raw)
    return found


def _records(result: Any, start: int, count: int, parts: Path, index: int) -> list[dict[str, Any]]:
    """One record per row of the chunk, in order: the chunk's answers, invalid rows' errors,
    or the chunk's own error for every row it had."""
    invalid_path = parts / f"invalid-{index:05d}.json"
    invalid = json.loads(invalid_path.read_text()) if invalid_path.exists() else {}
    answers = iter(((result.outputs or {}).get("rows") or []) if result.error is None else [])
    records = []
    for offset in range(count):
        row = start + offset
        if str(offset) in invalid:
            records.append({"row": row, "error": invalid[str(offset)]})
        elif result.error is not None:
            records.append(
                {"row": row, "error": {"code": result.error.code, "message": result.error.message}}
            )
        else:
            answer = next(
                answers,
                {"error": {"code": "missing", "message": "the chunk returned too few rows"}},
            )
            records.append({"row": row, **answer})
    return records


def _count(path: Path) -> tuple[int, int]:
    rows = errors = 0
    with path.open() as handle:
        for line in handle:
            rows += 1
            errors += '"error"' in line
    return rows, errors


def _part(parts: Path, index: int) -> Path:
    return parts / f"chunk-{index:05d}.jsonl"


def _write_lines(path: Path, records: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def _assemble(parts: Path, out: Path, chunks: int) -> None:
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as target:
        for i in range(chunks):
            with _part(parts, i).open(encoding="utf-8") as source:
                shutil.copyfileobj(source, target)
    os.replace(tmp, out)
    shutil.rmtree(parts)
