"""Bad frames are refused with typed errors: unknown versions, truncation, corruption, bombs."""

from __future__ import annotations

import datetime as dt
import json
import pickle
import struct
import zlib
from typing import Any

import msgpack
import numpy as np
import pytest
import zstandard
from kombu.exceptions import ContentDisallowed, DecodeError
from kombu.serialization import loads

from dspex_jobs.errors import (
    DecompressedTooLarge,
    PayloadDecodeError,
    PayloadError,
    ProtocolVersionError,
)
from dspex_jobs.protocol import (
    CONTENT_TYPE,
    MAGIC,
    EncodeOptions,
    decode,
    encode,
    register_serializer,
)
from dspex_jobs.protocol._msgpack import (
    EXT_ARROW,
    EXT_COLUMNS,
    EXT_FLOAT64_COLUMN,
    EXT_FRAME,
    EXT_INT64_COLUMN,
    EXT_NDARRAY,
    EXT_TEXT_COLUMN,
)

HEADER = struct.Struct(">2sBBBBI")


def frame(
    body: bytes,
    *,
    version: int = 1,
    codec: int = 1,
    compression: int = 0,
    flags: int = 0,
    length: int | None = None,
) -> bytes:
    """A hand-made frame, header fields as given."""
    size = len(body) if length is None else length
    return HEADER.pack(MAGIC, version, codec, compression, flags, size) + body


# -- newer writers: typed, and they say to upgrade ------------------------------------------


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"version": 2}, "frame version 2 is newer"),
        ({"codec": 9}, "codec id 9 is unknown"),
        ({"compression": 7}, "compression id 7 is unknown"),
        ({"flags": 0x80}, "flags 0x80"),
    ],
)
def test_a_frame_from_a_newer_writer_says_to_upgrade(fields: dict[str, int], named: str) -> None:
    with pytest.raises(ProtocolVersionError, match="upgrade dspex-jobs") as info:
        decode(frame(msgpack.packb({"a": 1}), **fields))
    assert named in info.value.message
    assert info.value.code == "protocol_version_unknown"


def test_unknown_extension_types_and_tags_say_to_upgrade() -> None:
    with pytest.raises(ProtocolVersionError, match="extension type 42"):
        decode(frame(msgpack.packb(msgpack.ExtType(42, b"?"))))
    tagged = json.dumps({"__dspex__": "quaternion", "w": 1}).encode()
    with pytest.raises(ProtocolVersionError, match="quaternion"):
        decode(frame(tagged, codec=0, flags=1))


def arrow_part(
    columns: dict[str, Any] | list[tuple[str, Any]], metadata: dict[bytes, bytes]
) -> bytes:
    """A frame holding one hand-made Arrow part."""
    import pyarrow as pa

    named = list(columns.items()) if isinstance(columns, dict) else columns
    schema = pa.schema([pa.field(n, a.type) for n, a in named], metadata=metadata)
    batch = pa.record_batch([a for _, a in named], schema=schema)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return frame(msgpack.packb(msgpack.ExtType(EXT_ARROW, sink.getvalue().to_pybytes())), codec=2)


def test_an_arrow_part_of_an_unknown_kind_says_to_upgrade() -> None:
    import pyarrow as pa

    with pytest.raises(ProtocolVersionError, match="tensor4d"):
        decode(arrow_part({"a": pa.array([1, 2])}, {b"dspex": b"tensor4d"}))


