"""Tables and matrices as Arrow IPC streams, converted back to exactly what was sent.

``auto`` sends numpy matrices this way; tables go column by column in MessagePack instead
(measured faster for Python rows, see :mod:`._table`) unless the ``arrow`` codec is forced.
Three shapes of data travel as Arrow inside a MessagePack body (extension type
:data:`~dspex_jobs.protocol._msgpack.EXT_ARROW`), each marked in the schema metadata
(``dspex``) so the reader restores the same Python value:

``rows``
    A list of dicts with the same ``str`` keys whose values in each key are all ``int``,
    all ``float``, all ``str``, all ``bool`` or all ``bytes`` (``None`` allowed among them):
    a batch of rows. Columnar, each column typed once: about half the bytes of MessagePack
    and a quarter of JSON for a typical table, and far fewer objects to parse.
``ndarray``
    A 2-D bool/int/uint/float numpy array (an embedding matrix), as a fixed-size-list
    column, with its dtype and shape.
``lists``
    A list of equal-length lists of ``float`` (a matrix sent as lists), only when the
    ``arrow`` codec is forced: measured here, checking every element's type costs more
    than MessagePack takes to pack them, so ``auto`` leaves these to MessagePack.

Anything that does not fit exactly (mixed ``int``/``float`` in a column, ints beyond int64,
nested values, differing keys) is not a table: the caller sends it with MessagePack
instead, so a round trip never changes a value's type. pyarrow is imported only once a
list has passed the pure-Python checks.

Reading refuses what this writer never produces: unknown markers, column types other than
the five above, nulls in matrices, and extension types (older pyarrow unpickled some).
Every stream is fully validated before a value is read out of it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from dspex_jobs.errors import PayloadDecodeError, ProtocolVersionError
from dspex_jobs.protocol._table import (
    MAX_COLUMNS,
    Columns,
    build_rows,
    decoded_cost,
    row_builder,
    table_columns,
)

__all__ = ["MAX_COLUMNS", "from_ipc", "lists_to_ipc", "ndarray_to_ipc", "rows_to_ipc"]

_KIND = b"dspex"
_ROWS, _LISTS, _NDARRAY = b"rows", b"lists", b"ndarray"
_NONE = type(None)
_SCALARS = frozenset((int, float, str, bool, bytes, _NONE))
_NUMPY_KINDS = frozenset("biuf")


def rows_to_ipc(rows: list[Any] | tuple[Any, ...]) -> bytes | None:
    """A list of dict rows as an Arrow stream, or ``None`` if it is not an exact table."""
    table = _columns(rows)
    if table is None:
        return None
    keys, values = table.keys, table.columns
    pa = _pyarrow()

    exact = {
        pa.int64(): None,
        pa.string(): None,
        pa.bool_(): None,
        pa.float64(): frozenset((float, _NONE)),
        pa.binary(): frozenset((bytes, _NONE)),
    }
    arrays = []
    try:
        for column in values:
            # pyarrow refuses the mixes it cannot hold (str and int, bool and int); of what
            # it infers, only double (from ints and floats) and binary (from str and bytes)
            # can hide a change of type, so only those columns are checked value by value.
            array = pa.array(column)
            if array.type not in exact or isinstance(array, pa.ChunkedArray):
                return None
            allowed = exact[array.type]
            if allowed is not None and not set(map(type, column)) <= allowed:
                return None
            arrays.append(array)
    except (pa.ArrowException, OverflowError, TypeError):  # e.g. an int beyond int64
        return None
    schema = pa.schema(
        [pa.field(k, a.type) for k, a in zip(keys, arrays, strict=True)], metadata={_KIND: _ROWS}
    )
    return _write(pa.RecordBatch.from_arrays(arrays, schema=schema))


def lists_to_ipc(rows: list[Any] | tuple[Any, ...]) -> bytes | None:
    """A list of equal-length ``float`` lists as an Arrow stream, or ``None``."""
    first = rows[0]
    if type(first) is not list or not first:
        return None
    width = len(first)
    if set(map(type, rows)) != {list} or set(map(len, rows)) != {width}:
        return None
    if set(map(type, itertools.chain.from_iterable(rows))) != {float}:
        return None
    import numpy

    pa = _pyarrow()

    flat = pa.array(numpy.array(rows, dtype=numpy.float64).reshape(-1))
    column = pa.FixedSizeListArray.from_arrays(flat, width)
    schema = pa.schema([pa.field("lists", column.type)], metadata={_KIND: _LISTS})
    return _write(pa.RecordBatch.from_arrays([column], schema=schema))


def ndarray_to_ipc(array: Any) -> bytes | None:
    """A 2-D numeric numpy array as an Arrow stream, or ``None`` (the raw-buffer path takes it)."""
    dtype = array.dtype
    if array.ndim != 2 or dtype.kind not in _NUMPY_KINDS or not array.shape[1]:
        return None
    if not dtype.isnative:
        return None
    import numpy

    pa = _pyarrow()

    flat = pa.array(numpy.ascontiguousarray(array).reshape(-1))
    column = pa.FixedSizeListArray.from_arrays(flat, array.shape[1])
    metadata = {
        _KIND: _NDARRAY,
        b"dtype": dtype.str.encode("ascii"),
        b"shape": f"{array.shape[0]},{array.shape[1]}".encode("ascii"),
    }
    schema = pa.schema([pa.field("ndarray", column.type)], metadata=metadata)
    return _write(pa.RecordBatch.from_arrays([column], schema=schema))


def from_ipc(data: bytes, spend: Callable[[int], None] | None = None) -> Any:
    """The value an Arrow stream written here holds.

    Args:
        data: The stream.
        spend: Charged :func:`~dspex_jobs.protocol._table.decoded_cost` before rows are
            built (the message's decompression budget).

    Raises:
        PayloadDecodeError: A malformed stream, or one this writer would never produce.
        ProtocolVersionError: A marker this reader does not know (a newer writer).
        DecompressedTooLarge: The rows would exceed the budget.
    """
    pa = _pyarrow()

    try:
        table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
        table.validate(full=True)
    except (pa.ArrowException, ValueError, OSError) as exc:
        raise PayloadDecodeError(f"corrupt Arrow stream: {exc}") from None
    kind = (table.schema.metadata or {}).get(_KIND)
    if table.num_rows > 8 * len(data) + 8:
        raise PayloadDecodeError(f"Arrow stream claims {table.num_rows} rows in {len(data)} bytes")
    if kind == _ROWS:
        if spend is not None:
            spend(decoded_cost(table.num_rows, table.num_columns))
        return _read_rows(table)
    if kind in (_NDARRAY, _LISTS):
        return _read_matrix(table, kind)
    raise ProtocolVersionError(
        f"Arrow part of kind {kind!r} is unknown to this dspex-jobs; upgrade it on the workers"
    )


def _columns(rows: list[Any] | tuple[Any, ...]) -> Columns | None:
    first = rows[0]
    if type(first) is not dict or not _SCALARS.issuperset(map(type, first.values())):
        return None  # nested values: no need to ask pyarrow
    return table_columns(rows)


def _pyarrow() -> Any:
    """pyarrow, imported on first use (it costs ~100 ms and most messages never need it)."""
    import pyarrow  # type: ignore[import-untyped]  # no stubs; pyproject is not ours to edit

    return pyarrow


def _write(batch: Any) -> bytes:
    pa = _pyarrow()

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return bytes(sink.getvalue().to_pybytes())


def _read_rows(table: Any) -> list[dict[str, Any]]:
    pa = _pyarrow()

    numeric = (pa.int64(), pa.float64(), pa.bool_())
    allowed = (*numeric, pa.string(), pa.binary())
    columns = []
    for field, column in zip(table.schema, table.columns, strict=True):
        if field.type not in allowed:
            raise PayloadDecodeError(f"Arrow rows column {field.name!r} has type {field.type}")
        if field.type in numeric and not column.null_count:
            columns.append(column.to_numpy(zero_copy_only=False).tolist())
        else:
            columns.append(column.to_pylist())
    keys = tuple(table.schema.names)
    if len(set(keys)) != len(keys) or not 0 < len(keys) <= MAX_COLUMNS:
        raise PayloadDecodeError(
            f"Arrow rows need 1 to {MAX_COLUMNS} distinct column names, not {len(keys)}"
        )
    return build_rows(keys, columns)


def _read_matrix(table: Any, kind: bytes) -> Any:
    import numpy

    pa = _pyarrow()

    if table.num_columns != 1:
        raise PayloadDecodeError("an Arrow matrix has exactly one column")
    column = table.column(0).combine_chunks()
    if not pa.types.is_fixed_size_list(column.type) or column.null_count:
        raise PayloadDecodeError(f"an Arrow matrix column cannot be {column.type}")
    values = column.flatten()
    kind_ok = pa.types.is_integer(values.type) or pa.types.is_floating(values.type)
    if values.null_count or not (kind_ok or pa.types.is_boolean(values.type)):
        raise PayloadDecodeError(f"an Arrow matrix cannot hold {values.type}")
    width = column.type.list_size
    flat = values.to_numpy(zero_copy_only=False)
    if kind == _LISTS:
        return flat.reshape(-1, width).tolist()
    metadata = table.schema.metadata
    try:
        dtype = numpy.dtype(metadata[b"dtype"].decode("ascii"))
        rows_n, cols_n = (int(n) for n in metadata[b"shape"].split(b","))
    except (KeyError, ValueError, TypeError) as exc:
        raise PayloadDecodeError(f"Arrow matrix without a valid dtype and shape: {exc}") from None
    if dtype.kind not in _NUMPY_KINDS or (rows_n, cols_n) != (len(column), width):
        raise PayloadDecodeError(f"Arrow matrix metadata {dtype}/{rows_n}x{cols_n} disagrees")
    return flat.reshape(rows_n, cols_n).astype(dtype, copy=True)


_row_builder = row_builder
"""The row builder's cache, under the name :mod:`dspex_jobs.caches` reports."""
