# The C helper's signatures (dspex_jobs/protocol/_table_c.c), for mypy.
from typing import Any

def columns(
    rows: list[Any] | tuple[Any, ...], keys: tuple[str, ...], /
) -> tuple[list[list[Any]], list[type | None]] | None: ...
def rows(keys: tuple[str, ...], columns: list[list[Any]], /) -> list[dict[str, Any]]: ...
