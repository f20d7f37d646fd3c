"""Every codec round-trips every supported type exactly (Hypothesis-generated payloads)."""

from __future__ import annotations

import collections
import datetime as dt
import math
import os
from decimal import Decimal
from typing import Any
from uuid import UUID

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dspex_jobs.errors import PayloadError
from dspex_jobs.protocol import (
    Codec,
    Compression,
    EncodeOptions,
    decode,
    encode,
    encode_frame,
    inspect_frame,
)
from dspex_jobs.protocol._msgpack import (
    EXT_ARROW,
    EXT_COLUMNS,
    EXT_FLOAT64_COLUMN,
    EXT_INT64_COLUMN,
    EXT_TEXT_COLUMN,
)

CODECS = ("json", "msgpack", "arrow", "auto")
COMPRESSIONS = ("none", "zstd", "zlib")
EXAMPLES = 60
"""Examples per codec in the default run (4 codecs: 240 in all)."""


# -- comparing: exact types, numpy arrays by dtype/shape/values, NaN equal to NaN -------------


def expected(value: Any) -> Any:
    """What a round trip gives back: tuples become lists, bytes-likes bytes, numpy scalars
    Python scalars."""
    if isinstance(value, tuple | list):
        return [expected(v) for v in value]
    if isinstance(value, dict):
        return {k: expected(v) for k, v in value.items()}
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (1 is not 1.0, True is not 1)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):  # bit for bit: NaN, NaT and -0.0 included
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, dt.datetime):
        return a == b and a.utcoffset() == b.utcoffset()
    return bool(a == b)


def assert_round_trip(value: Any, options: EncodeOptions) -> Any:
    data = encode(value, options)
    back = decode(data)
    assert same(back, expected(value)), (value, back)
    return back


# -- strategies -------------------------------------------------------------------------------

offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(
    lambda m: dt.timezone(dt.timedelta(minutes=m))
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=True),
    st.text(),
    st.binary(max_size=64),
    st.datetimes(timezones=st.none() | st.just(dt.UTC) | offsets),
    st.dates(),
    st.uuids(),
    st.decimals(allow_nan=False),
)
arrays = hnp.arrays(
    dtype=st.sampled_from(
        [
            "<f4",
            "<f8",
            ">f8",
            "<f2",
            "<i8",
            "<i4",
            "|u1",
            "<u8",
            "|b1",
            "<c16",
            "<M8[us]",
            "<U5",
            "|S3",
        ]
    ),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
)


@st.composite
def tables(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A list of rows with the same keys, one scalar type per column (None allowed)."""
    kinds = {
        int: st.integers(-(2**63), 2**63 - 1),
        float: st.floats(allow_nan=True),
        str: st.text(max_size=12),
        bool: st.booleans(),
        bytes: st.binary(max_size=8),
    }
    names = draw(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=5, unique=True))
    columns = {name: draw(st.sampled_from(sorted(kinds, key=str))) for name in names}
    nullable = {name: draw(st.booleans()) for name in names}
    rows_n = draw(st.integers(1, 80))
    rows = []
    for _ in range(rows_n):
        row = {}
        for name, kind in columns.items():
            value = draw(kinds[kind])
            row[name] = None if nullable[name] and draw(st.booleans()) else value
        rows.append(row)
    return rows


@st.composite
def nested_tables(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Rows with the same keys whose values are anything (lists, dicts, dates, mixed types):
    tables MessagePack sends by columns and Arrow cannot hold."""
    names = draw(st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=4, unique=True))
    cell = st.one_of(
        scalars,
        st.lists(scalars, max_size=3),
        st.dictionaries(st.text(max_size=4), scalars, max_size=2),
    )
    rows_n = draw(st.integers(1, 40))
    return [{name: draw(cell) for name in names} for _ in range(rows_n)]


matrices = st.integers(1, 70).flatmap(
    lambda width: st.lists(
        st.lists(st.floats(allow_nan=False), min_size=width, max_size=width),
        min_size=1,
        max_size=70,
    )
)
leaves = st.one_of(scalars, arrays, tables(), nested_tables(), matrices)
values = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(st.text(max_size=6), children, max_size=4),
    ),
    max_leaves=12,
)
celery_bodies = st.tuples(
    st.tuples(values),
    st.dictionaries(st.text(max_size=5), values, max_size=2),
    st.fixed_dictionaries(
        {"callbacks": st.none(), "errbacks": st.none(), "chain": st.none(), "chord": st.none()}
    ),
)


