"""Results through the same layer: what a worker stores, as one frame.

The Celery result backend already uses the ``dspex`` serializer (``result_serializer``).
Our own result store (:mod:`dspex_jobs.store`) writes :class:`~dspex_jobs.results.JobResult`
records itself; these two functions let it store them as frames, with the same codecs,
compression and limits as messages, and still read records stored as JSON before it
switched (a frame starts with ``DX``, a JSON record with ``{``).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from dspex_jobs.errors import PayloadDecodeError
from dspex_jobs.protocol._codec import (
    DEFAULT_MAX_DECOMPRESSED_BYTES,
    DEFAULT_OPTIONS,
    EncodeOptions,
    decode,
    encode,
)
from dspex_jobs.protocol._frame import is_frame

__all__ = ["decode_result", "encode_result"]


def encode_result(result: Any, options: EncodeOptions = DEFAULT_OPTIONS) -> bytes:
    """A result (a pydantic model such as ``JobResult``, or any supported value) as a frame.

    Example:
        >>> decode_result(encode_result({"answer": "42", "scores": [0.5, 0.25]}))
        {'answer': '42', 'scores': [0.5, 0.25]}
    """
    if isinstance(result, BaseModel):
        result = result.model_dump(mode="python")
    return encode(result, options)


def decode_result(
    data: bytes | bytearray | str,
    *,
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES,
) -> Any:
    """The value :func:`encode_result` stored, or a JSON record stored before frames.

    Feed it to ``JobResult.model_validate`` to get the model back.

    Raises:
        PayloadDecodeError: Neither a frame nor JSON.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if is_frame(raw):
        return decode(raw, max_decompressed_bytes=max_decompressed_bytes)
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise PayloadDecodeError(f"a stored result is neither a frame nor JSON: {exc}") from None
