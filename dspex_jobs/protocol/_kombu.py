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
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from kombu.serialization import register

from dspex_jobs.errors import PayloadDecodeError
from dspex_jobs.protocol._codec import (
    DEFAULT_MAX_DECOMPRESSED_BYTES,
    DEFAULT_OPTIONS,
    EncodeOptions,
    decode,
    encode,
)

__all__ = [
    "CONTENT_TYPE",
    "SERIALIZER_NAME",
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
        _limit["bytes"] = max_decompressed_bytes if first else max(_limit["bytes"],
                                                                   max_decompressed_bytes)
        _options_by_name.setdefault(SERIALIZER_NAME, DEFAULT_OPTIONS)
        _options_by_name.setdefault(name, options)
        if name != SERIALIZER_NAME:
            register(name, _encoder(options), _decode, content_type=CONTENT_TYPE,
                     content_encoding="binary")
        # Registered last, so that kombu names the content type "dspex" in its errors.
        register(SERIALIZER_NAME, _encoder(DEFAULT_OPTIONS), _decode, content_type=CONTENT_TYPE,
                 content_encoding="binary")
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
        raise PayloadDecodeError(
            f"a {CONTENT_TYPE} body must be bytes, not {type(data).__name__}"
        )
    return decode(data, max_decompressed_bytes=_limit["bytes"])
