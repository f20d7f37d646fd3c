"""The frame: a 10-byte self-describing header in front of every body we put on the wire.

Every message body, stored result and claim-checked payload this package writes is one
frame, so any reader decodes any of them without knowing which kombu serializer name,
setting or producer made it::

    offset  size  field
    0       2     magic            b"DX"
    2       1     frame version    1
    3       1     codec            0 json, 1 msgpack, 2 arrow (msgpack with Arrow IPC parts)
    4       1     compression      0 none, 1 zstd, 2 zlib
    5       1     flags            bit 0: the JSON body holds tagged values (bytes, arrays...)
    6       4     length           body length before compression, big-endian uint32
    10      ...   body

A reader refuses, with a typed error, anything it does not fully understand: a newer
frame version, an unknown codec, compression or flag (:class:`ProtocolVersionError`,
which says to upgrade), a body shorter or longer than the header says
(:class:`PayloadDecodeError`), and a declared length over its decompression limit
(:class:`DecompressedTooLarge`), which it checks before inflating a single byte.

Why a header of our own rather than kombu's ``content-type`` and ``compression`` headers:
those describe a whole Celery message, are set once per app, and kombu inflates a
``compression`` header before it checks ``accept_content`` and with no size bound. The
frame travels inside the body, so it also describes stored results and Redis copies that
never pass through kombu.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import NamedTuple, NoReturn

from dspex_jobs.errors import DecompressedTooLarge, PayloadDecodeError, ProtocolVersionError

__all__ = [
    "FLAG_JSON_TAGS",
    "FRAME_VERSION",
    "HEADER_BYTES",
    "MAGIC",
    "Codec",
    "Compression",
    "DecodeBudget",
    "Encoded",
    "FrameInfo",
    "is_frame",
    "pack_frame",
    "read_frame",
]

MAGIC = b"DX"
"""First two bytes of every frame."""

FRAME_VERSION = 1
"""The header layout and codec set this code writes; readers refuse anything newer."""

FLAG_JSON_TAGS = 0x01
"""Set when a JSON body contains tagged values, so the reader turns on its object hook."""

_KNOWN_FLAGS = FLAG_JSON_TAGS
_HEADER = struct.Struct(">2sBBBBI")
HEADER_BYTES = _HEADER.size
"""Size of the header in bytes (10)."""

_MAX_LENGTH_BYTES = 0xFFFF_FFFF
_UPGRADE = "upgrade dspex-jobs on this reader (the workers) to decode it"


class Codec(IntEnum):
    """How a frame's body is encoded."""

    JSON = 0
    """Readable UTF-8 JSON; the fallback any tool can read."""
    MSGPACK = 1
    """MessagePack with extension types: the default, smaller and faster than JSON."""
    ARROW = 2
    """MessagePack whose tables and matrices are Arrow IPC streams."""


class Compression(IntEnum):
    """How a frame's body is compressed."""

    NONE = 0
    ZSTD = 1
    """Zstandard (the ``zstandard`` package), with a content size and checksum."""
    ZLIB = 2
    """zlib (stdlib, kombu's built-in), used where ``zstandard`` is missing."""


class FrameInfo(NamedTuple):
    """What a frame's header says (a named tuple: built for every message, so it is cheap).

    Attributes:
        version: Frame version.
        codec: How the body is encoded.
        compression: How the body is compressed.
        flags: Flag bits (:data:`FLAG_JSON_TAGS`).
        length_bytes: Body length before compression.
        size_bytes: The whole frame's length (header included), as stored or sent.
    """

    version: int
    codec: Codec
    compression: Compression
    flags: int
    length_bytes: int
    size_bytes: int

    def describe(self) -> str:
        """A short name such as ``msgpack+zstd``, for logs and claim references."""
        codec = self.codec.name.lower()
        if self.compression is Compression.NONE:
            return codec
        return f"{codec}+{self.compression.name.lower()}"


class Encoded:
    """A value already encoded as a frame, to be sent as it is.

    Put one inside a message (the :class:`~dspex_jobs.Client` sends each job as one): the
    ``dspex`` serializer embeds its bytes without encoding the value again, and the reader
    gets the original value back in its place. Its ``repr`` is what Celery shows as the
    task's ``argsrepr`` (in Flower and logs).

    Attributes:
        data: The frame's bytes.
        info: What its header says.
    """

    __slots__ = ("data", "info")

    def __init__(self, data: bytes, info: FrameInfo) -> None:
        self.data = data
        self.info = info

    def __repr__(self) -> str:
        return (
            f"<dspex frame {self.info.describe()}, {self.info.size_bytes} bytes, "
            f"{self.info.length_bytes} before compression>"
        )


