"""Webhook signatures: HMAC-SHA256 over the timestamp and the exact body bytes.

Every request carries::

    X-Dspex-Delivery:  the delivery id (the same on every attempt: deduplicate on it)
    X-Dspex-Timestamp: Unix seconds when this attempt was signed
    X-Dspex-Signature: v1=<hex HMAC-SHA256 of  b"<timestamp>." + body>

The timestamp is inside the signed bytes, so a receiver that refuses timestamps older than
a few minutes refuses replays, and nobody can refresh an old request's timestamp without
the secret. Each attempt is signed again (a retry an hour later still verifies).
``docs/webhooks.md`` has a ten-line receiver that ``tests/integration/test_webhooks.py``
runs.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

__all__ = [
    "DELIVERY_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "sign",
    "signature_headers",
    "verify_signature",
]

DELIVERY_HEADER = "X-Dspex-Delivery"
TIMESTAMP_HEADER = "X-Dspex-Timestamp"
SIGNATURE_HEADER = "X-Dspex-Signature"
EVENT_HEADER = "X-Dspex-Event"
ATTEMPT_HEADER = "X-Dspex-Attempt"

DEFAULT_TOLERANCE_S = 300
"""Oldest (or furthest in the future) timestamp :func:`verify_signature` accepts."""


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-Dspex-Signature`` value for ``body`` signed at ``timestamp``."""
    digest = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"v1={digest.hexdigest()}"


def signature_headers(
    secret: bytes, body: bytes, delivery_id: str, now: float | None = None
) -> dict[str, str]:
    """The delivery, timestamp and signature headers of one attempt."""
    timestamp = int(time.time() if now is None else now)
    return {
        DELIVERY_HEADER: delivery_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, body),
    }


def verify_signature(
    secret: bytes,
    body: bytes,
    headers: Mapping[str, str],
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """Whether a received webhook is ours, unchanged and recent (for Python receivers).

    ``headers`` is any mapping with the request's headers (case as sent). Compares in
    constant time.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    timestamp = lowered.get(TIMESTAMP_HEADER.lower(), "")
    given = lowered.get(SIGNATURE_HEADER.lower(), "")
    if not timestamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), given)
