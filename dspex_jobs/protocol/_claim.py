"""Claim checks: a large payload waits in Redis under a key, and the message carries a reference.

A Celery message sits in a Redis list; a multi-MB one makes every ``LPUSH``/``BRPOP``
on that queue (and every redelivery scan) move the whole body, and Celery decodes each
task message twice. So above ``claim_check_threshold_bytes`` the producer stores the
encoded frame under ``dspex:payload:<job id>`` with a TTL and sends a reference instead::

    {"$claim": "dspex:payload:<job id>", "codec": "arrow+zstd", "size": 1234567,
     "id": "<job id>", "kind": "predict", "created_at": 1718000000.0}

The worker fetches and decodes the frame before running the job; neither side's caller
sees the difference.

The stored copy is left to expire, never deleted on read: a retry (``task.retry``) resends
the same reference, and a worker lost mid-job gets the message redelivered, so the
payload must outlive every attempt. Its TTL is the result TTL (a day by default), the
horizon within which anything about the job is kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis

from dspex_jobs.errors import ClaimCheckMissing, PayloadDecodeError, PayloadTooLarge
from dspex_jobs.protocol._codec import DEFAULT_MAX_DECOMPRESSED_BYTES, decode
from dspex_jobs.protocol._frame import Encoded, read_frame

__all__ = ["CLAIM_KEY", "check_in", "check_out", "is_claim"]

CLAIM_KEY = "$claim"
"""The key that marks a claim-check reference."""


def is_claim(payload: Any) -> bool:
    """Whether a task argument is a claim-check reference."""
    return type(payload) is dict and CLAIM_KEY in payload


def check_in(
    client: redis.Redis, key: str, frame: Encoded, *, ttl_s: int, **meta: Any
) -> dict[str, Any]:
    """Store ``frame`` under ``key`` for ``ttl_s`` seconds; return the reference to send.

    Args:
        client: The Redis to store in (the one workers read results from).
        key: Where (``Keys.payload(job_id)``).
        frame: The encoded payload.
        ttl_s: How long it is kept.
        meta: JSON-able facts to carry in the reference (the job's id and kind, so that a
            worker can report a missing payload against the right job).
    """
    client.set(key, frame.data, ex=ttl_s)
    return {CLAIM_KEY: key, "codec": frame.info.describe(), "size": frame.info.size_bytes, **meta}


def check_out(
    client: redis.Redis,
    reference: Mapping[str, Any],
    *,
    key_prefix: str,
    max_payload_bytes: int | None = None,
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES,
) -> Any:
    """Fetch and decode the payload a reference points to.

    Args:
        client: The Redis the producer stored it in.
        reference: What :func:`check_in` returned.
        key_prefix: Claim keys must start with this (``Keys.payload("")``): a message
            cannot make a worker read any other key.
        max_payload_bytes: Refuse payloads longer than this before compression.
        max_decompressed_bytes: Decompression budget.

    Raises:
        ClaimCheckMissing: The key expired or was deleted.
        PayloadDecodeError: A bad reference, or a stored value that is not its frame.
        PayloadTooLarge: Over ``max_payload_bytes``.
    """
    key = reference.get(CLAIM_KEY)
    if not isinstance(key, str) or not key.startswith(key_prefix):
        raise PayloadDecodeError(f"claim check {key!r} is not a key under {key_prefix!r}")
    data = client.get(key)
    if data is None:
        raise ClaimCheckMissing(
            f"the payload of job {reference.get('id')!r} ({key}) is gone: it expired or was "
            "deleted before a worker took the job; resubmit it, and keep DSPEX_RESULT_TTL_S "
            "above the time jobs wait in the queue",
            key=key,
        )
    if not isinstance(data, bytes):
        raise PayloadDecodeError(f"claim check {key} must be read as bytes (decode_responses off)")
    if len(data) != reference.get("size", len(data)):
        raise PayloadDecodeError(
            f"claim check {key} holds {len(data)} bytes, the reference says {reference['size']}"
        )
    info, _ = read_frame(data)
    if max_payload_bytes is not None and info.length_bytes > max_payload_bytes:
        raise PayloadTooLarge(
            f"claimed payload {key} is {info.length_bytes} bytes encoded, over this worker's "
            f"limit of {max_payload_bytes} (DSPEX_MAX_PAYLOAD_BYTES)",
            size=info.length_bytes,
            limit=max_payload_bytes,
        )
    return decode(data, max_decompressed_bytes=max_decompressed_bytes)
