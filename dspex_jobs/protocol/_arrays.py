"""numpy arrays as raw buffers: dtype, shape and the bytes, nothing else.

An array travels as a short header and its C-order bytes, so it comes back with the same
dtype (byte order included) and shape, writable, and nothing is ever unpickled: object
arrays (``dtype=object``) and structured dtypes are refused on both sides. numpy is imported
only once an array is met (``sys.modules`` tells whether the caller has one at all), so
producers that never send arrays never import it.

Layout (after the extension-type code that marks it)::

    u8 ndim | u8 len(dtype) | dtype string (numpy's ``dtype.str``: "<f4") | u64 shape[ndim]
    | the C-order buffer
"""

from __future__ import annotations

import struct
import sys
from typing import Any

from dspex_jobs.errors import PayloadDecodeError, PayloadError

__all__ = [
    "ALLOWED_KINDS",
    "check_dtype",
    "is_ndarray",
    "is_numpy_scalar",
    "pack_ndarray",
    "unpack_ndarray",
]

ALLOWED_KINDS = frozenset("biufcmMSU")
"""dtype kinds that are plain memory: bool, ints, floats, complex, times, fixed strings."""

_MAX_NDIM = 32
_SHAPE = struct.Struct(">Q")


def is_ndarray(value: Any) -> bool:
    """Whether ``value`` is a numpy array (without importing numpy)."""
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(value, numpy.ndarray)


def is_numpy_scalar(value: Any) -> bool:
    """Whether ``value`` is a numpy scalar such as ``np.float32(1.5)``."""
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(value, numpy.generic)


def check_dtype(dtype: Any) -> None:
    """Refuse dtypes that are not plain memory.

    Raises:
        PayloadError: An object or structured dtype (it would need pickle).
    """
    if dtype.kind not in ALLOWED_KINDS or dtype.fields is not None or dtype.itemsize == 0:
        raise PayloadError(
            f"a numpy array of dtype {dtype} cannot be encoded: only bool, numeric, time and "
            "fixed-width string dtypes travel (object arrays would need pickle)"
        )


def pack_ndarray(array: Any) -> bytes:
    """The array's header and C-order bytes."""
    import numpy

    check_dtype(array.dtype)
    dtype = array.dtype.str.encode("ascii")
    header = struct.pack(">BB", array.ndim, len(dtype)) + dtype
    header += b"".join(_SHAPE.pack(n) for n in array.shape)
    raw = numpy.ascontiguousarray(array).reshape(-1).view(numpy.uint8)  # no copy
    return b"".join((header, raw.data))


def unpack_ndarray(data: bytes) -> Any:
    """The array :func:`pack_ndarray` packed, as a new writable array.

    Raises:
        PayloadDecodeError: A malformed header, a refused dtype, or a buffer that does not
            match the shape.
    """
    import numpy

    try:
        ndim, dtype_len = struct.unpack_from(">BB", data)
        dtype = numpy.dtype(data[2 : 2 + dtype_len].decode("ascii"))
        offset = 2 + dtype_len
        shape = tuple(_SHAPE.unpack_from(data, offset + 8 * i)[0] for i in range(ndim))
    except (struct.error, TypeError, ValueError, UnicodeDecodeError) as exc:
        raise PayloadDecodeError(f"malformed numpy array header: {exc}") from None
    if ndim > _MAX_NDIM:
        raise PayloadDecodeError(f"numpy array header claims {ndim} dimensions")
    try:
        check_dtype(dtype)
    except PayloadError as exc:
        raise PayloadDecodeError(exc.message) from None
    buffer = memoryview(data)[offset + 8 * ndim :]
    count = 1
    for n in shape:
        count *= n
    if count * dtype.itemsize != len(buffer):
        raise PayloadDecodeError(
            f"numpy array of shape {shape} and dtype {dtype} needs {count * dtype.itemsize} "
            f"bytes, the message holds {len(buffer)}"
        )
    # frombuffer views the message's (read-only) bytes; the copy is the caller's own array.
    return numpy.frombuffer(buffer, dtype=dtype, count=count).reshape(shape).copy()
