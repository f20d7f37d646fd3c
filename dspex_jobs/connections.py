"""The one place Redis clients are made: every client the project creates comes from here.

Broker, result backend, result store, sessions, leases, breakers, rate limits, streams,
caches: if each built its own client from ``settings.redis_url``, one of them would sooner
or later skip the TLS options, the ACL user or Sentinel and silently talk to a different
server, or in clear text. So:

- **redis-py clients** (sync): :func:`redis_client` (a new client and pool) or
  :func:`process_redis` (one per process, created after a fork). Async:
  :func:`async_redis_client`.
- **Celery** (broker and result backend): :func:`celery_redis_config`, used by
  :func:`dspex_jobs.app.make_app`.

Never call ``redis.Redis.from_url``, ``redis.Redis(...)`` or ``redis.asyncio.from_url``
elsewhere in ``dspex_jobs`` (``tests/unit/test_connections.py`` fails when a module does).

What settings cover (``DSPEX_*``, see :class:`~dspex_jobs.settings.Settings`):

- ``REDIS_URL``: ``redis://[user:pass@]host:port/db``, ``rediss://...`` (TLS),
  ``unix:///path.sock?db=0``, or ``sentinel://h1:26379;sentinel://h2:26379/db`` (kombu's
  form, one URL per Sentinel) with ``REDIS_SENTINEL_MASTER``.
- ``REDIS_USERNAME`` / ``REDIS_PASSWORD``: the ACL user and password, overriding the URL's,
  so the URL can live in a ConfigMap and the password in a Secret.
- ``REDIS_TLS_CA_FILE`` / ``REDIS_TLS_CERT_FILE`` / ``REDIS_TLS_KEY_FILE`` /
  ``REDIS_TLS_VERIFY``; ``REDIS_TLS`` turns TLS on for Sentinel deployments.
- ``REDIS_SENTINEL_PASSWORD``: the Sentinels' own ``requirepass``.

Secrets: the password goes into the URLs handed to Celery (the only way kombu takes one)
and Celery masks it wherever it shows a URL (worker banner, ``celery inspect``, Flower);
everything of ours prints :func:`~dspex_jobs.settings.redact_url` forms only.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import redis
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.sentinel import MasterNotFoundError

from dspex_jobs.errors import (
    BrokerUnavailable,
    ConfigurationError,
    RedisAuthError,
    RedisTLSError,
)
from dspex_jobs.settings import Settings

__all__ = [
    "REDIS_DOWN",
    "RedisTarget",
    "async_redis_client",
    "broker_error",
    "celery_redis_config",
    "describe_redis_error",
    "process_redis",
    "redis_client",
    "redis_target",
    "wait_for_redis",
]

REDIS_DOWN: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError)
"""What redis-py raises when the server is unreachable (not when a command is wrong)."""

HEALTH_CHECK_INTERVAL_S = 25
"""A pooled connection idle this long is PINGed before use (NAT and LB idle timeouts)."""

_CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}

_per_process: dict[tuple[int, RedisTarget], redis.Redis] = {}


@dataclass(frozen=True)
class RedisTarget:
    """Where and how to connect, parsed once from settings (hashable: a cache key).

    ``sentinels`` is non-empty for Sentinel deployments; then ``host``/``port`` are unused.
    """

    scheme: str
    host: str | None
    port: int | None
    db: int
    path: str | None
    username: str | None
    password: str | None = field(repr=False)
    tls: bool
    sentinels: tuple[tuple[str, int], ...]
    master: str | None
    sentinel_password: str | None = field(repr=False)
    ca_file: str | None
    cert_file: str | None
    key_file: str | None
    verify: str
    socket_timeout_s: float

    def ssl_options(self) -> dict[str, Any]:
        """redis-py / kombu / Celery TLS keywords (the same four names in all three)."""
        if not self.tls:
            return {}
        options: dict[str, Any] = {"ssl_cert_reqs": _CERT_REQS[self.verify]}
        if self.ca_file:
            options["ssl_ca_certs"] = self.ca_file
        if self.cert_file:
            options["ssl_certfile"] = self.cert_file
            options["ssl_keyfile"] = self.key_file
        if self.verify == "none":
            options["ssl_check_hostname"] = False
        return options

    def socket_options(self) -> dict[str, Any]:
        """Timeouts and keep-alive, the same for every client."""
        return {
            "socket_timeout": self.socket_timeout_s,
            "socket_connect_timeout": self.socket_timeout_s,
            "socket_keepalive": self.scheme != "unix",
            "health_check_interval": HEALTH_CHECK_INTERVAL_S,
        }

    def sentinel_options(self) -> dict[str, Any]:
        """Keywords for the connections to the Sentinels themselves."""
        options: dict[str, Any] = {
            "socket_timeout": self.socket_timeout_s,
            "socket_connect_timeout": self.socket_timeout_s,
        }
        if self.sentinel_password:
            options["password"] = self.sentinel_password
        if self.tls:
            options["ssl"] = True
            options.update(self.ssl_options())
        return options


def redis_target(settings: Settings) -> RedisTarget:
    """Parse ``settings.redis_url`` and the security settings into one :class:`RedisTarget`."""
    url = settings.redis_url
    scheme = url.split("://", 1)[0]
    sentinels: list[tuple[str, int]] = []
    if scheme == "sentinel":
        parts = [urlsplit(part) for part in url.split(";") if part.strip()]
        sentinels = [(p.hostname or "127.0.0.1", p.port or 26379) for p in parts]
        first = parts[0]
        paths = {p.path.strip("/") for p in parts} - {""}
        if len(paths) > 1:  # Settings cannot see this; it is a deployment mistake all the same
            raise ConfigurationError(f"sentinel URLs name different databases: {sorted(paths)}")
        first = first._replace(path="/" + (paths.pop() if paths else "0"))
    else:
        first = urlsplit(url)
    query = dict(q.split("=", 1) for q in first.query.split("&") if "=" in q)
    db_text = first.path.strip("/") if scheme != "unix" else query.get("db", "0")
    password = (
        settings.redis_password.get_secret_value()
        if settings.redis_password
        else unquote(first.password)
        if first.password
        else None
    )
    return RedisTarget(
        scheme=scheme,
        host=first.hostname if scheme != "unix" else None,
        port=first.port if scheme != "unix" else None,
        db=int(db_text or 0),
        path=first.path if scheme == "unix" else None,
        username=settings.redis_username or (unquote(first.username) if first.username else None),
        password=password,
        tls=settings.redis_uses_tls,
        sentinels=tuple(sentinels),
        master=settings.redis_sentinel_master,
        sentinel_password=(
            settings.redis_sentinel_password.get_secret_value()
            if settings.redis_sentinel_password
            else None
        ),
        ca_file=settings.redis_tls_ca_file,
        cert_file=settings.redis_tls_cert_file,
        key_file=settings.redis_tls_key_file,
        verify=settings.redis_tls_verify,
        socket_timeout_s=settings.socket_timeout_s,
    )


def _client_kwargs(target: RedisTarget) -> dict[str, Any]:
    kwargs: dict[str, Any] = {**target.socket_options(), "db": target.db}
    if target.username:
        kwargs["username"] = target.username
    if target.password:
        kwargs["password"] = target.password
    return kwargs


def redis_client(settings: Settings) -> redis.Redis:
    """A new client (with its own connection pool) for the configured Redis.

    With Sentinel, the client asks the Sentinels for the current primary and asks again
    after a connection error, so it follows a failover by itself.
    """
    from redis.sentinel import Sentinel

    client: redis.Redis = _build_client(redis_target(settings), redis.Redis, Sentinel)
    return client


def async_redis_client(settings: Settings) -> aioredis.Redis:
    """The asyncio twin of :func:`redis_client` (close it with ``await client.aclose()``)."""
    from redis.asyncio.sentinel import Sentinel

    client: aioredis.Redis = _build_client(redis_target(settings), aioredis.Redis, Sentinel)
    return client


def _build_client(target: RedisTarget, redis_class: Any, sentinel_class: Any) -> Any:
    """One construction for both flavours: ``redis_class`` over TCP, TLS, a Unix socket, or
    the primary that ``sentinel_class`` finds."""
    kwargs = _client_kwargs(target)
    if target.sentinels:
        ssl_kwargs = {"ssl": True, **target.ssl_options()} if target.tls else {}
        sentinel = sentinel_class(
            list(target.sentinels),
            sentinel_kwargs=target.sentinel_options(),
            **kwargs,
            **ssl_kwargs,
        )
        assert target.master is not None  # Settings refuses sentinel:// without it
        return sentinel.master_for(target.master, redis_class=redis_class)
    if target.scheme == "unix":
        kwargs.pop("socket_keepalive", None)
        kwargs.pop("socket_connect_timeout", None)
        return redis_class(unix_socket_path=target.path, **kwargs)
    return redis_class(
        host=target.host or "127.0.0.1",
        port=target.port or 6379,
        ssl=target.tls,
        **target.ssl_options(),
        **kwargs,
    )


def process_redis(settings: Settings) -> redis.Redis:
    """One client per process and target: a forked worker child never reuses its parent's
    sockets."""
    key = (os.getpid(), redis_target(settings))
    client = _per_process.get(key)
    if client is None:
        client = _per_process[key] = redis_client(settings)
    return client


def _with_credentials(url: str, target: RedisTarget) -> str:
    """``url`` with the configured user and password written in (kombu reads them only
    from the URL)."""
    if not (target.username or target.password):
        return url
    scheme, _, rest = url.partition("://")
    if "@" in rest.split("/", 1)[0]:
        rest = rest.split("@", 1)[1]
    creds = quote(target.username or "", safe="")
    if target.password:
        creds += ":" + quote(target.password, safe="")
    return f"{scheme}://{creds}@{rest}"


def celery_redis_config(settings: Settings) -> dict[str, Any]:
    """Celery settings that point the broker and the result backend at the same Redis as
    every other client: URLs (with credentials), TLS, Sentinel and socket options.

    Celery and kombu mask the password whenever they print these URLs.
    """
    target = redis_target(settings)
    sockets = target.socket_options()
    if target.sentinels:
        # One normalised URL per Sentinel, each naming the database: kombu reads it from
        # the first, Celery's result backend from each.
        url = ";".join(
            _with_credentials(f"sentinel://{host}:{port}/{target.db}", target)
            if i == 0
            else f"sentinel://{host}:{port}/{target.db}"
            for i, (host, port) in enumerate(target.sentinels)
        )
    else:
        url = _with_credentials(settings.redis_url, target)
    config: dict[str, Any] = {
        "broker_url": url,
        "result_backend": url,
        "broker_transport_options": dict(sockets),
        "redis_socket_timeout": target.socket_timeout_s,
        "redis_socket_connect_timeout": target.socket_timeout_s,
        "redis_socket_keepalive": target.scheme != "unix",
        "redis_backend_health_check_interval": HEALTH_CHECK_INTERVAL_S,
    }
    if target.tls:
        config["broker_use_ssl"] = target.ssl_options()
        config["redis_backend_use_ssl"] = target.ssl_options()
    if target.sentinels:
        sentinel = {"master_name": target.master, "sentinel_kwargs": target.sentinel_options()}
        config["broker_transport_options"].update(sentinel)
        config["result_backend_transport_options"] = dict(sentinel)
    return config


def broker_error(exc: BaseException, settings: Settings, doing: str) -> BrokerUnavailable:
    """The typed error for a failed Redis call: :class:`RedisAuthError` (credentials),
    :class:`RedisTLSError` (handshake, or TLS on one side only) or
    :class:`BrokerUnavailable`; the message says what was being done and what to check."""
    message = f"{doing}: {describe_redis_error(exc, settings)}"
    kind = _classify(exc, settings)
    cls = {"auth": RedisAuthError, "sentinel_auth": RedisAuthError, "tls": RedisTLSError}.get(
        kind, BrokerUnavailable
    )
    return cls(message)


def _classify(exc: BaseException, settings: Settings) -> str:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:  # kombu wraps redis-py's error
        seen.add(id(current))
        text = str(current)
        if isinstance(current, MasterNotFoundError):  # one line per Sentinel it asked
            return "sentinel_auth" if "AuthenticationError" in text else "no_master"
        if (
            isinstance(current, AuthenticationError)
            or "NOAUTH" in text
            or ("WRONGPASS" in text)
            or "invalid password" in text
        ):
            return "auth"
        if "SSL" in text or "certificate" in text or "TLS" in text:
            return "tls"
        if not settings.redis_uses_tls and (
            "Connection reset" in text or "Connection closed by server" in text
        ):
            # A TLS-only server drops a plain-text client, but so does a server that goes
            # away (a failover): only a server that completes a handshake is "tls".
            return "tls" if _speaks_tls(redis_target(settings)) else "down"
        current = current.__cause__ or current.__context__
    return "down"


def _speaks_tls(target: RedisTarget, timeout_s: float = 1.0) -> bool:
    """Whether the server completes a TLS handshake (failure paths only: one probe)."""
    if target.sentinels or target.scheme == "unix" or not target.host:
        return False
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # a probe: nothing is sent over it
    try:
        with (
            socket.create_connection((target.host, target.port or 6379), timeout_s) as raw,
            context.wrap_socket(raw, server_hostname=target.host),
        ):
            return True
    except OSError:
        return False


def describe_redis_error(exc: BaseException, settings: Settings) -> str:
    """A one-line reason a Redis connection failed, naming the setting to check.

    Never includes a password: the URL is redacted and redis-py's messages carry none.
    """
    where = settings.redacted_redis_url()
    text = str(exc) or type(exc).__name__
    kind = _classify(exc, settings)
    if kind == "sentinel_auth":
        return f"the Sentinels at {where} refused the password; check DSPEX_REDIS_SENTINEL_PASSWORD"
    if kind == "no_master":
        return (
            f"no Sentinel at {where} answered with a primary for "
            f"{settings.redis_sentinel_master!r}; check DSPEX_REDIS_SENTINEL_MASTER, the "
            "Sentinel addresses and, with TLS, DSPEX_REDIS_TLS / DSPEX_REDIS_TLS_CA_FILE"
        )
    if kind == "auth":
        return (
            f"Redis at {where} refused the credentials ({text}); check "
            "DSPEX_REDIS_USERNAME / DSPEX_REDIS_PASSWORD"
        )
    if kind == "tls" and settings.redis_uses_tls:
        return (
            f"TLS to Redis at {where} failed ({text}); check DSPEX_REDIS_TLS_CA_FILE "
            "and that the server speaks TLS on that port"
        )
    if kind == "tls":
        return (
            f"Redis at {where} closed the connection ({text}); if it only accepts TLS, "
            "use a rediss:// URL"
        )
    return f"cannot reach Redis at {where}: {text}"


def wait_for_redis(client: redis.Redis, timeout_s: float, interval_s: float = 0.5) -> bool:
    """Block until ``client`` answers PING or ``timeout_s`` passes; whether it answered."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            client.ping()
            return True
        except REDIS_DOWN:
            time.sleep(interval_s)
    return False
