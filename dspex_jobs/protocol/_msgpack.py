"""MessagePack bodies, with extension types for what MessagePack lacks.

``bytes`` are MessagePack's own ``bin`` type; these travel as extension types, each a few
bytes of header plus the value:

====  ===========  =======================================================================
code  type         data
====  ===========  =======================================================================
1     datetime     ISO 8601 text (naive stays naive; an aware one keeps its UTC offset)
2     date         ISO 8601 text
3     ndarray      dtype, shape and raw C-order buffer (:mod:`._arrays`)
4     Arrow        an Arrow IPC stream: rows, a matrix (:mod:`._arrow`)
5     frame        a whole frame (an :class:`Encoded` job inside a Celery message)
6     UUID         16 bytes
7     Decimal      its text
8     columns      a table column by column: a MessagePack array ``[keys, column, ...]``
                   (:mod:`._table`); read back as the list of row dicts it was
9     text column  inside a columns part only: a column of ``str`` as one UTF-8 text, the
                   values separated by NUL (:func:`._table.joined_text`)
10    float64      inside a columns part only: a column of ``float`` as little-endian
      column       IEEE 754 doubles, 8 bytes a value
11    int64        inside a columns part only: a column of ``int`` (all within 64 bits) as
      column       little-endian signed integers, 8 bytes a value
====  ===========  =======================================================================

Why numbers go in one piece: MessagePack reads a float back at about 40 ns, ``array`` at 15,
and eight raw bytes a value compress better than MessagePack's own encoding of the same
numbers (the benchmark's id column: 22 KB after zstd as MessagePack, 11 KB raw). Only
columns whose values are all exactly ``float`` (or all exactly ``int``) go so, which the
columns pass learns at no cost (:func:`._table.table_columns`): ``array`` would quietly turn
an ``int`` into a float or a ``bool`` into an int.

numpy scalars travel as the Python scalar they hold; tuples come back as lists (as with
JSON). Subclasses travel as their plain base type: a ``dict`` subclass as the entries it
really holds, a ``list`` or ``tuple`` subclass (a named tuple) as a list, ``str``, ``int``,
``float`` and ``bytes`` subclasses (``StrEnum``, ``IntEnum``) as plain values. Integers
must fit in 64 bits.

Why the packer runs with ``strict_types``: without it, msgpack packs a ``dict`` subclass by
writing ``len(obj)`` as the map's size and then ``obj.items()``. Celery's canvas objects are
``dict`` subclasses, and ``group.__len__`` counts the group's *tasks*, not its keys: a group
of two tasks was written as a 2-entry map followed by 4 stray pairs, and a group of ten as a
10-entry map that swallowed what came after it, so a chain or chord carrying a group failed
to decode on the worker (or decoded into the wrong value). With ``strict_types`` msgpack packs
only exact ``dict``/``list`` natively and hands everything else to our ``default``, which
copies subclasses to their base type.

Anything else is refused with a :class:`PayloadError` naming its type: never pickled. A
reader that meets an extension code it does not know raises :class:`ProtocolVersionError`
(the message comes from a newer dspex-jobs).
"""

from __future__ import annotations

import datetime as dt
import sys
from array import array
from collections.abc import Callable
from decimal import Decimal
from functools import partial
from typing import Any
from uuid import UUID

import msgpack

from dspex_jobs.errors import DSPexError, PayloadDecodeError, ProtocolVersionError
from dspex_jobs.protocol._arrays import is_ndarray, is_numpy_scalar, pack_ndarray, unpack_ndarray
from dspex_jobs.protocol._frame import DecodeBudget, Encoded
from dspex_jobs.protocol._table import (
    Columns,
    decoded_cost,
    joined_text,
    rows_from_columns,
    split_text,
)

__all__ = [
    "EXT_ARROW",
    "EXT_COLUMNS",
    "EXT_DATE",
    "EXT_DATETIME",
    "EXT_DECIMAL",
    "EXT_FLOAT64_COLUMN",
    "EXT_FRAME",
    "EXT_INT64_COLUMN",
    "EXT_NDARRAY",
    "EXT_TEXT_COLUMN",
    "EXT_UUID",
    "pack",
    "unpack",
]

EXT_DATETIME = 1
EXT_DATE = 2
EXT_NDARRAY = 3
EXT_ARROW = 4
EXT_FRAME = 5
EXT_UUID = 6
EXT_DECIMAL = 7
EXT_COLUMNS = 8
EXT_TEXT_COLUMN = 9
EXT_FLOAT64_COLUMN = 10
EXT_INT64_COLUMN = 11
_LITTLE_ENDIAN = sys.byteorder == "little"

