"""The wire protocol: JSON, MessagePack and Arrow in one self-describing frame.

Every Celery message body, claim-checked payload and (optionally) stored result is a
*frame*: a 10-byte header (magic ``DX``, frame version, codec, compression, flags, length)
and a body. The ``dspex`` kombu serializer writes and reads frames, so any worker decodes
any message, and one that meets a newer frame says to upgrade instead of guessing.

- **Codecs** (:class:`Codec`): MessagePack by default, with extension types for bytes,
  datetimes, numpy arrays (raw buffers) and tables (column by column); Arrow IPC for
  matrices (and tables, when forced) inside the MessagePack body; JSON as the readable
  fallback. Any ``dict``/``list`` subclass (Celery's canvas) travels as a plain one. Never
  pickle.
- **Auto-selection** per message (``DSPEX_PROTOCOL_CODEC=auto``): tables by columns, Arrow
  parts for 2-D numeric arrays, MessagePack for the rest; the setting forces one codec.
- **Compression** (:class:`Compression`) with zstd above ``DSPEX_COMPRESS_THRESHOLD_BYTES``
  (zlib where ``zstandard`` is missing); inflating is bounded by
  ``DSPEX_MAX_DECOMPRESSED_BYTES``.
- **Claim checks**: above ``DSPEX_CLAIM_CHECK_THRESHOLD_BYTES`` the Client stores the frame
  in Redis and sends a reference; the worker fetches it.

Example:
    >>> from dspex_jobs.protocol import decode, encode
    >>> decode(encode({"question": "why?", "n": 3, "blob": b"\\x00\\x01"}))
    {'question': 'why?', 'n': 3, 'blob': b'\\x00\\x01'}

pyarrow, numpy and zstandard are imported only when a message needs them.
"""

from dspex_jobs.protocol._claim import CLAIM_KEY, check_in, check_out, is_claim
from dspex_jobs.protocol._codec import (
    DEFAULT_COMPRESS_THRESHOLD_BYTES,
    DEFAULT_MAX_DECOMPRESSED_BYTES,
    CodecName,
    CompressionName,
    EncodeOptions,
    decode,
    encode,
    encode_frame,
    inspect_frame,
)
from dspex_jobs.protocol._frame import (
    FRAME_VERSION,
    HEADER_BYTES,
    MAGIC,
    Codec,
    Compression,
    Encoded,
    FrameInfo,
    is_frame,
)
from dspex_jobs.protocol._guard import check_task_body, install_message_guard
from dspex_jobs.protocol._kombu import (
    CONTENT_TYPE,
    SERIALIZER_NAME,
    decoder_limit_bytes,
    is_dspex_serializer,
    register_serializer,
)
from dspex_jobs.protocol._results import decode_result, encode_result
from dspex_jobs.protocol._select import ARROW_MIN_ROWS

__all__ = [
    # Encoding and decoding
    "EncodeOptions",
    "CodecName",
    "CompressionName",
    "decode",
    "encode",
    "encode_frame",
    "inspect_frame",
    # The frame
    "Codec",
    "Compression",
    "Encoded",
    "FrameInfo",
    "FRAME_VERSION",
    "HEADER_BYTES",
    "MAGIC",
    "is_frame",
    # Defaults
    "ARROW_MIN_ROWS",
    "DEFAULT_COMPRESS_THRESHOLD_BYTES",
    "DEFAULT_MAX_DECOMPRESSED_BYTES",
    # kombu / Celery
    "CONTENT_TYPE",
    "SERIALIZER_NAME",
    "decoder_limit_bytes",
    "is_dspex_serializer",
    "register_serializer",
    "check_task_body",
    "install_message_guard",
    # Claim checks
    "CLAIM_KEY",
    "check_in",
    "check_out",
    "is_claim",
    # Results
    "decode_result",
    "encode_result",
]
