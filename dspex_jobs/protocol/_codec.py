"""Encode any supported value to one frame, and decode any frame: the heart of the protocol.

:func:`encode_frame` picks the codec and compression for each message from its content
(or as :class:`EncodeOptions` force) and writes a frame; :func:`decode` reads whatever a
frame says, within a decompression budget. Both are pure functions of their arguments:
no settings are read here.

How ``auto`` chooses, per message:

1. Tables (a list of at least :data:`ARROW_MIN_ROWS` dict rows with the same ``str``
   keys) go column by column, inside the MessagePack body (:mod:`._table` says why not
   Arrow); 2-D numeric numpy arrays with as many rows become Arrow parts, and the frame's
   codec is then ``arrow``. With ``arrow`` forced, tables Arrow holds exactly are Arrow too.
2. Everything else is MessagePack (numpy arrays as raw buffers, ``bytes`` as ``bin``,
   datetimes as extension types): smaller and faster than JSON at every size measured
   (``bench/protocol.py``), the small-message case included. JSON is never chosen by
   ``auto``; force it (``DSPEX_PROTOCOL_CODEC=json``) for readability.
3. A body of at least ``compress_threshold_bytes`` (not counting frames already embedded
   in it, which were compressed on their own) is compressed with zstd, unless a sample
   shows it will not shrink, and kept uncompressed if compressing did not help.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from dspex_jobs.errors import DSPexError, PayloadDecodeError, PayloadError
from dspex_jobs.protocol import _json, _msgpack
from dspex_jobs.protocol._compress import (
    compress,
    decompress,
    default_compression,
    worth_compressing,
)
from dspex_jobs.protocol._frame import (
    FLAG_JSON_TAGS,
    FRAME_VERSION,
    Codec,
    Compression,
    DecodeBudget,
    Encoded,
    FrameInfo,
    pack_frame,
    read_frame,
)
from dspex_jobs.protocol._select import ARROW_MIN_ROWS, tabularize

if TYPE_CHECKING:
    from dspex_jobs.settings import Settings

__all__ = [
    "DEFAULT_COMPRESS_THRESHOLD_BYTES",
    "GC_PAUSE_BYTES",
    "DEFAULT_MAX_DECOMPRESSED_BYTES",
    "CodecName",
    "CompressionName",
    "EncodeOptions",
    "decode",
    "encode",
    "encode_frame",
    "inspect_frame",
]

CodecName = Literal["auto", "json", "msgpack", "arrow"]
CompressionName = Literal["auto", "zstd", "zlib", "none"]

DEFAULT_COMPRESS_THRESHOLD_BYTES = 16 * 1024
"""Bodies at least this long are compressed (zstd at ~250 MB/s pays off from a few KiB)."""

DEFAULT_MAX_DECOMPRESSED_BYTES = 64 * 1024 * 1024
"""The most bytes one message's frames may inflate to, unless a setting says otherwise."""

GC_PAUSE_BYTES = 64 * 1024
"""Bodies at least this long are decoded with the cyclic garbage collector paused.

Decoding a table allocates a dict per row, and every 700 allocations the collector walks the
young objects, among them the freshly decoded column lists, value by value: measured, a
third of the time 10,000 rows take to build (1.9 ms with the collector, 1.4 ms without).
A decoded message holds no cycles of ours, so pausing only defers work (msgpack's
documentation recommends the same for large messages). The collector is resumed only if
it was running, so a process that turned it off keeps it off; two threads decoding at
once can at worst resume it while the other still decodes, which costs speed, nothing
else. (Code that turns the collector off in another thread *during* a decode would see it
turned back on when the decode ends: ``gc.disable`` is process-wide.)"""

_MAX_NESTING = 1
"""A frame may hold frames (a job inside a Celery message), but those may not hold more."""


@dataclass(frozen=True, slots=True)
class EncodeOptions:
    """How to encode: which codec, which compression, from what size.

    Attributes:
        codec: ``auto`` chooses per message; the others force one.
        compression: ``auto`` is zstd, or zlib where ``zstandard`` is missing; ``none``
            never compresses.
        compress_threshold_bytes: Bodies at least this long are compressed.
        arrow_min_rows: Fewest rows a table needs for ``auto`` to send it by columns, and
            a numpy matrix to go as Arrow (a forced ``arrow`` codec sends every table and
            matrix Arrow holds exactly as Arrow).
    """

    codec: CodecName = "auto"
    compression: CompressionName = "auto"
    compress_threshold_bytes: int = DEFAULT_COMPRESS_THRESHOLD_BYTES
    arrow_min_rows: int = ARROW_MIN_ROWS

    @classmethod
    def from_settings(cls, settings: Settings) -> EncodeOptions:
        """The options ``DSPEX_PROTOCOL_CODEC`` and ``DSPEX_COMPRESS_THRESHOLD_BYTES`` set."""
        return cls(
            codec=settings.protocol_codec,
            compress_threshold_bytes=settings.compress_threshold_bytes,
        )

    def token(self) -> str:
        """A short name for these options, for serializer names (``json-auto-16384-64``)."""
        parts = (self.codec, self.compression, self.compress_threshold_bytes, self.arrow_min_rows)
        return "-".join(str(part) for part in parts)