_NATIVE = frozenset((bool, int, float, str, bytes, type(None)))
NestedDecoder = Callable[[bytes, DecodeBudget], Any]
"""Decodes a frame found inside a body (extension type 5), sharing the outer budget."""


class _Packer:
    """One packing: picks Arrow for large matrices, and counts the bytes of frames embedded
    as they are (so that they are not compressed twice) and of Arrow parts."""

    __slots__ = ("arrow_min_rows", "arrow_parts", "embedded_bytes")

    def __init__(self, arrow_min_rows: int | None) -> None:
        self.arrow_min_rows = arrow_min_rows
        self.embedded_bytes = 0
        self.arrow_parts = 0

    def default(self, value: Any) -> Any:
        kind = type(value)
        if kind is tuple:  # strict_types: exact tuples come here (Celery bodies)
            return list(value)
        if kind is Columns:
            return msgpack.ExtType(
                EXT_COLUMNS, self.pack([value.keys, *map(_column, value.columns, value.types)])
            )
        if isinstance(value, Encoded):
            self.embedded_bytes += len(value.data)
            return msgpack.ExtType(EXT_FRAME, value.data)
        if is_ndarray(value):
            return self._ndarray(value)
        if isinstance(value, dt.datetime):
            return msgpack.ExtType(EXT_DATETIME, value.isoformat().encode("ascii"))
        if isinstance(value, dt.date):
            return msgpack.ExtType(EXT_DATE, value.isoformat().encode("ascii"))
        if isinstance(value, UUID):
            return msgpack.ExtType(EXT_UUID, value.bytes)
        if isinstance(value, Decimal):
            return msgpack.ExtType(EXT_DECIMAL, str(value).encode("ascii"))
        if is_numpy_scalar(value):
            item = value.item()  # np.datetime64 holds a datetime: default() it in turn
            return item if type(item) in _NATIVE else self.default(item)
        return _plain(value)

    def pack(self, value: Any) -> bytes:
        """``value`` packed by this packer (for the body, and for parts nested in it)."""
        body: bytes = msgpack.packb(
            value, default=self.default, use_bin_type=True, datetime=False, strict_types=True
        )
        return body

    def _ndarray(self, array: Any) -> msgpack.ExtType:
        rows = self.arrow_min_rows
        if rows is not None and array.ndim == 2 and array.shape[0] >= rows:
            from dspex_jobs.protocol._arrow import ndarray_to_ipc

            data = ndarray_to_ipc(array)
            if data is not None:
                self.arrow_parts += 1
                return msgpack.ExtType(EXT_ARROW, data)
        return msgpack.ExtType(EXT_NDARRAY, pack_ndarray(array))


def _column(column: list[Any], kind: type | None) -> Any:
    """A table column as it is written: in one piece if its values are all exactly ``float``,
    all exactly ``int`` within 64 bits, or all ``str`` (subclasses and a mix of them
    included, as MessagePack sends them as plain ``str`` anyway); else value by value."""
    if kind is float:
        return msgpack.ExtType(EXT_FLOAT64_COLUMN, _little_endian(array("d", column)))
    if kind is int:
        try:
            return msgpack.ExtType(EXT_INT64_COLUMN, _little_endian(array("q", column)))
        except OverflowError:  # an int beyond 64 bits: value by value
            return column
    if kind is None or issubclass(kind, str):  # str.join itself says if all are str
        text = joined_text(column)
        return column if text is None else msgpack.ExtType(EXT_TEXT_COLUMN, text)
    return column


def _little_endian(values: array[Any]) -> bytes:
    if not _LITTLE_ENDIAN:
        values.byteswap()
    return values.tobytes()


def _numbers(typecode: str, data: bytes) -> list[Any]:
    """The values of a float64 or int64 column (extension types 10 and 11)."""
    if len(data) % 8:
        raise PayloadDecodeError(
            f"a column of 8-byte numbers cannot be {len(data)} bytes long (corrupt body?)"
        )
    values = array(typecode, data)
    if not _LITTLE_ENDIAN:
        values.byteswap()
    return values.tolist()


