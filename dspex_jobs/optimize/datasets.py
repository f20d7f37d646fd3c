"""Datasets for optimization and batch inference: JSONL, CSV, Parquet files or inline rows.

Files are read on the producer (workers cannot see the producer's disk) and travel as rows.
Every row is checked against the program's fields, and an error names the file, the row
(0-based) and the field.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from dspex_jobs.errors import OptimizeRequestError

__all__ = ["DatasetSource", "check_rows", "iter_rows", "load_rows"]

DatasetSource = str | Path | Sequence[Mapping[str, Any]]
"""A path (``.jsonl``/``.json``/``.csv``/``.parquet``) or a list of row objects."""


def load_rows(
    source: DatasetSource, *, field: str = "trainset", max_rows: int | None = None
) -> list[dict[str, Any]]:
    """Every row of a dataset, as plain dicts.

    Raises:
        OptimizeRequestError: The file is missing, of an unknown type, or a row is not an
            object (the error names the row).
    """
    rows = list(iter_rows(source, field=field))
    if max_rows is not None and len(rows) > max_rows:
        raise OptimizeRequestError(
            f"{field}: {len(rows)} rows, over the limit of {max_rows}", field=field
        )
    return rows


def iter_rows(source: DatasetSource, *, field: str = "trainset") -> Iterator[dict[str, Any]]:
    """The rows of a dataset, one at a time (files are streamed, except Parquet)."""
    if isinstance(source, str | Path):
        yield from _file_rows(Path(source), field)
        return
    if isinstance(source, Mapping) or not isinstance(source, Iterable):
        raise OptimizeRequestError(
            f"{field} must be a file path or a list of row objects, not {type(source).__name__}",
            field=field,
        )
    for position, row in enumerate(source):
        yield _row(row, field, position)


def _file_rows(path: Path, field: str) -> Iterator[dict[str, Any]]:
    if not path.is_file():
        raise OptimizeRequestError(f"{field}: no such file {str(path)!r}", field=field)
    suffix = path.suffix.lower()
    where = f"{field} ({path.name})"
    if suffix in (".jsonl", ".ndjson"):
        with path.open(encoding="utf-8") as handle:
            position = 0
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise OptimizeRequestError(
                        f"{where}: line {line_no} is not JSON: {exc.msg} at column {exc.colno}",
                        field=field,
                        row=position,
                        line=line_no,
                    ) from None
                yield _row(value, where, position)
                position += 1
    elif suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise OptimizeRequestError(f"{where}: expected a JSON list of objects", field=field)
        for position, value in enumerate(data):
            yield _row(value, where, position)
    elif suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as handle:
            for value in csv.DictReader(handle):
                yield dict(value)
    elif suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq  # type: ignore[import-untyped]  # only when reading Parquet

        for position, value in enumerate(pq.read_table(path).to_pylist()):
            yield _row(value, where, position)
    else:
        raise OptimizeRequestError(
            f"{where}: unknown dataset type {suffix!r}; use .jsonl, .json, .csv or .parquet",
            field=field,
        )


def _row(value: Any, where: str, position: int) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise OptimizeRequestError(
            f"{where}: row {position} is a {type(value).__name__}, not an object",
            field=where.split(" ")[0],
            row=position,
        )
    return dict(value)


def check_rows(rows: list[dict[str, Any]], required: Iterable[str], *, field: str) -> None:
    """Every row has every ``required`` field.

    Raises:
        OptimizeRequestError: Naming the first row and the fields it lacks.
    """
    needed = tuple(required)
    for position, row in enumerate(rows):
        missing = [name for name in needed if name not in row]
        if missing:
            raise OptimizeRequestError(
                f"{field}: row {position} lacks {', '.join(missing)} (it has "
                f"{', '.join(sorted(row)) or 'nothing'})",
                field=field,
                row=position,
            )
