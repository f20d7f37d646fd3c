"""Sentinel and TLS together: every kind of client finds the primary through TLS-only
Sentinels that have their own password, and talks TLS to it with the data password.

The nodes and Sentinels listen on TLS ports only (``port 0``), so a client that skipped TLS
anywhere could not connect at all. Checked for the three kinds of client the project makes:
redis-py (``redis_client``), the kombu broker (a job submitted by ``Client``) and Celery's
Sentinel result backend.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis_topologies import MASTER, SentinelGroup, tls_unavailable

from dspex_jobs.client import Client
from dspex_jobs.connections import redis_client
from dspex_jobs.errors import BrokerUnavailable, RedisAuthError
from dspex_jobs.health import check_health
from dspex_jobs.settings import Settings

pytestmark = pytest.mark.integration

DATA_PASSWORD = "data-Pw-1"
SENTINEL_PASSWORD = "sentinel-Pw-2"


@pytest.fixture(scope="module")
def group() -> Iterator[SentinelGroup]:
    reason = tls_unavailable()
    if reason:
        pytest.skip(f"Sentinel TLS test skipped: {reason}")
    with SentinelGroup(
        tls=True, password=DATA_PASSWORD, sentinel_password=SENTINEL_PASSWORD
    ) as running:
        yield running


def _settings(group: SentinelGroup, **overrides: object) -> Settings:
    assert group.files is not None
    values = {
        "redis_url": group.url,
        "redis_sentinel_master": MASTER,
        "redis_password": DATA_PASSWORD,
        "redis_sentinel_password": SENTINEL_PASSWORD,
        "redis_tls": True,
        "redis_tls_ca_file": group.files.ca,
        "socket_timeout_s": 2.0,
        **overrides,
    }
    return Settings.from_env(environ={}, **values)


def test_every_client_kind_reaches_the_primary_over_tls(group: SentinelGroup) -> None:
    settings = _settings(group)
    client = redis_client(settings)
    assert client.connection_pool.get_master_address() == ("127.0.0.1", group.primary_port)
    client.delete("general")
    with Client(settings) as producer:
        producer.ping("general")  # kombu's Sentinel transport, over TLS
        assert producer.app.backend.client.ping()  # Celery's Sentinel result backend
    assert client.llen("general") == 1  # the message is on the primary
    client.delete("general")
    report = check_health(settings, ("general",))
    assert report.redis_ok and "sentinel://" in report.redis_url
    assert DATA_PASSWORD not in report.render() and SENTINEL_PASSWORD not in report.render()
    client.close()


@pytest.mark.slow  # redis-py tries every Sentinel, with retries: about 13 s
def test_a_wrong_sentinel_password_is_a_clear_error(group: SentinelGroup) -> None:
    report = check_health(_settings(group, redis_sentinel_password="wrong"), ("general",))
    assert not report.redis_ok
    assert "DSPEX_REDIS_SENTINEL_PASSWORD" in (report.error or ""), report.error
    assert len(report.error or "") < 300  # one sentence, not one repr per Sentinel


def test_a_wrong_master_name_names_the_setting(group: SentinelGroup) -> None:
    settings = _settings(group, redis_sentinel_master="no-such-master")
    with Client(settings) as producer, pytest.raises(BrokerUnavailable) as caught:
        producer.ping("general")
    assert "DSPEX_REDIS_SENTINEL_MASTER" in str(caught.value)
    assert not isinstance(caught.value, RedisAuthError)