_COLUMN_READERS: dict[int, Callable[[bytes], list[Any]]] = {
    EXT_TEXT_COLUMN: split_text,
    EXT_FLOAT64_COLUMN: partial(_numbers, "d"),
    EXT_INT64_COLUMN: partial(_numbers, "q"),
}
"""The extension types valid only inside a columns part, and what reads each into a column."""


def _plain(value: Any) -> Any:
    """A subclass of a type MessagePack carries, as that base type (see the module docstring).

    Each result is of an exact type (``str.__str__`` and friends return an exact copy for a
    subclass), because msgpack calls ``default`` only once per object.
    """
    if isinstance(value, dict):
        return dict(value)  # the entries it holds, whatever its __len__ says
    if isinstance(value, list | tuple):
        return list(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):  # bool cannot be subclassed: an IntEnum, an int subclass
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, bytes):
        return bytes(memoryview(value))
    raise TypeError(f"a {type(value).__name__} value cannot be encoded")


def pack(value: Any, arrow_min_rows: int | None = None) -> tuple[bytes, int, int]:
    """Pack ``value``.

    Args:
        value: What to pack.
        arrow_min_rows: Send 2-D numeric numpy arrays with at least this many rows as
            Arrow; ``None`` sends every array as a raw buffer.

    Returns:
        The body, how many of its bytes are embedded frames, and how many Arrow parts the
        packer added.

    Raises:
        TypeError: A value of a type this codec does not carry.
        OverflowError: An integer beyond 64 bits.
        PayloadError: A numpy array of a refused dtype.
    """
    packer = _Packer(arrow_min_rows)
    body = packer.pack(value)
    return body, packer.embedded_bytes, packer.arrow_parts


def unpack(body: bytes | memoryview, budget: DecodeBudget, nested: NestedDecoder) -> Any:
    """Unpack a body :func:`pack` produced.

    Raises:
        PayloadDecodeError: The body is not valid MessagePack, or an extension value is bad.
        ProtocolVersionError: An extension code this reader does not know.
        DecompressedTooLarge: An embedded frame exceeds what is left of ``budget``.
    """

    def ext_hook(code: int, data: bytes) -> Any:
        if code == EXT_COLUMNS:
            return _rows(_unpackb(data, column_hook), budget)
        if code in _COLUMN_READERS:
            raise PayloadDecodeError(f"a column (extension type {code}) outside a table")
        if code == EXT_ARROW:
            from dspex_jobs.protocol._arrow import from_ipc

            return from_ipc(data, budget.spend)
        if code == EXT_NDARRAY:
            return unpack_ndarray(data)
        if code == EXT_FRAME:
            return nested(data, budget)
        return _scalar(code, data)

    def column_hook(code: int, data: bytes) -> Any:
        read = _COLUMN_READERS.get(code)
        return ext_hook(code, data) if read is None else read(data)

    try:
        return _unpackb(body, ext_hook)
    except DSPexError:
        raise
    except Exception as exc:  # every malformed body lands here: truncated, bad UTF-8, ...
        raise PayloadDecodeError(f"corrupt MessagePack body: {type(exc).__name__}: {exc}") from None


def _scalar(code: int, data: bytes) -> Any:
    """The value of a self-contained extension type (a datetime, a UUID...)."""
    if code == EXT_DATETIME:
        return dt.datetime.fromisoformat(data.decode("ascii"))
    if code == EXT_DATE:
        return dt.date.fromisoformat(data.decode("ascii"))
    if code == EXT_UUID:
        return UUID(bytes=data)
    if code == EXT_DECIMAL:
        return Decimal(data.decode("ascii"))
    raise ProtocolVersionError(
        f"MessagePack extension type {code} is unknown to this dspex-jobs; upgrade it on "
        "the workers",
        ext_type=code,
    )


def _unpackb(data: bytes | memoryview, ext_hook: Callable[[int, bytes], Any]) -> Any:
    return msgpack.unpackb(data, ext_hook=ext_hook, raw=False, strict_map_key=False, timestamp=0)


def _rows(table: Any, budget: DecodeBudget) -> list[dict[str, Any]]:
    """The rows of a columns part, charged to the budget before they are built."""
    if type(table) is not list or not table:
        raise PayloadDecodeError("a columns part must be an array [keys, column, ...]")
    keys, columns = table[0], table[1:]
    if columns and type(columns[0]) is list:  # a malformed one fails in rows_from_columns
        budget.spend(decoded_cost(len(columns[0]), len(columns)))
    return rows_from_columns(keys, columns)
