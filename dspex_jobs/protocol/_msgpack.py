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
====  ===========  =======================================================================

numpy scalars travel as the Python scalar they hold; tuples come back as lists (as with
JSON); ``str`` and ``int`` subclasses (``StrEnum``) as plain ``str`` and ``int``. Integers
must fit in 64 bits. Anything else is refused with a :class:`PayloadError` naming its type:
never pickled. A reader that meets an extension code it does not know raises
:class:`ProtocolVersionError` (the message comes from a newer dspex-jobs).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from uuid import UUID

import msgpack

from dspex_jobs.errors import DSPexError, PayloadDecodeError, ProtocolVersionError
from dspex_jobs.protocol._arrays import is_ndarray, is_numpy_scalar, pack_ndarray, unpack_ndarray
from dspex_jobs.protocol._frame import DecodeBudget, Encoded

__all__ = [
    "EXT_ARROW",
    "EXT_DATE",
    "EXT_DATETIME",
    "EXT_DECIMAL",
    "EXT_FRAME",
    "EXT_NDARRAY",
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
        raise TypeError(f"a {type(value).__name__} value cannot be encoded")

    def _ndarray(self, array: Any) -> msgpack.ExtType:
        rows = self.arrow_min_rows
        if rows is not None and array.ndim == 2 and array.shape[0] >= rows:
            from dspex_jobs.protocol._arrow import ndarray_to_ipc

            data = ndarray_to_ipc(array)
            if data is not None:
                self.arrow_parts += 1
                return msgpack.ExtType(EXT_ARROW, data)
        return msgpack.ExtType(EXT_NDARRAY, pack_ndarray(array))


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
    body = msgpack.packb(value, default=packer.default, use_bin_type=True, datetime=False)
    return body, packer.embedded_bytes, packer.arrow_parts


def unpack(body: bytes | memoryview, budget: DecodeBudget, nested: NestedDecoder) -> Any:
    """Unpack a body :func:`pack` produced.

    Raises:
        PayloadDecodeError: The body is not valid MessagePack, or an extension value is bad.
        ProtocolVersionError: An extension code this reader does not know.
        DecompressedTooLarge: An embedded frame exceeds what is left of ``budget``.
    """

    def ext_hook(code: int, data: bytes) -> Any:
        if code == EXT_ARROW:
            from dspex_jobs.protocol._arrow import from_ipc

            return from_ipc(data)
        if code == EXT_NDARRAY:
            return unpack_ndarray(data)
        if code == EXT_FRAME:
            return nested(data, budget)
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
            "the workers", ext_type=code,
        )

    try:
        return msgpack.unpackb(body, ext_hook=ext_hook, raw=False, strict_map_key=False,
                               timestamp=0)
    except DSPexError:
        raise
    except Exception as exc:  # every malformed body lands here: truncated, bad UTF-8, ...
        raise PayloadDecodeError(
            f"corrupt MessagePack body: {type(exc).__name__}: {exc}"
        ) from None
