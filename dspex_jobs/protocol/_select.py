"""Auto-selection: find the tables in a message that are worth sending as Arrow.

The walk looks for tables (lists of at least ``min_rows`` dict rows) and, when the
``arrow`` codec is forced, matrices sent as lists of equal-length ``float`` lists, and
replaces each with an Arrow extension value; everything else is left to MessagePack
(numpy matrices are picked by the MessagePack packer itself, which sees every array).
It returns the original object when it replaces nothing, and copies only the containers
on the path to a replaced part.

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

__all__ = ["ARROW_MIN_ROWS", "WALK_BUDGET", "tabularize"]

ARROW_MIN_ROWS = 64
"""Fewest rows (of a table or matrix) that ``auto`` sends as Arrow.

Below this, Arrow's schema and IPC framing (a few hundred bytes) and its fixed costs
(tens of microseconds) outweigh what columns save.
"""

WALK_BUDGET = 4_096
"""Most container entries the walk looks at in one message."""


def tabularize(value: Any, *, min_rows: int, float_lists: bool) -> tuple[Any, int]:
    """Replace the tables in ``value`` with Arrow extension values.

    Args:
        value: The message (a Celery body is ``[args, kwargs, embed]``).
        min_rows: Fewest rows a table needs to go as Arrow.
        float_lists: Also send lists of equal-length ``float`` lists as Arrow.

    Returns:
        The value with its tables replaced (``value`` itself when none was), and how many
        parts were replaced.
    """
    kind = type(value)
    if kind is not dict and kind is not list and kind is not tuple:
        return value, 0
    walker = _Walker(max(1, min_rows), (dict, list) if float_lists else (dict,))
    try:
        return walker.walk(value), walker.parts
    except RecursionError:  # absurdly deep: MessagePack refuses it with a clear error
        return value, 0


class _Walker:
    __slots__ = ("budget", "firsts", "min_rows", "parts")

    def __init__(self, min_rows: int, firsts: tuple[type, ...]) -> None:
        self.min_rows = min_rows
        self.firsts = firsts
        self.budget = WALK_BUDGET
        self.parts = 0

    def walk(self, container: Any) -> Any:
        """``container`` (a dict, list or tuple) with its tables replaced."""
        size = len(container)
        if type(container) is dict:
            self.budget -= size
            return container if self.budget < 0 else self._entries(container, container.items())
        if size >= self.min_rows and type(container[0]) in self.firsts:
            data = _table(container)
            if data is not None:
                self.parts += 1
                return msgpack.ExtType(EXT_ARROW, data)
        self.budget -= size
        return container if self.budget < 0 else self._entries(container, enumerate(container))

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


def _table(items: list[Any] | tuple[Any, ...]) -> bytes | None:
    if type(items[0]) is dict:
        return _arrow.rows_to_ipc(items)
    return _arrow.lists_to_ipc(items)  # only reached when float lists were asked for