DEFAULT_OPTIONS = EncodeOptions()


def encode_frame(value: Any, options: EncodeOptions = DEFAULT_OPTIONS) -> Encoded:
    """Encode ``value`` as one frame.

    Example:
        >>> frame = encode_frame({"question": "why?", "rows": [{"a": i} for i in range(100)]})
        >>> frame.info.describe()
        'msgpack'
        >>> decode(frame.data)["rows"][99]
        {'a': 99}

    Raises:
        PayloadError: A value cannot be encoded (its type, an int beyond 64 bits, an
            object numpy array); the message names it.
    """
    data, codec, method, flags, length = _encode(value, options)
    return Encoded(data, FrameInfo(FRAME_VERSION, codec, method, flags, length, len(data)))


def encode(value: Any, options: EncodeOptions = DEFAULT_OPTIONS) -> bytes:
    """Encode ``value`` as one frame's bytes (see :func:`encode_frame`)."""
    return _encode(value, options)[0]


def _encode(value: Any, options: EncodeOptions) -> tuple[bytes, Codec, Compression, int, int]:
    flags = 0
    embedded_bytes = 0
    try:
        if options.codec == "json":
            body, tagged = _json.dumps(value, _embedded_value)
            codec, flags = Codec.JSON, FLAG_JSON_TAGS if tagged else 0
        else:
            parts = 0
            min_rows: int | None = None
            if options.codec != "msgpack":
                forced = options.codec == "arrow"
                value, parts = tabularize(value, min_rows=options.arrow_min_rows, arrow=forced)
                min_rows = 1 if forced else options.arrow_min_rows
            body, embedded_bytes, arrays = _msgpack.pack(value, min_rows)
            arrow = parts or arrays or options.codec == "arrow"
            codec = Codec.ARROW if arrow else Codec.MSGPACK
    except DSPexError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise PayloadError(f"cannot encode the payload: {exc}") from None
    length = len(body)
    method = Compression.NONE
    if length - embedded_bytes >= options.compress_threshold_bytes and length:
        method = _compression_for(body, options)
        if method is not Compression.NONE:
            packed = compress(body, method)
            if len(packed) < length:
                body = packed
            else:
                method = Compression.NONE
    return pack_frame(codec, method, flags, length, body), codec, method, flags, length


def decode(
    data: bytes | bytearray | memoryview,
    *,
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES,
) -> Any:
    """Decode one frame, and any frames embedded in it, into the value that was encoded.

    Args:
        data: The frame.
        max_decompressed_bytes: The most bytes the frame and those embedded in it may
            inflate to, together; checked against each header before inflating.

    Raises:
        PayloadDecodeError: Not a frame, truncated or corrupt.
        ProtocolVersionError: Written by a newer dspex-jobs (frame version, codec,
            compression, flags, an extension type or tag).
        DecompressedTooLarge: It would inflate past ``max_decompressed_bytes``.
    """
    return _decode(data, DecodeBudget(max_decompressed_bytes))


def inspect_frame(data: bytes | bytearray | memoryview) -> FrameInfo:
    """What a frame's header says, without decoding its body."""
    return read_frame(data)[0]


def _decode(data: bytes | bytearray | memoryview, budget: DecodeBudget) -> Any:
    info, payload = read_frame(data)
    budget.spend(info.length_bytes)
    if info.compression is Compression.NONE:
        if len(payload) != info.length_bytes:
            raise PayloadDecodeError(
                f"truncated frame: its header says {info.length_bytes} body bytes, "
                f"{len(payload)} arrived"
                if len(payload) < info.length_bytes
                else f"frame has {len(payload) - info.length_bytes} bytes past its body"
            )
        body: bytes | memoryview = payload
    else:
        body = decompress(payload, info.compression, info.length_bytes)
    paused = info.length_bytes >= GC_PAUSE_BYTES and gc.isenabled()
    if paused:
        gc.disable()
    try:
        if info.codec is Codec.JSON:
            return _json.loads(body, bool(info.flags & FLAG_JSON_TAGS))
        return _msgpack.unpack(body, budget, _nested)
    finally:
        if paused:
            gc.enable()


def _nested(data: bytes, budget: DecodeBudget) -> Any:
    if budget.depth >= _MAX_NESTING:
        raise PayloadDecodeError("frames nest one level deep at most")
    budget.depth += 1
    try:
        return _decode(data, budget)
    finally:
        budget.depth -= 1


def _embedded_value(frame: Encoded) -> Any:
    """The value of an :class:`Encoded` met by the JSON codec (written out readably)."""
    return decode(frame.data)


def _compression_for(body: bytes, options: EncodeOptions) -> Compression:
    if options.compression == "none":
        return Compression.NONE
    if options.compression == "auto":
        method = default_compression()
    else:
        method = Compression.ZSTD if options.compression == "zstd" else Compression.ZLIB
    return method if worth_compressing(body, method) else Compression.NONE