def test_arrow_parts_this_writer_never_produces_are_refused() -> None:
    import pyarrow as pa

    matrix = pa.FixedSizeListArray.from_arrays(pa.array([1.0, 2.0, 3.0, 4.0]), 2)
    shape = {b"dspex": b"ndarray", b"dtype": b"<f8", b"shape": b"2,2"}
    bad = {
        "has type float": arrow_part({"a": pa.array([1.0], pa.float32())}, {b"dspex": b"rows"}),
        "distinct": arrow_part([("a", pa.array([1])), ("a", pa.array([2]))], {b"dspex": b"rows"}),
        "exactly one column": arrow_part({"m": matrix, "n": matrix}, shape),
        "cannot be int64": arrow_part({"m": pa.array([1, 2])}, shape),
        "cannot hold string": arrow_part(
            {"m": pa.FixedSizeListArray.from_arrays(pa.array(["a", "b"]), 1)}, shape
        ),
        "valid dtype and shape": arrow_part({"m": matrix}, {b"dspex": b"ndarray"}),
        "disagrees": arrow_part({"m": matrix}, {**shape, b"shape": b"3,2"}),
        "corrupt Arrow": frame(msgpack.packb(msgpack.ExtType(EXT_ARROW, b"\xff" * 64)), codec=2),
    }
    for expected, data in bad.items():
        with pytest.raises(PayloadDecodeError, match=expected):
            decode(data)


def columns_part(table: Any) -> bytes:
    """A frame holding one hand-made columns part (extension type 8)."""
    inner = table if isinstance(table, bytes) else msgpack.packb(table)
    return frame(msgpack.packb([1, msgpack.ExtType(EXT_COLUMNS, inner)]))


@pytest.mark.parametrize(
    ("table", "named"),
    [
        (5, "must be an array"),
        ([], "must be an array"),
        ([[]], "1 to 1024 distinct str"),
        ([["a", "a"], [1], [2]], "1 to 1024 distinct str"),
        ([[1], [1]], "1 to 1024 distinct str"),
        ([[f"c{i}" for i in range(1025)]] + [[0]] * 1025, "1 to 1024 distinct str"),
        ([["a"]], "needs that many lists"),
        ([["a", "b"], [1, 2], [3]], "needs that many lists of one length"),
        ([["a"], "xy"], "needs that many lists"),
        ([["a"], [1], [2]], "needs that many lists"),
        (b"\xc1", "corrupt MessagePack"),
    ],
)
def test_malformed_columns_parts_are_refused(table: Any, named: str) -> None:
    with pytest.raises(PayloadDecodeError, match=named):
        decode(columns_part(table))
    assert decode(columns_part([["a", "b"], [1, 2], ["x", "y"]])) == [
        1,
        [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}],
    ]


def test_text_columns_are_read_only_inside_a_table_and_must_be_utf8() -> None:
    text = msgpack.ExtType(EXT_TEXT_COLUMN, b"x\x00y")
    assert decode(columns_part([["a", "b"], [1, 2], text])) == [
        1,
        [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}],
    ]
    with pytest.raises(PayloadDecodeError, match=r"a column \(extension type 9\) outside a table"):
        decode(frame(msgpack.packb([1, text])))
    with pytest.raises(PayloadDecodeError, match=r"corrupt MessagePack.*UnicodeDecodeError"):
        decode(columns_part([["a"], msgpack.ExtType(EXT_TEXT_COLUMN, b"\xff\x00x")]))
    # three values where the other column has two
    with pytest.raises(PayloadDecodeError, match="needs that many lists of one length"):
        decode(columns_part([["a", "b"], [1, 2], msgpack.ExtType(EXT_TEXT_COLUMN, b"x\x00y\x00z")]))


@pytest.mark.parametrize(
    ("code", "pack", "value"),
    [(EXT_FLOAT64_COLUMN, "<d", 2.5), (EXT_INT64_COLUMN, "<q", -7)],
)
def test_number_columns_are_read_only_inside_a_table_and_whole(
    code: int, pack: str, value: float
) -> None:
    column = msgpack.ExtType(code, struct.pack(pack, value) * 2)
    assert decode(columns_part([["a", "b"], [1, 2], column])) == [
        1,
        [{"a": 1, "b": value}, {"a": 2, "b": value}],
    ]
    with pytest.raises(PayloadDecodeError, match=rf"a column \(extension type {code}\) outside"):
        decode(frame(msgpack.packb([1, column])))
    # a truncated column: 15 bytes are not a whole number of 8-byte values
    torn = msgpack.ExtType(code, column.data[:-1])
    with pytest.raises(PayloadDecodeError, match="cannot be 15 bytes long"):
        decode(columns_part([["a", "b"], [1, 2], torn]))
    # three values where the other column has two
    longer = msgpack.ExtType(code, column.data * 2)
    with pytest.raises(PayloadDecodeError, match="needs that many lists of one length"):
        decode(columns_part([["a", "b"], [1, 2, 3], longer]))


