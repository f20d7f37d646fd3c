"""TLS and authentication against a real redis-server, end to end through a real worker.

The server speaks only TLS (no plain-text port), with a certificate from a CA made in the
test, ``requirepass`` for the default user and an ACL user ``worker`` with its own password.
A job runs through a subprocess worker configured only by ``DSPEX_*`` variables; a wrong
password, a missing CA and a plain-text client each get a typed error that says what to fix;
the passwords appear in no log, no result, no ``health``/``metrics`` output and not in Flower.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import LM_API_KEY, LM_MODEL
from redis_topologies import TLSRedis, tls_unavailable

from dspex_jobs.client import Client
from dspex_jobs.connections import redis_client
from dspex_jobs.embedded import free_port
from dspex_jobs.errors import RedisAuthError, RedisTLSError
from dspex_jobs.health import check_health
from dspex_jobs.settings import Settings
from dspex_jobs.stack import LocalStack, settings_env

pytestmark = pytest.mark.integration

DEFAULT_PASSWORD = "s3cret-Default-pw"
WORKER_PASSWORD = "acl-W0rker-pw"
SECRETS = (DEFAULT_PASSWORD, WORKER_PASSWORD)


@pytest.fixture(scope="module")
def tls_redis() -> Iterator[TLSRedis]:
    reason = tls_unavailable()
    if reason:
        pytest.skip(f"TLS test skipped: {reason}")
    with TLSRedis(DEFAULT_PASSWORD, WORKER_PASSWORD) as server:
        yield server


def _values(server: TLSRedis, **overrides: Any) -> dict[str, Any]:
    return {
        "redis_url": f"rediss://127.0.0.1:{server.port}/1",
        "redis_username": "worker",
        "redis_password": WORKER_PASSWORD,
        "redis_tls_ca_file": server.files.ca,
        "socket_timeout_s": 3.0,
        **overrides,
    }


@pytest.fixture(scope="module")
def stack(tls_redis: TLSRedis, lm_server: Any) -> Iterator[LocalStack]:
    values = _values(tls_redis, lm_api_key=LM_API_KEY)
    with LocalStack(
        redis_url=values.pop("redis_url"),
        lm=LM_MODEL,
        lm_api_base=lm_server.url,
        queues=["general"],
        settings=values,
        worker_args={"general": ["--concurrency", "1"]},
    ) as running:
        yield running


def _assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a Redis password leaked into {where}"


def test_a_job_runs_end_to_end_over_tls_with_an_acl_user(stack: LocalStack) -> None:
    assert stack.settings is not None
    with Client(stack.settings) as client:
        handle = client.predict(
            "context, question -> answer",
            context="Redis speaks TLS on port 6380 here.",
            question="Which port does Redis speak TLS on?",
        )
        result = handle.result(timeout=60)
    assert result.outputs["answer"]
    _assert_no_secret(json.dumps(result.model_dump(mode="json")), "the job result")
    who = redis_client(stack.settings)
    assert who.acl_whoami() in ("worker", b"worker")  # the ACL user, not the default one
    who.close()


def test_no_password_in_worker_logs_health_metrics_or_repr(stack: LocalStack) -> None:
    assert stack.settings is not None
    env = stack.worker_env()
    outputs = {}
    for command in (["health", "-q", "general"], ["scaling-metrics"], ["metrics", "--once"]):
        out = subprocess.run(
            [sys.executable, "-m", "dspex_jobs", *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        _assert_no_secret(out.stdout + out.stderr, f"`dspex-jobs {' '.join(command)}`")
        outputs[command[0]] = out.stdout
    assert json.loads(outputs["scaling-metrics"])["queues"]["general"]["workers"] == 1
    assert "rediss://" in outputs["health"]
    log = "".join(w.log() for w in stack.workers)
    assert "rediss://" in log  # the banner names the broker...
    _assert_no_secret(log, "the worker log")  # ...with its password masked
    _assert_no_secret(repr(stack.settings), "repr(settings)")
    # A password written into the URL itself is masked too.
    in_url = Settings.from_env(
        environ={},
        redis_url=f"rediss://worker:{WORKER_PASSWORD}@"
        f"127.0.0.1:{stack.settings.redis_url.split(':')[2]}",
    )
    _assert_no_secret(repr(in_url) + in_url.redacted_redis_url(), "a URL with a password")


@pytest.mark.slow
def test_flower_shows_the_broker_without_its_password(stack: LocalStack) -> None:
    port = free_port()
    env = stack.worker_env()
    flower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "dspex_jobs.celery_app",
            "flower",
            f"--port={port}",
            "--address=127.0.0.1",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        page = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not page:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/broker", timeout=5) as r:
                    page = r.read().decode()
            except OSError:
                time.sleep(0.3)
        assert "rediss://" in page and "general" in page, page[-2000:]
        _assert_no_secret(page, "Flower's broker page")
    finally:
        os.killpg(flower.pid, 9)
        out = flower.communicate(timeout=10)[0].decode(errors="replace")
    _assert_no_secret(out, "Flower's log")


def test_wrong_password_is_a_typed_error_naming_the_setting(tls_redis: TLSRedis) -> None:
    settings = Settings.from_env(environ={}, **_values(tls_redis, redis_password="wrong-pw"))
    with Client(settings) as client, pytest.raises(RedisAuthError) as caught:
        client.ping("general")
    assert "DSPEX_REDIS_PASSWORD" in str(caught.value) and not caught.value.retryable
    report = check_health(settings)
    assert not report.ok and "DSPEX_REDIS_PASSWORD" in (report.error or "")
    _assert_no_secret(str(caught.value) + report.render(), "the auth error")


def test_plain_text_client_and_unknown_ca_are_tls_errors(tls_redis: TLSRedis) -> None:
    plain = Settings.from_env(
        environ={},
        **_values(
            tls_redis, redis_url=f"redis://127.0.0.1:{tls_redis.port}/1", redis_tls_ca_file=None
        ),
    )
    with Client(plain) as client, pytest.raises(RedisTLSError, match="rediss://"):
        client.ping("general")
    # kombu keys its process-wide connection pools by URL and transport options, not by TLS
    # options, so this client gets its own socket timeout to be sure to open a connection
    # of its own (one process normally has one Redis configuration).
    no_ca = Settings.from_env(
        environ={}, **_values(tls_redis, redis_tls_ca_file=None, socket_timeout_s=2.5)
    )
    with Client(no_ca) as client, pytest.raises(RedisTLSError, match="DSPEX_REDIS_TLS_CA_FILE"):
        client.ping("general")
    report = check_health(no_ca)
    assert not report.ok and "DSPEX_REDIS_TLS_CA_FILE" in (report.error or "")


def test_settings_reach_workers_as_environment(tls_redis: TLSRedis) -> None:
    settings = Settings.from_env(environ={}, **_values(tls_redis))
    env = settings_env(settings, ["redis_password", "redis_tls_ca_file", "redis_username"])
    assert Settings.from_env(
        environ={**env, "DSPEX_REDIS_URL": settings.redis_url}
    ) == settings.model_copy(update={"socket_timeout_s": 10.0})
