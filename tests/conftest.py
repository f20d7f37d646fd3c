"""Shared fixtures: a real redis-server, the real local LM server, real Celery workers.

Nothing here is mocked. Redis is one ``redis-server`` process for the session; each kind of
worker gets its own Redis database so that an in-process worker and a subprocess worker
never take each other's jobs.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from dspex_jobs.embedded import EmbeddedRedis
from dspex_jobs.settings import Settings

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

LM_MODEL = "openai/extractive-minilm"
LM_API_KEY = "test-key"
"""The session LM server requires this key, so a wrong key can be shown to fail."""


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's DSPEX_ settings."""
    for key in list(os.environ):
        if key.upper().startswith("DSPEX_") and not key.upper().startswith("DSPEX_TEST_"):
            monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    """One real redis-server for the whole session.

    64 databases, so each test module keeps one of its own (flushing it never disturbs
    another module): 1-15 are taken by the first modules, 16-19 pipeline, 20-23 optimizer,
    24-27 protocol, 28-31 observability, 32-35 webhooks, 36-39 caching, 40-43 scale-out.
    """
    with EmbeddedRedis(extra_args=["--databases", "64"]) as server:
        yield server


@pytest.fixture(scope="session")
def lm_server() -> Iterator[object]:
    """The local OpenAI-compatible LM server (extractive-minilm), as a real subprocess."""
    from dspex_jobs.lmserver import LMServerConfig, LMServerProcess

    with LMServerProcess(LMServerConfig(port=0, api_key=LM_API_KEY)) as server:
        yield server


def lm_requests(url: str) -> int:
    """How many chat completions an LM server has answered (its ``/stats``): what reached it."""
    request = urllib.request.Request(
        f"{url}/stats", headers={"Authorization": f"Bearer {LM_API_KEY}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(json.loads(response.read())["chat_completions"])


def redis_db_url(server: EmbeddedRedis, db: int) -> str:
    """The server's URL for one database number."""
    return f"redis://127.0.0.1:{server.port}/{db}"


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> Iterator[str]:
    """A flushed database (15) for tests that talk to Redis without workers."""
    import redis

    url = redis_db_url(redis_server, 15)
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


def make_settings(redis_url: str, lm_url: str | None = None, **overrides: object) -> Settings:
    """Settings for tests, independent of the environment."""
    values: dict[str, object] = {"redis_url": redis_url, "lm": LM_MODEL, **overrides}
    if lm_url:
        values["lm_api_base"] = lm_url
        values.setdefault("lm_api_key", LM_API_KEY)
    return Settings.from_env(environ={}, **values)


@contextmanager
def inprocess_worker(
    settings: Settings, *, concurrency: int = 2, queues: tuple[str, ...] = ("general",)
) -> Iterator[object]:
    """A real Celery worker (threads pool) in this process, on a flushed database.

    Yields the worker's Celery app; build a ``Client(app.dspex_settings, app=app)`` on it.
    """
    from celery.contrib.testing.worker import start_worker

    from dspex_jobs.app import make_app
    from dspex_jobs.connections import redis_client
    from dspex_jobs.worker import install_worker_hooks

    flusher = redis_client(settings)  # the factory: TLS, ACL user and Sentinel settings apply
    flusher.flushdb()
    flusher.close()
    app = make_app(settings)
    install_worker_hooks(app)
    with start_worker(
        app,
        pool="threads",
        concurrency=concurrency,
        perform_ping_check=False,
        queues=list(queues),
        shutdown_timeout=30,
    ):
        yield app