def test_a_table_that_would_inflate_into_rows_is_charged_before_it_is_built() -> None:
    # 200,000 one-byte values: 200 KB on the wire, 200,000 dicts once read
    bomb = columns_part([["a"], [0] * 200_000])
    assert len(bomb) < 250_000
    with pytest.raises(DecompressedTooLarge, match="over the decompression limit"):
        decode(bomb, max_decompressed_bytes=2_000_000)
    assert len(decode(bomb, max_decompressed_bytes=10_000_000)[1]) == 200_000
    # the same as one text column: 200,000 separators, 200,001 empty strings
    text_bomb = columns_part([["a"], msgpack.ExtType(EXT_TEXT_COLUMN, b"\x00" * 200_000)])
    with pytest.raises(DecompressedTooLarge, match="over the decompression limit"):
        decode(text_bomb, max_decompressed_bytes=2_000_000)


# -- truncated, corrupt, not ours -------------------------------------------------------------


@pytest.mark.parametrize("cut", [0, 1, 5, 9, 10, 20, -1])
def test_a_truncated_frame_is_refused(cut: int) -> None:
    data = encode({"rows": [{"a": i, "b": str(i)} for i in range(200)]})
    with pytest.raises(PayloadDecodeError, match=r"truncated|corrupt|not a dspex"):
        decode(data[:cut])


def test_trailing_bytes_after_the_body_are_refused() -> None:
    with pytest.raises(PayloadDecodeError, match="past its body"):
        decode(encode({"a": 1}) + b"junk")


