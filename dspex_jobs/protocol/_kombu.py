"""The ``dspex`` kombu serializer: every Celery message body is one frame.

One content type, ``application/x-dspex``, carries every frame; its decoder reads the
frame header, so a worker decodes any message whatever codec, compression or settings
the producer used. Encoders can differ, though: each :class:`EncodeOptions` gets its own
serializer *name* (``dspex`` for the defaults, ``dspex-<options>`` otherwise) sharing that
content type, because kombu's registry is one per process while settings are one per app.

kombu's registry is process-global, and so is the decoder's budget: it is the largest
``max_decompressed_bytes`` any app in the process registered (one process normally holds
one app; the largest keeps a second app from failing the first one's messages).

How Celery treats what the decoder raises (Celery 5.7, checked in the tests): kombu wraps
any decoder error in ``kombu.exceptions.DecodeError`` (the typed error is its
``__context__`` and first argument); the worker's consumer logs it as "Can't decode message
body", acknowledges the message so it is not redelivered forever, and carries on. Content
types outside ``accept_content`` (pickle) raise ``ContentDisallowed`` and are rejected
unread. Celery decodes each task message twice (the consumer, to build the request, and
the pool, to run it), which is one more reason large payloads travel by reference.

kombu's own message compression (a ``compression`` header: zlib, bzip2, lzma) is inflated
in ``Message.__init__``, before ``accept_content`` is checked and with no bound at all: a
10 KB body can ask a worker for gigabytes. :func:`register_serializer` therefore replaces
those decoders with bounded ones (same budget as frames; kombu's encoders are kept), and
registers zstd (from ``zstandard``, bounded) where kombu has none, so ``task_compression
= "zstd"`` works too. Over the budget, the message fails to decode like any other: logged,
acknowledged, and the worker carries on.
"""

from __future__ import annotations

import bz2
import lzma
import threading
import zlib
from collections.abc import Callable
from functools import partial
from typing import Any

from kombu import compression as kombu_compression
from kombu.serialization import register

from dspex_jobs.errors import DecompressedTooLarge, PayloadDecodeError
from dspex_jobs.protocol._codec import (
    DEFAULT_MAX_DECOMPRESSED_BYTES,
    DEFAULT_OPTIONS,
    EncodeOptions,
    decode,
    encode,
)
from dspex_jobs.protocol._compress import compress, zstd_available
from dspex_jobs.protocol._frame import Compression

__all__ = [
    "CONTENT_TYPE",
    "SERIALIZER_NAME",
    "bound_kombu_compression",
    "decoder_limit_bytes",
    "is_dspex_serializer",
    "register_serializer",
]

CONTENT_TYPE = "application/x-dspex"
"""The content type of every message body this package writes."""

SERIALIZER_NAME = "dspex"
"""The serializer name for the default options (and in ``accept_content``)."""

_lock = threading.Lock()
_options_by_name: dict[str, EncodeOptions] = {}
_limit = {"bytes": DEFAULT_MAX_DECOMPRESSED_BYTES}


def register_serializer(
    options: EncodeOptions = DEFAULT_OPTIONS,
    *,
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES,
) -> str:
    """Register the serializer for ``options`` with kombu; return its name.

    Idempotent and thread-safe. The default ``dspex`` name is always registered too, so
    ``accept_content=["dspex", ...]`` resolves.

    Example:
        >>> register_serializer()
        'dspex'
        >>> register_serializer(EncodeOptions(codec="json"))
        'dspex-json-auto-16384-64'
    """
    name = SERIALIZER_NAME if options == DEFAULT_OPTIONS else f"{SERIALIZER_NAME}-{options.token()}"
    with _lock:
        first = not _options_by_name
        _limit["bytes"] = (
            max_decompressed_bytes if first else max(_limit["bytes"], max_decompressed_bytes)
        )
        _options_by_name.setdefault(SERIALIZER_NAME, DEFAULT_OPTIONS)
        _options_by_name.setdefault(name, options)
        if name != SERIALIZER_NAME:
            register(
                name,
                _encoder(options),
                _decode,
                content_type=CONTENT_TYPE,
                content_encoding="binary",
            )
        # Registered last, so that kombu names the content type "dspex" in its errors.
        register(
            SERIALIZER_NAME,
            _encoder(DEFAULT_OPTIONS),
            _decode,
            content_type=CONTENT_TYPE,
            content_encoding="binary",
        )
        bound_kombu_compression()
    return name


def is_dspex_serializer(name: str | None) -> bool:
    """Whether ``name`` is a serializer :func:`register_serializer` registered."""
    return name is not None and name in _options_by_name


def decoder_limit_bytes() -> int:
    """The decompression budget the kombu decoder gives each message."""
    return _limit["bytes"]


def _encoder(options: EncodeOptions) -> Callable[[Any], Any]:
    return partial(encode, options=options)


def _decode(data: Any) -> Any:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise PayloadDecodeError(f"a {CONTENT_TYPE} body must be bytes, not {type(data).__name__}")
    return decode(data, max_decompressed_bytes=_limit["bytes"])


def bound_kombu_compression() -> None:
    """Give kombu's compression methods decoders bounded by :func:`decoder_limit_bytes`.

    Idempotent. Encoders are kombu's own; zstd is added (from ``zstandard``) if kombu has
    no zstd of its own.
    """
    bounded = {
        "application/x-gzip": _inflate_zlib,
        "application/x-bz2": _inflate_bz2,
        "application/x-lzma": _inflate_lzma,
    }
    get_encoder: Any = kombu_compression.get_encoder  # its stub says it returns a callable
    for content_type, inflate in bounded.items():
        encoder, _ = get_encoder(content_type)
        kombu_compression.register(encoder, inflate, content_type)
    if "application/zstd" not in kombu_compression.encoders() and zstd_available():
        kombu_compression.register(
            partial(compress, method=Compression.ZSTD),
            _inflate_zstd,
            "application/zstd",
            aliases=["zstd", "zstandard"],
        )


def _too_large(method: str) -> DecompressedTooLarge:
    limit = _limit["bytes"]
    return DecompressedTooLarge(
        f"{method} message body inflates past {limit} bytes (DSPEX_MAX_DECOMPRESSED_BYTES); "
        "refused",
        limit=limit,
    )


def _inflate_zlib(body: bytes) -> bytes:
    inflater = zlib.decompressobj()
    out = inflater.decompress(body, _limit["bytes"] + 1)
    if len(out) > _limit["bytes"] or inflater.unconsumed_tail:
        raise _too_large("zlib")
    return out


def _inflate_bz2(body: bytes) -> bytes:
    out = bz2.BZ2Decompressor().decompress(body, max_length=_limit["bytes"] + 1)
    if len(out) > _limit["bytes"]:
        raise _too_large("bzip2")
    return out


def _inflate_lzma(body: bytes) -> bytes:
    out = lzma.LZMADecompressor().decompress(body, max_length=_limit["bytes"] + 1)
    if len(out) > _limit["bytes"]:
        raise _too_large("lzma")
    return out


def _inflate_zstd(body: bytes) -> bytes:
    import zstandard

    with zstandard.ZstdDecompressor().stream_reader(body) as reader:
        out: bytes = reader.read(_limit["bytes"] + 1)
    if len(out) > _limit["bytes"]:
        raise _too_large("zstd")
    return out
