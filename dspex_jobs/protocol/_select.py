"""Auto-selection: find the tables in a message and send them column by column.

The walk looks for tables (lists of at least ``min_rows`` dict rows with the same keys) and
replaces each with a :class:`~dspex_jobs.protocol._table.Columns` part, which MessagePack
writes column by column (extension type 8); when the ``arrow`` codec is forced, tables whose
columns Arrow holds exactly become Arrow record batches instead, and lists of
equal-length ``float`` lists Arrow matrices. Everything else is left to MessagePack (numpy
matrices are picked by the MessagePack packer itself, which sees every array). It returns the
original object when it replaces nothing, and copies only the containers on the path to a
replaced part.

The walk is bounded so that it never costs more than the encoding it serves: it looks at
no more than :data:`WALK_BUDGET` container entries in one message, and a long list that
is not a table uses up the budget at once, so the walk never descends through 10,000
nested records. The bound only ever costs compactness, never correctness: whatever the
walk misses is still encoded exactly by MessagePack.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgpack

from dspex_jobs.protocol import _arrow
from dspex_jobs.protocol._msgpack import EXT_ARROW
from dspex_jobs.protocol._table import table_columns

__all__ = ["ARROW_MIN_ROWS", "WALK_BUDGET", "tabularize"]

ARROW_MIN_ROWS = 64
"""Fewest rows (of a table or matrix) that ``auto`` sends by columns or as Arrow.

Below this, a table's keys written once instead of per row save little, and Arrow's schema
and IPC framing (a few hundred bytes) and fixed costs (tens of microseconds) outweigh what
columns save.
"""

WALK_BUDGET = 4_096
"""Most container entries the walk looks at in one message."""


def tabularize(value: Any, *, min_rows: int, arrow: bool) -> tuple[Any, int]:
    """Replace the tables in ``value`` with column parts (Arrow parts if ``arrow``).

    Args:
        value: The message (a Celery body is ``[args, kwargs, embed]``).
        min_rows: Fewest rows a table needs to go by columns.
        arrow: The ``arrow`` codec is forced: tables of any length as Arrow where Arrow
            holds them exactly, and lists of equal-length ``float`` lists as Arrow matrices.

    Returns:
        The value with its tables replaced (``value`` itself when none was), and how many
        Arrow parts replaced them.
    """
    kind = type(value)
    if kind is not dict and kind is not list and kind is not tuple:
        return value, 0
    walker = _Walker(max(1, min_rows), arrow)
    try:
        return walker.walk(value), walker.arrow_parts
    except RecursionError:  # absurdly deep: MessagePack refuses it with a clear error
        return value, 0


class _Walker:
    __slots__ = ("arrow", "arrow_parts", "budget", "min_rows", "shortest")

    def __init__(self, min_rows: int, arrow: bool) -> None:
        self.min_rows = min_rows
        self.arrow = arrow
        self.shortest = 1 if arrow else min_rows
        self.budget = WALK_BUDGET
        self.arrow_parts = 0

    def walk(self, container: Any) -> Any:
        """``container`` (a dict, list or tuple) with its tables replaced."""
        size = len(container)
        if type(container) is dict:
            self.budget -= size
            return container if self.budget < 0 else self._entries(container, container.items())
        if size >= self.shortest:
            first = type(container[0])
            part = (
                self._table(container)
                if first is dict
                else self._matrix(container)
                if first is list and self.arrow
                else None
            )
            if part is not None:
                return part
        self.budget -= size
        return container if self.budget < 0 else self._entries(container, enumerate(container))

    def _table(self, rows: list[Any] | tuple[Any, ...]) -> Any:
        if self.arrow:
            data = _arrow.rows_to_ipc(rows)
            if data is not None:
                self.arrow_parts += 1
                return msgpack.ExtType(EXT_ARROW, data)
        # Not below min_rows even when Arrow is forced: a one-row "table" of a job's fields
        # would hide the tables nested in it from the walk.
        return table_columns(rows) if len(rows) >= self.min_rows else None

    def _matrix(self, rows: list[Any] | tuple[Any, ...]) -> Any:
        data = _arrow.lists_to_ipc(rows)
        if data is None:
            return None
        self.arrow_parts += 1
        return msgpack.ExtType(EXT_ARROW, data)

    def _entries(self, container: Any, entries: Iterable[tuple[Any, Any]]) -> Any:
        copy: Any = None
        for key, item in entries:
            kind = type(item)
            if kind is dict or kind is list or kind is tuple:
                new = self.walk(item)
                if new is not item:
                    if copy is None:
                        copy = dict(container) if type(container) is dict else list(container)
                    copy[key] = new
        return container if copy is None else copy
