"""One HTTP attempt at a webhook: POST, bounded in time and bytes, redirects checked.

Plain :mod:`http.client`, so every limit is ours to set:

- the socket timeout (``DSPEX_WEBHOOK_TIMEOUT_S``) bounds connecting and each read, and a
  watchdog shuts the socket after twice that, so a server that trickles bytes cannot hold a
  worker thread either;
- at most ``DSPEX_WEBHOOK_MAX_RESPONSE_BYTES`` of the reply are read (it is only logged);
- a redirect is followed (the body POSTed again, at most three hops) only to the same
  scheme, host and port; a redirect anywhere else fails the delivery for good.

What is retried: timeouts, connection errors, 408, 425, 429 and 5xx (a ``Retry-After`` is
honoured up to the backoff cap). Other 4xx and refused redirects are permanent.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urljoin

from dspex_jobs.errors import ValidationError
from dspex_jobs.webhooks.urls import WebhookTarget, check_webhook_url

__all__ = ["AttemptOutcome", "post_webhook"]

MAX_REDIRECTS = 3
_RETRYABLE_STATUS = frozenset({408, 425, 429})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """How one attempt ended."""

    ok: bool
    retryable: bool
    status: int | None = None
    error: str | None = None
    retry_after_s: float | None = None


def post_webhook(
    target: WebhookTarget,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout_s: float,
    max_response_bytes: int,
    allowed_hosts: tuple[str, ...],
) -> AttemptOutcome:
    """POST ``body`` to ``target``, following same-origin redirects; never raises."""
    current = target
    for _ in range(MAX_REDIRECTS + 1):
        try:
            status, location, retry_after = _post_once(
                current, body, headers, timeout_s, max_response_bytes
            )
        except TimeoutError:
            return AttemptOutcome(False, True, error=f"timed out after {timeout_s} s")
        except ssl.SSLCertVerificationError as exc:
            return AttemptOutcome(False, False, error=f"TLS certificate refused: {exc}")
        except (OSError, http.client.HTTPException) as exc:
            return AttemptOutcome(False, True, error=f"{type(exc).__name__}: {exc}")
        if 200 <= status < 300:
            return AttemptOutcome(True, False, status=status)
        if status in _REDIRECTS and location:
            nxt = _redirect_target(current, location, allowed_hosts)
            if isinstance(nxt, str):
                return AttemptOutcome(False, False, status=status, error=nxt)
            current = nxt
            continue
        retryable = status >= 500 or status in _RETRYABLE_STATUS
        return AttemptOutcome(
            False,
            retryable,
            status=status,
            error=f"the endpoint answered {status}",
            retry_after_s=retry_after,
        )
    return AttemptOutcome(False, False, error=f"more than {MAX_REDIRECTS} redirects")


def _post_once(
    target: WebhookTarget,
    body: bytes,
    headers: Mapping[str, str],
    timeout_s: float,
    max_response_bytes: int,
) -> tuple[int, str | None, float | None]:
    conn: http.client.HTTPConnection
    if target.scheme == "https":
        conn = http.client.HTTPSConnection(
            target.host, target.port, timeout=timeout_s, context=ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout_s)
    conn.connect()  # bounded by timeout_s; the watchdog covers everything after it
    # Kept here: once a reply says the connection closes, http.client drops conn.sock.
    watchdog = threading.Timer(timeout_s * 2, _abort, args=(conn.sock,))
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.request("POST", target.path, body=body, headers=dict(headers))
        response = conn.getresponse()
        response.read(max_response_bytes)  # bounded; the reply is not used
        return (
            response.status,
            response.getheader("Location"),
            _retry_after(response.getheader("Retry-After")),
        )
    finally:
        watchdog.cancel()
        conn.close()


def _abort(sock: socket.socket | None) -> None:
    """Past the attempt's hard limit: wake the blocked read by shutting the socket."""
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _redirect_target(
    current: WebhookTarget, location: str, allowed_hosts: tuple[str, ...]
) -> WebhookTarget | str:
    """The redirect's target when it stays on the same origin, else why it is refused."""
    url = urljoin(current.url, location)
    try:
        nxt = check_webhook_url(url, allowed_hosts, field="redirect")
    except ValidationError as exc:
        return f"redirect refused: {exc}"
    if (nxt.scheme, nxt.host, nxt.port) != (current.scheme, current.host, current.port):
        return (
            f"redirect to another host refused ({current.scheme}://{current.origin} -> "
            f"{nxt.scheme}://{nxt.origin})"
        )
    return nxt


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: use our own backoff
