"""Tables (lists of dict rows with the same keys) turned into columns, and back into rows.

Both table encodings use this: MessagePack columns (what ``auto`` sends, extension type
:data:`~dspex_jobs.protocol._msgpack.EXT_COLUMNS`) and Arrow record batches (the forced
``arrow`` codec). Sending a table column by column writes each key once instead of once
per row, and reading it back builds one dict per row. A column whose values are all ``str``
travels as one NUL-separated text (:func:`joined_text`), which both MessagePack and zstd
handle faster than 10,000 short strings; a column of exact ``float`` or ``int`` values as
raw 8-byte numbers (:mod:`._msgpack`, extension types 10 and 11). The pass into columns
also reports each column's one exact type (:attr:`Columns.types`), so the writer needs no
pass of its own to learn it.

Why MessagePack columns and not Arrow for ``auto`` (measured on the benchmark's 10,000-row
table, CPU time per encode+decode with zstd, ``bench/protocol.py``): the rows arrive and
leave as Python objects, so both must touch every value in Python either way; MessagePack
packs a column of Python values faster than pyarrow infers and converts it, and keeps every
value's exact type without the per-column type checks Arrow needs (an ``int`` among floats,
``str`` among ``bytes``), so it also carries columns Arrow cannot (nested values, mixed
types). Arrow stays the codec for numpy matrices, where it moves raw buffers.

The two passes over the rows (into columns, and back into dicts) run in a small C helper,
:mod:`dspex_jobs.protocol._table_c`, when the install could compile it (``setup.py``); the
pure-Python passes here give the same values and are used where it is missing
(:data:`COMPILED` says which). On the benchmark's 10,000-row table (fastest of 300
interleaved runs) the helper takes the pass into columns from 1.85 to 0.37 ms and the pass
back into rows from 1.95 to 1.33 ms; ``bench/protocol.py`` prints ``auto`` with and without it.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Callable
from operator import itemgetter
from typing import Any

from dspex_jobs.errors import PayloadDecodeError

try:
    from dspex_jobs.protocol import _table_c
except ImportError:  # installed without a C compiler: the pure-Python passes below
    _table_c = None  # type: ignore[assignment]

COMPILED = _table_c is not None
"""Whether the compiled passes over rows are in use (see the module docstring)."""

__all__ = [
    "COMPILED",
    "MAX_COLUMNS",
    "ROW_COST_BYTES",
    "TEXT_SEPARATOR",
    "VALUE_COST_BYTES",
    "Columns",
    "build_rows",
    "decoded_cost",
    "joined_text",
    "row_builder",
    "rows_from_columns",
    "split_text",
    "table_columns",
]

MAX_COLUMNS = 1_024
"""Widest table sent by columns; wider ones go row by row."""

ROW_COST_BYTES = 16
VALUE_COST_BYTES = 8
"""What a decoded row costs against the decompression budget: ``16 + 8 * columns`` bytes,
about its size as compact JSON. A column of one-byte values would otherwise inflate into
dicts of ~200 bytes each, a bomb that no byte limit on the body would catch."""


class Columns:
    """A table to send column by column: what the auto-selection walk puts in its place.

    Attributes:
        keys: The column names, in the first row's order.
        columns: One list per key, a value per row.
        types: Per column, the exact type of all its values, or ``None`` if they differ
            (the writer sends a column of ``str``, ``float`` or ``int`` in one piece).
    """

    __slots__ = ("columns", "keys", "types")

    def __init__(self, keys: list[str], columns: list[list[Any]], types: list[type | None]) -> None:
        self.keys = keys
        self.columns = columns
        self.types = types


def table_columns(rows: list[Any] | tuple[Any, ...]) -> Columns | None:
    """The columns of ``rows``, or ``None`` if they are not a table.

    A table: every row an exact ``dict`` (a subclass might compute its items or insert
    missing keys when read), 1 to :data:`MAX_COLUMNS` ``str`` keys, the same key set in
    every row. Key order may differ between rows; rows come back in the first row's order.
    """
    first = rows[0]
    if type(first) is not dict:
        return None
    keys = list(first)
    if not 0 < len(keys) <= MAX_COLUMNS or set(map(type, keys)) != {str}:
        return None
    found = _python_columns(rows, keys) if _table_c is None else _table_c.columns(rows, tuple(keys))
    return None if found is None else Columns(keys, *found)


def _python_columns(
    rows: list[Any] | tuple[Any, ...], keys: list[str]
) -> tuple[list[list[Any]], list[type | None]] | None:
    """What ``_table_c.columns`` computes: the columns and each one's exact type (``None``
    if its values' types differ), or ``None`` if a row is not an exact ``dict`` of exactly
    ``keys``."""
    # Every key present in every row (itemgetter raises KeyError otherwise) and as many
    # entries in all as rows times keys: no row has a key more, the same key set throughout
    # (a sum is cheaper than a set of the lengths).
    if set(map(type, rows)) != {dict} or sum(map(len, rows)) != len(rows) * len(keys):
        return None
    try:
        columns = [list(map(itemgetter(key), rows)) for key in keys]
    except KeyError:
        return None
    return columns, [_one_type(column) for column in columns]


def _one_type(column: list[Any]) -> type | None:
    types = set(map(type, column))
    return types.pop() if len(types) == 1 else None


TEXT_SEPARATOR = "\x00"
"""What separates the values of a text column (see :func:`joined_text`)."""


def joined_text(column: list[Any]) -> bytes | None:
    """A column of ``str`` values as one UTF-8 text, the values separated by NUL; ``None``
    if a value is not a ``str`` (``str.join`` checks that) or contains a NUL itself.

    Why: MessagePack writes and reads a ``str`` at about 50 ns each, ``str.join`` and
    ``str.split`` at 10 to 40 (measured on the benchmark's two text columns of 10,000
    values: packing 1.0 ms as values, 0.3 ms joined; unpacking 0.9 and 0.7 ms), and one
    long text also compresses a little better than the same text cut into short strings.
    A ``str`` subclass comes back as a plain ``str``, as MessagePack sends it anyway; a
    value that cannot be UTF-8 (a lone surrogate) is left to MessagePack, which refuses it
    with the usual error.
    """
    try:
        text = TEXT_SEPARATOR.join(column)
    except TypeError:  # a value that is not a str: the column goes value by value
        return None
    if text.count(TEXT_SEPARATOR) != len(column) - 1:
        return None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return None


def split_text(data: bytes) -> list[str]:
    """The values of a column :func:`joined_text` wrote (at least one: ``b""`` is ``[""]``).

    Raises:
        UnicodeDecodeError: ``data`` is not UTF-8 (the reader turns it into a
            :class:`PayloadDecodeError`).
    """
    return data.decode("utf-8").split(TEXT_SEPARATOR)


def decoded_cost(rows_n: int, columns_n: int) -> int:
    """Budget bytes a decoded table of that shape costs (see :data:`ROW_COST_BYTES`)."""
    return rows_n * (ROW_COST_BYTES + VALUE_COST_BYTES * columns_n)


def rows_from_columns(keys: Any, columns: list[Any]) -> list[dict[str, Any]]:
    """Rebuild the rows from what a reader found; refuse anything a writer never sends.

    Raises:
        PayloadDecodeError: Keys that are not distinct ``str``, too many or none, a column
            count that differs from the keys', or columns of different lengths.
    """
    if (
        type(keys) is not list
        or not 0 < len(keys) <= MAX_COLUMNS
        or set(map(type, keys)) != {str}
        or len(set(keys)) != len(keys)
    ):
        raise PayloadDecodeError("a table needs 1 to 1024 distinct str column names")
    if (
        len(columns) != len(keys)
        or set(map(type, columns)) != {list}
        or len(set(map(len, columns))) != 1
    ):
        raise PayloadDecodeError(
            f"a table of {len(keys)} columns needs that many lists of one length"
        )
    return build_rows(tuple(keys), columns)


def build_rows(keys: tuple[str, ...], columns: list[Any]) -> list[dict[str, Any]]:
    """The rows of ``columns``: distinct ``str`` keys, as many lists of one length (callers
    check both, and decode with the garbage collector paused, see
    :func:`dspex_jobs.protocol._codec.decode`)."""
    if _table_c is None:
        return row_builder(keys)(columns)
    return _table_c.rows(keys, columns)


@functools.lru_cache(maxsize=128)
def row_builder(keys: tuple[str, ...]) -> Callable[[list[list[Any]]], list[dict[str, Any]]]:
    """A function turning columns into row dicts, compiled once per key set.

    It is ``lambda columns: [{k0: c0, k1: c1, ...} for c0, c1, ... in zip(*columns)]``,
    built as a syntax tree whose keys are constants (no text is parsed, so a column name
    can never become code). A dict display is about five times faster than
    ``dict(zip(keys, row))``, which is most of the cost of reading a table back.
    """
    names = [f"c{i}" for i in range(len(keys))]
    row = ast.Dict(
        keys=[ast.Constant(k) for k in keys], values=[ast.Name(n, ast.Load()) for n in names]
    )
    target = ast.Tuple([ast.Name(n, ast.Store()) for n in names], ast.Store())
    source = ast.Call(
        ast.Name("zip", ast.Load()), [ast.Starred(ast.Name("columns", ast.Load()), ast.Load())], []
    )
    body = ast.ListComp(row, [ast.comprehension(target, source, [], 0)])
    arguments = ast.arguments(
        posonlyargs=[], args=[ast.arg("columns")], kwonlyargs=[], kw_defaults=[], defaults=[]
    )
    tree = ast.fix_missing_locations(ast.Expression(ast.Lambda(arguments, body)))
    code = compile(tree, "<dspex rows>", "eval")
    # bandit B307: evaluates the tree built above (column names are ast.Constant data, never
    # parsed as code), with no builtins but zip; tests/unit/test_security_boundaries.py
    builder: Callable[[list[list[Any]]], list[dict[str, Any]]] = eval(  # nosec B307
        code, {"__builtins__": {"zip": zip}}
    )
    return builder