class DecodeBudget:
    """Decompressed bytes a reader may still produce, shared by a frame and frames nested in it.

    A job frame travels inside the Celery message's frame; one budget for both keeps a
    message of many small compressed parts from inflating past the limit in total.

    Args:
        max_decompressed_bytes: The most bytes all frames of one message may inflate to.
        depth: How many frames deep the reader is (a frame may hold frames one level deep).
    """

    __slots__ = ("depth", "max_decompressed_bytes", "remaining_bytes")

    def __init__(self, max_decompressed_bytes: int, depth: int = 0) -> None:
        self.max_decompressed_bytes = max_decompressed_bytes
        self.remaining_bytes = max_decompressed_bytes
        self.depth = depth

    def spend(self, length_bytes: int) -> None:
        """Take ``length_bytes`` from the budget before inflating them.

        Raises:
            DecompressedTooLarge: Not enough budget left.
        """
        if length_bytes > self.remaining_bytes:
            spent = self.max_decompressed_bytes - self.remaining_bytes
            raise DecompressedTooLarge(
                f"frame declares {length_bytes} bytes, over the decompression limit of "
                f"{self.max_decompressed_bytes} (DSPEX_MAX_DECOMPRESSED_BYTES; "
                f"{spent} already used by this message)",
                size=length_bytes,
                limit=self.max_decompressed_bytes,
            )
        self.remaining_bytes -= length_bytes


def pack_frame(
    codec: Codec, compression: Compression, flags: int, length_bytes: int, body: bytes
) -> bytes:
    """Prefix ``body`` (already compressed, if ``compression`` says so) with its header."""
    if length_bytes > _MAX_LENGTH_BYTES:
        raise DecompressedTooLarge(
            f"a frame body holds at most {_MAX_LENGTH_BYTES} bytes, not {length_bytes}",
            size=length_bytes,
            limit=_MAX_LENGTH_BYTES,
        )
    return _HEADER.pack(MAGIC, FRAME_VERSION, codec, compression, flags, length_bytes) + body


def is_frame(data: bytes | bytearray | memoryview) -> bool:
    """Whether ``data`` starts like a frame (magic only; :func:`read_frame` checks the rest)."""
    return bytes(data[:2]) == MAGIC


def read_frame(data: bytes | bytearray | memoryview) -> tuple[FrameInfo, memoryview]:
    """Parse and check a frame's header; return it and a view of the (compressed) body.

    Raises:
        PayloadDecodeError: Not a frame, or truncated.
        ProtocolVersionError: Written by a newer dspex-jobs (version, codec, compression or
            flags this reader does not know).
    """
    view = memoryview(data)
    if len(view) < HEADER_BYTES or view[:2] != MAGIC:
        if view[:2] == MAGIC:
            raise PayloadDecodeError(
                f"truncated frame: {len(view)} bytes, shorter than the {HEADER_BYTES}-byte header"
            )
        raise PayloadDecodeError(
            f"not a dspex-jobs frame (starts with {bytes(view[:8])!r}, expected {MAGIC!r}); "
            "was it written by another serializer?"
        )
    _, version, codec_id, compression_id, flags, length = _HEADER.unpack_from(view)
    if version != FRAME_VERSION:
        if version > FRAME_VERSION:
            raise ProtocolVersionError(
                f"frame version {version} is newer than this dspex-jobs understands "
                f"({FRAME_VERSION}); {_UPGRADE}",
                version=version,
                known=FRAME_VERSION,
            )
        raise PayloadDecodeError(f"frame version {version} does not exist (corrupt header?)")
    if codec_id >= len(_CODECS):
        _unknown(Codec, codec_id, "codec")
    if compression_id >= len(_COMPRESSIONS):
        _unknown(Compression, compression_id, "compression")
    if flags & ~_KNOWN_FLAGS:
        raise ProtocolVersionError(
            f"frame flags {flags:#04x} include bits unknown to this dspex-jobs "
            f"(knows {_KNOWN_FLAGS:#04x}); {_UPGRADE}",
            flags=flags,
        )
    info = FrameInfo(
        version, _CODECS[codec_id], _COMPRESSIONS[compression_id], flags, length, len(view)
    )
    return info, view[HEADER_BYTES:]


def _unknown(enum: type[Codec] | type[Compression], value: int, what: str) -> NoReturn:
    known = ", ".join(f"{m.value} {m.name.lower()}" for m in enum)
    raise ProtocolVersionError(
        f"{what} id {value} is unknown to this dspex-jobs (knows {known}); {_UPGRADE}",
        **{what: value},
    )


_CODECS = tuple(Codec)  # ids are 0, 1, 2...: an id indexes its member
_COMPRESSIONS = tuple(Compression)