# -- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    value=values,
    compression=st.sampled_from(COMPRESSIONS),
    threshold=st.sampled_from([0, 64, 1 << 20]),
)
def test_every_codec_round_trips_every_supported_type(
    codec: str, value: Any, compression: str, threshold: int
) -> None:
    options = EncodeOptions(
        codec=codec,
        compression=compression,  # type: ignore[arg-type]
        compress_threshold_bytes=threshold,
        arrow_min_rows=2,
    )
    assert_round_trip(value, options)


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=celery_bodies)
def test_celery_message_bodies_round_trip(codec: str, body: Any) -> None:
    # Celery's protocol v2 body is (args, kwargs, embed); tuples come back as lists, as JSON
    back = assert_round_trip(body, EncodeOptions(codec=codec))  # type: ignore[arg-type]
    assert isinstance(back, list) and len(back) == 3


@pytest.mark.slow
@settings(
    max_examples=int(os.environ.get("DSPEX_TEST_EXAMPLES", "400")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
@given(value=values, codec=st.sampled_from(CODECS), compression=st.sampled_from(COMPRESSIONS))
def test_round_trips_at_size(value: Any, codec: str, compression: str) -> None:
    options = EncodeOptions(
        codec=codec,
        compression=compression,  # type: ignore[arg-type]
        compress_threshold_bytes=0,
        arrow_min_rows=1,
    )
    assert_round_trip(value, options)


def ext_codes(data: bytes) -> list[int]:
    """The extension types an (uncompressed) frame's MessagePack body holds."""
    import msgpack

    found: list[int] = []

    def hook(code: int, payload: bytes) -> None:
        found.append(code)

    msgpack.unpackb(data[10:], ext_hook=hook, strict_map_key=False)
    return found


def has_columns(data: bytes) -> bool:
    """Whether a (uncompressed) frame holds a columns part (extension type 8)."""
    return EXT_COLUMNS in ext_codes(data)


@given(rows=tables())
@settings(max_examples=40, deadline=None)
def test_tables_travel_by_columns_or_as_arrow_and_come_back_as_rows(
    rows: list[dict[str, Any]],
) -> None:
    # auto: column by column, in MessagePack
    frame = encode_frame({"rows": rows}, EncodeOptions(arrow_min_rows=1, compression="none"))
    assert same(decode(frame.data), {"rows": rows})
    assert frame.info.codec is Codec.MSGPACK and has_columns(frame.data)
    # arrow forced: an exact table (not an all-None column) goes as Arrow
    data = encode({"rows": rows}, EncodeOptions(codec="arrow", compression="none"))
    assert same(decode(data), {"rows": rows})
    all_none = any(all(r[k] is None for r in rows) for k in rows[0])
    assert (EXT_ARROW in ext_codes(data)) is not all_none


def column_forms(data: bytes) -> list[str]:
    """How each column of the (uncompressed) frame's one columns part is written: ``text``
    (one NUL-joined text, extension type 9), ``float64`` (10), ``int64`` (11) or ``values``."""
    import msgpack

    parts: list[bytes] = []
    msgpack.unpackb(data[10:], ext_hook=lambda code, part: parts.append(part), strict_map_key=False)
    (part,) = parts
    table = msgpack.unpackb(part, ext_hook=msgpack.ExtType, strict_map_key=False)
    forms = {EXT_TEXT_COLUMN: "text", EXT_FLOAT64_COLUMN: "float64", EXT_INT64_COLUMN: "int64"}
    return [forms[c.code] if isinstance(c, msgpack.ExtType) else "values" for c in table[1:]]


def test_str_columns_travel_as_one_text_and_come_back_exactly() -> None:
    import enum

    class Label(enum.StrEnum):
        GOOD = "good"

    n = 100
    rows = [
        {
            "text": ["", "a b", "é😀\n", "x" * 300][i % 4],
            "nul": "a\x00b" if i == 57 else "plain",  # a value holding the separator
            "label": Label.GOOD,  # a str subclass: back as a plain str, as MessagePack sends it
            "maybe": None if i % 3 else "s",  # str among None: value by value
            "n": i,
        }
        for i in range(n)
    ]
    frame = encode_frame({"rows": rows}, EncodeOptions(compression="none"))
    assert column_forms(frame.data) == ["text", "values", "text", "values", "int64"]
    back = decode(frame.data)["rows"]
    plain = [{**row, "label": "good"} for row in rows]
    assert same(back, plain) and type(back[0]["label"]) is str
    for options in (EncodeOptions(), EncodeOptions(compress_threshold_bytes=0)):
        assert same(decode(encode({"rows": rows}, options))["rows"], plain)
    # a one-row table, and a column of empty strings, still have their values
    for table in ([{"a": ""}], [{"a": ""}] * 70, [{"a": "x"}]):
        data = encode(table, EncodeOptions(arrow_min_rows=1, compression="none"))
        assert column_forms(data) == ["text"] and same(decode(data), table)
    # a value that is not UTF-8 (a lone surrogate) is refused as it is outside a table
    with pytest.raises(PayloadError, match="surrogates not allowed"):
        encode({"rows": [{"a": "ok"}] * 70 + [{"a": "\ud800"}]})


def test_number_columns_travel_in_one_piece_and_come_back_exactly() -> None:
    import enum

    class Level(enum.IntEnum):
        LOW = 1

    n = 100
    edge_floats = [0.0, -0.0, math.inf, -math.inf, math.nan, 5e-324, 1.7976931348623157e308]
    edge_ints = [0, -1, 2**63 - 1, -(2**63)]
    rows = [
        {
            "f": edge_floats[i % len(edge_floats)] if i < 20 else i / 3,
            "i": edge_ints[i % len(edge_ints)] if i < 20 else i,
            "big": 2**63 if i == 99 else i,  # beyond int64: value by value (MessagePack's uint64)
            "mixed": 1.5 if i % 2 else 1,  # an int among floats keeps its type
            "flag": i % 2 == 0,  # bool is not int
            "level": Level.LOW,  # an int subclass: value by value, back as a plain int
        }
        for i in range(n)
    ]
    frame = encode_frame({"rows": rows}, EncodeOptions(compression="none"))
    assert column_forms(frame.data) == ["float64", "int64", "values", "values", "values", "values"]
    plain = [{**row, "level": 1} for row in rows]
    back = decode(frame.data)["rows"]
    assert same(back, plain)
    assert math.copysign(1.0, back[1]["f"]) == -1.0  # -0.0 stays negative
    for options in (EncodeOptions(), EncodeOptions(compress_threshold_bytes=0)):
        assert same(decode(encode({"rows": rows}, options))["rows"], plain)


def test_numpy_arrays_keep_dtype_shape_and_are_writable() -> None:
    matrix = np.arange(300, dtype=np.float32).reshape(100, 3)
    odd = np.arange(24, dtype=">i4").reshape(2, 3, 4)[:, ::2]  # big-endian, not contiguous
    for codec in CODECS:
        back = decode(encode({"m": matrix, "odd": odd}, EncodeOptions(codec=codec)))  # type: ignore[arg-type]
        assert same(back["m"], matrix) and same(back["odd"], np.ascontiguousarray(odd))
        back["m"][0, 0] = -1.0  # a fresh array, not a view of the message
    assert inspect_frame(encode({"m": matrix})).codec is Codec.ARROW  # auto: a matrix


def test_auto_sends_tables_by_columns_and_matrices_as_arrow() -> None:
    small = {"question": "why?", "context": ["a", "b"], "n": 3}
    assert inspect_frame(encode(small)).codec is Codec.MSGPACK
    rows = [{"id": i, "text": f"row {i}", "score": i / 7} for i in range(1000)]
    data = encode({"inputs": {"rows": rows}}, EncodeOptions(compression="none"))
    assert inspect_frame(data).codec is Codec.MSGPACK and has_columns(data)
    assert inspect_frame(encode({"inputs": {"rows": rows}})).compression is Compression.ZSTD
    # 63 rows is below ARROW_MIN_ROWS: row by row
    assert not has_columns(encode({"rows": rows[:63]}, EncodeOptions(compression="none")))
    assert inspect_frame(encode({"m": np.zeros((64, 3))})).codec is Codec.ARROW


def test_tables_arrow_cannot_hold_exactly_go_by_columns() -> None:
    mixed = [{"a": 1}, {"a": 2.5}] * 50  # int and float in one column
    nested = [{"a": [1], "b": {"c": dt.date(2024, 1, 2)}}] * 100
    huge = [{"a": 2**63}] * 100  # beyond int64 (MessagePack carries uint64)
    reordered = [{"a": 1, "b": 2}, {"b": 3, "a": 4}] * 50  # same keys, other order
    for rows in (mixed, nested, huge, reordered):
        frame = encode_frame({"rows": rows}, EncodeOptions(compression="none"))
        assert frame.info.codec is Codec.MSGPACK and has_columns(frame.data)
        assert same(decode(frame.data), {"rows": rows})
        # the arrow codec forced: by columns too, where Arrow would change a value's type
        data = encode({"rows": rows}, EncodeOptions(codec="arrow", compression="none"))
        assert has_columns(data) is (rows is not reordered)
        assert same(decode(data), {"rows": rows})


def test_lists_that_are_not_tables_go_row_by_row() -> None:
    ragged = [{"a": 1}, {"b": 2}] * 50
    extra = [{"a": 1}, {"a": 1, "b": 2}] * 50
    subclassed = [{"a": 1}, collections.OrderedDict(a=2)] * 50
    non_str_keys = [{1: "a"}] * 100
    for rows in (ragged, extra, subclassed, non_str_keys):
        data = encode({"rows": rows}, EncodeOptions(compression="none"))
        assert not has_columns(data)
        assert decode(data) == {"rows": [dict(r) for r in rows]}


def test_float_lists_go_as_arrow_only_when_forced() -> None:
    matrix = [[float(i), i / 3, -0.0] for i in range(100)]
    assert inspect_frame(encode(matrix)).codec is Codec.MSGPACK
    frame = encode_frame(matrix, EncodeOptions(codec="arrow"))
    assert frame.info.codec is Codec.ARROW and same(decode(frame.data), matrix)
    ints = [[1, 2.0]] * 10  # an int among the floats: not converted
    assert same(decode(encode(ints, EncodeOptions(codec="arrow"))), ints)


def test_compression_above_the_threshold_only_and_only_when_it_pays() -> None:
    text = "the same sentence again. " * 2000
    assert inspect_frame(encode(text)).compression is Compression.ZSTD
    assert inspect_frame(encode(text[:1000])).compression is Compression.NONE
    assert (
        inspect_frame(encode(text, EncodeOptions(compression="zlib"))).compression
        is Compression.ZLIB
    )
    noise = np.random.default_rng(1).bytes(400_000)  # incompressible: the sample says so
    assert inspect_frame(encode(noise)).compression is Compression.NONE
    info = inspect_frame(encode(text, EncodeOptions(compression="none")))
    assert info.compression is Compression.NONE and info.length_bytes + 10 == info.size_bytes


def test_json_codec_is_readable_json() -> None:
    data = encode(
        {"q": "why?", "when": dt.date(2024, 1, 2), "id": UUID(int=1), "price": Decimal("1.10")},
        EncodeOptions(codec="json", compression="none"),
    )
    text = data[10:].decode("utf-8")
    assert text.startswith('{"q":"why?","when":{"__dspex__":"date","iso":"2024-01-02"}')
    assert inspect_frame(data).flags == 1  # tagged values: the reader turns its hook on
    assert inspect_frame(encode({"q": 1}, EncodeOptions(codec="json"))).flags == 0


def test_an_embedded_frame_is_sent_as_it_is_and_comes_back_as_its_value() -> None:
    job = encode_frame({"id": "j1", "rows": [{"a": i} for i in range(100)]})
    assert "dspex frame msgpack" in repr(job)
    message = ((job,), {}, {"callbacks": None})
    for codec in CODECS:
        back = decode(encode(message, EncodeOptions(codec=codec)))  # type: ignore[arg-type]
        assert back[0][0]["rows"][99] == {"a": 99}
    # The job's bytes were not compressed a second time inside the message
    big = encode_frame("x" * 100_000)
    assert inspect_frame(encode([big])).compression is Compression.NONE