@pytest.mark.parametrize("method", ["zstd", "zlib"])
def test_a_corrupted_compressed_body_is_refused(method: str) -> None:
    data = bytearray(encode("a sentence that repeats. " * 4000, EncodeOptions(compression=method)))  # type: ignore[arg-type]
    assert len(data) < 10_000
    data[len(data) // 2] ^= 0xFF
    data[len(data) // 2 + 1] ^= 0x55
    with pytest.raises(PayloadDecodeError, match=rf"corrupt {method}|truncated {method}"):
        decode(bytes(data))


@pytest.mark.parametrize(
    "body",
    [
        b"\xc1",  # a MessagePack byte that is never valid
        msgpack.packb([1, 2])[:-1],  # ends inside an array
        b"\xa3\xff\xfe\xfd",  # a str that is not UTF-8
    ],
)
def test_a_corrupt_msgpack_body_is_refused(body: bytes) -> None:
    with pytest.raises(PayloadDecodeError, match="corrupt MessagePack"):
        decode(frame(body))


def test_bad_extension_values_are_refused() -> None:
    bad = [
        msgpack.ExtType(EXT_NDARRAY, b"\x01\x03<f4" + struct.pack(">Q", 4) + b"\x00" * 3),
        msgpack.ExtType(EXT_NDARRAY, b"\x01"),
        msgpack.ExtType(EXT_ARROW, b"not arrow at all"),
        msgpack.ExtType(1, b"2024-13-45T99:00"),
    ]  # a datetime that is not one
    for ext in bad:
        with pytest.raises(PayloadDecodeError):
            decode(frame(msgpack.packb(ext)))


def test_something_else_is_not_a_frame() -> None:
    for other in (b"", b"{}", json.dumps({"id": 1}).encode(), pickle.dumps({"boom": 1})):
        with pytest.raises(PayloadDecodeError, match="not a dspex-jobs frame"):
            decode(other)


# -- bombs: bounded before a byte is inflated -------------------------------------------------


def test_a_frame_declaring_more_than_the_limit_is_refused_before_inflating() -> None:
    data = encode("x" * 200_000)
    with pytest.raises(DecompressedTooLarge, match="over the decompression limit") as info:
        decode(data, max_decompressed_bytes=100_000)
    assert info.value.details == {"size": 200_000 + 5, "limit": 100_000}


def test_a_zstd_bomb_that_lies_about_its_length_is_refused() -> None:
    # Given 50 MB of zeros compressed to a few KB, in a frame that claims 1 KB
    bomb = zstandard.ZstdCompressor().compress(b"\x00" * 50_000_000)
    assert len(bomb) < 10_000
    with pytest.raises(DecompressedTooLarge, match="refusing to inflate"):
        decode(frame(bomb, compression=1, length=1_000))
    # and without a content size in its header (not ours), it is refused too
    headless = zstandard.ZstdCompressor(write_content_size=False).compress(b"\x00" * 10_000)
    with pytest.raises(PayloadDecodeError):
        decode(frame(headless, compression=1, length=10_000))


def test_a_zlib_bomb_that_lies_about_its_length_is_refused() -> None:
    bomb = zlib.compress(b"\x00" * 50_000_000)
    with pytest.raises(DecompressedTooLarge, match="inflates past"):
        decode(frame(bomb, compression=2, length=1_000))


def test_frames_inside_frames_share_one_budget_and_nest_once() -> None:
    inner = encode("y" * 60_000)
    outer = encode([msgpack.ExtType(EXT_FRAME, inner)] * 3)
    assert decode(outer, max_decompressed_bytes=1_000_000) == ["y" * 60_000] * 3
    with pytest.raises(DecompressedTooLarge):
        decode(outer, max_decompressed_bytes=150_000)
    nested_twice = encode(msgpack.ExtType(EXT_FRAME, encode(msgpack.ExtType(EXT_FRAME, inner))))
    with pytest.raises(PayloadDecodeError, match="one level deep"):
        decode(nested_twice)


# -- never pickle -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [object(), {1, 2}, np.array([object()]), np.zeros(2, dtype=[("a", "<i4")]), dt.time(1, 2)],
)
def test_values_that_would_need_pickle_are_refused_at_encode(value: Any) -> None:
    for codec in ("json", "msgpack", "auto"):
        with pytest.raises(PayloadError):
            encode({"v": value}, EncodeOptions(codec=codec))  # type: ignore[arg-type]


def test_integers_beyond_64_bits_are_refused_by_msgpack_and_carried_by_json() -> None:
    for codec in ("msgpack", "auto"):
        with pytest.raises(PayloadError, match="cannot encode"):
            encode(2**64, EncodeOptions(codec=codec))  # type: ignore[arg-type]
    assert decode(encode(2**64, EncodeOptions(codec="json"))) == 2**64


def test_an_object_array_in_a_crafted_frame_is_refused() -> None:
    ext = msgpack.ExtType(EXT_NDARRAY, b"\x01\x03|O8" + struct.pack(">Q", 1) + b"\x00" * 8)
    with pytest.raises(PayloadDecodeError, match="object arrays would need pickle"):
        decode(frame(msgpack.packb(ext)))


def test_kombu_refuses_pickle_and_wraps_our_typed_errors() -> None:
    register_serializer()
    accept = {CONTENT_TYPE, "application/json"}
    with pytest.raises(ContentDisallowed):
        loads(pickle.dumps({"boom": 1}), "application/x-python-serialize", "binary", accept=accept)
    # A body with our content type that is not a frame: kombu's DecodeError, carrying ours
    with pytest.raises(DecodeError) as info:
        loads(pickle.dumps({"boom": 1}), CONTENT_TYPE, "binary", accept=accept)
    assert isinstance(info.value.args[0], PayloadDecodeError)
    assert isinstance(info.value.__context__, PayloadDecodeError)
    with pytest.raises(DecodeError) as info:
        loads(frame(b"", version=3), CONTENT_TYPE, "binary", accept=accept)
    assert isinstance(info.value.args[0], ProtocolVersionError)
