"""Which webhook URLs may be called: only ``http``/``https``, only allowlisted hosts.

Checked twice: by the producer when a job is submitted (a bad URL enqueues nothing) and by
the webhooks worker before every request (its own allowlist rules, and a redirect is
checked like a new URL). An empty allowlist turns webhooks off: a URL is never trusted
just because someone typed it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from dspex_jobs.errors import ValidationError

__all__ = ["WebhookTarget", "check_webhook_url", "host_allowed"]

_SCHEMES = ("http", "https")
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """A checked webhook URL, split the way the sender needs it."""

    url: str
    scheme: str
    host: str
    port: int
    path: str

    @property
    def origin(self) -> str:
        """``host:port``: what per-host limits and same-host redirects compare."""
        return f"{self.host}:{self.port}"


def check_webhook_url(
    url: str, allowed_hosts: tuple[str, ...], *, field: str = "webhook"
) -> WebhookTarget:
    """The parsed URL, if webhooks may go there.

    Raises:
        ValidationError: Not ``http``/``https``, no host, credentials in the URL, or a host
            that ``allowed_hosts`` (``DSPEX_WEBHOOK_ALLOWED_HOSTS``) does not list.
    """
    if not isinstance(url, str) or not url:
        raise ValidationError(f"{field}: expected an http(s) URL", field=field)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValidationError(f"{field}: not a valid URL ({exc})", field=field) from None
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise ValidationError(
            f"{field}: only http and https webhooks are sent, not "
            f"{scheme or 'a URL without a scheme'!r}",
            field=field,
        )
    host = (parts.hostname or "").lower()
    if not host:
        raise ValidationError(f"{field}: the URL has no host", field=field)
    if parts.username or parts.password:
        raise ValidationError(
            f"{field}: credentials in the URL are refused; authenticate "
            "webhooks by their signature",
            field=field,
        )
    port = port or _DEFAULT_PORTS[scheme]
    if not allowed_hosts:
        raise ValidationError(
            f"{field}: webhooks are off: no host is allowed (set DSPEX_WEBHOOK_ALLOWED_HOSTS)",
            field=field,
        )
    if not host_allowed(host, port, allowed_hosts):
        raise ValidationError(
            f"{field}: host {host}:{port} is not in DSPEX_WEBHOOK_ALLOWED_HOSTS",
            field=field,
            host=host,
            port=port,
        )
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return WebhookTarget(url=url, scheme=scheme, host=host, port=port, path=path)


def host_allowed(host: str, port: int, allowed_hosts: tuple[str, ...]) -> bool:
    """Whether ``host:port`` matches an entry: ``host``, ``host:port`` or ``*.domain``."""
    host = host.lower()
    for entry in allowed_hosts:
        entry = entry.lower()
        name, sep, entry_port = entry.rpartition(":")
        if sep and entry_port.isdigit():
            if int(entry_port) != port:
                continue
            entry = name
        if entry == host or (entry.startswith("*.") and host.endswith(entry[1:])):
            return True
    return False
