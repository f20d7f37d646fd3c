"""Redis clients built from settings, with the same timeouts everywhere.

Every Redis client the project creates comes from here, so that none of them silently talks
to another server or without the configured timeouts.
"""

from __future__ import annotations

import os
import time

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from dspex_jobs.settings import Settings

__all__ = ["REDIS_DOWN", "process_redis", "redis_client", "wait_for_redis"]

REDIS_DOWN: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError)
"""What redis-py raises when the server is unreachable (not when a command is wrong)."""

_per_process: dict[tuple[int, str], redis.Redis] = {}


def redis_client(settings: Settings) -> redis.Redis:
    """A new client (with its own connection pool) for ``settings.redis_url``."""
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=settings.socket_timeout_s,
        socket_keepalive=True,
        health_check_interval=25,
    )


def process_redis(settings: Settings) -> redis.Redis:
    """One client per process and URL: a forked worker child never reuses its parent's sockets."""
    key = (os.getpid(), settings.redis_url)
    client = _per_process.get(key)
    if client is None:
        client = _per_process[key] = redis_client(settings)
    return client


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
