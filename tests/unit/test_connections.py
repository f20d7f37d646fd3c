"""The connection factory: one parse of the Redis settings, used by every client.

These tests need no server: they check what each client would be built with, that the Celery
broker and backend get the same TLS/Sentinel/credentials as redis-py clients, that the
password is masked wherever Celery prints a URL, and that no module in ``dspex_jobs``
builds a Redis client of its own.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import pytest
from redis.sentinel import SentinelConnectionPool

from dspex_jobs.app import make_app
from dspex_jobs.connections import (
    async_redis_client,
    celery_redis_config,
    redis_client,
    redis_target,
)
from dspex_jobs.errors import ConfigurationError
from dspex_jobs.settings import Settings, redact_url

PACKAGE = Path(__file__).resolve().parents[2] / "dspex_jobs"
SECRET = "Hunter2-pw"


def _settings(**values: object) -> Settings:
    return Settings.from_env(environ={}, **values)


def test_plain_url_credentials_and_database() -> None:
    target = redis_target(_settings(redis_url=f"redis://alice:{SECRET}@10.0.0.5:6380/3"))
    assert (target.host, target.port, target.db) == ("10.0.0.5", 6380, 3)
    assert (target.username, target.password, target.tls) == ("alice", SECRET, False)
    assert SECRET not in repr(target)


def test_password_setting_overrides_the_url_and_is_never_printed() -> None:
    settings = _settings(
        redis_url="redis://10.0.0.5:6379/0", redis_username="worker", redis_password=SECRET
    )
    target = redis_target(settings)
    assert (target.username, target.password) == ("worker", SECRET)
    assert SECRET not in repr(settings) and SECRET not in repr(target)
    kwargs = redis_client(settings).connection_pool.connection_kwargs
    assert kwargs["username"] == "worker" and kwargs["password"] == SECRET


def test_rediss_gets_the_ca_and_client_certificate_everywhere(tmp_path: Path) -> None:
    ca, cert, key = (str(tmp_path / n) for n in ("ca.pem", "c.pem", "k.pem"))
    settings = _settings(
        redis_url="rediss://redis.internal:6380/1",
        redis_tls_ca_file=ca,
        redis_tls_cert_file=cert,
        redis_tls_key_file=key,
    )
    expected = {
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
        "ssl_ca_certs": ca,
        "ssl_certfile": cert,
        "ssl_keyfile": key,
    }
    sync_kwargs = redis_client(settings).connection_pool.connection_kwargs
    assert {k: sync_kwargs[k] for k in expected} == expected
    async_kwargs = async_redis_client(settings).connection_pool.connection_kwargs
    assert {k: async_kwargs[k] for k in expected} == expected
    config = celery_redis_config(settings)
    assert config["broker_use_ssl"] == expected == config["redis_backend_use_ssl"]
    app = make_app(settings)
    assert app.conf.broker_use_ssl == expected


def test_sentinel_clients_follow_the_master_name() -> None:
    settings = _settings(
        redis_url="sentinel://s1:26379;sentinel://s2:26379;sentinel://s3/2",
        redis_sentinel_master="dspex",
        redis_password=SECRET,
        redis_sentinel_password="sentinel-pw",
    )
    target = redis_target(settings)
    assert target.sentinels == (("s1", 26379), ("s2", 26379), ("s3", 26379))
    assert target.db == 2
    pool = redis_client(settings).connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "dspex"
    assert pool.connection_kwargs["password"] == SECRET
    config = celery_redis_config(settings)
    assert config["broker_url"].split(";")[1:] == ["sentinel://s2:26379/2", "sentinel://s3:26379/2"]
    for options in (config["broker_transport_options"], config["result_backend_transport_options"]):
        assert options["master_name"] == "dspex"
        assert options["sentinel_kwargs"]["password"] == "sentinel-pw"


def test_celery_masks_the_password_wherever_it_prints_a_url() -> None:
    settings = _settings(
        redis_url="sentinel://s1:26379;sentinel://s2:26379/0",
        redis_sentinel_master="dspex",
        redis_password=SECRET,
        redis_sentinel_password="sentinel-pw",
    )
    app = make_app(settings)
    assert SECRET in app.conf.broker_url  # kombu reads the password only from the URL...
    shown = [
        app.connection().as_uri(),
        app.backend.as_uri(),  # worker banner, Flower
        app.conf.humanize(with_defaults=False),
    ]  # `celery inspect conf`, reports
    for text in shown:  # ...and masks it whenever it shows one
        assert SECRET not in text and "sentinel-pw" not in text, text


def test_the_same_target_for_every_client_kind() -> None:
    settings = _settings(redis_url="rediss://u@h:1/4", redis_password=SECRET)
    config = celery_redis_config(settings)
    assert config["broker_url"] == config["result_backend"] == f"rediss://u:{SECRET}@h:1/4"
    kwargs = redis_client(settings).connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("h", 1, 4)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"redis_url": "sentinel://s1:26379"}, "DSPEX_REDIS_SENTINEL_MASTER"),
        ({"redis_tls_ca_file": "/ca.pem"}, "not TLS"),
        ({"redis_tls": True}, "rediss://"),
        ({"redis_url": "rediss://h/0", "redis_tls_cert_file": "/c.pem"}, "go together"),
        ({"redis_url": "http://h/0"}, "must start with"),
    ],
)
def test_inconsistent_security_settings_are_refused(
    values: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        _settings(**values, redis_password=SECRET)
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value.details)


def test_sentinel_urls_that_disagree_on_the_database_are_refused() -> None:
    settings = _settings(redis_url="sentinel://a/1;sentinel://b/2", redis_sentinel_master="m")
    with pytest.raises(ConfigurationError, match="different databases"):
        redis_target(settings)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"redis://:{SECRET}@h:6379/0", "redis://:***@h:6379/0"),
        (f"rediss://u:{SECRET}@h/0", "rediss://u:***@h/0"),
        (f"sentinel://:{SECRET}@a:1;sentinel://b:2/0", "sentinel://:***@a:1;sentinel://b:2/0"),
        (
            f"unix:///run/redis.sock?db=1&password={SECRET}",
            "unix:///run/redis.sock?db=1&password=***",
        ),
        ("redis://h:6379/0", "redis://h:6379/0"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


BYPASS = re.compile(
    r"Redis\.from_url|redis\.Redis\(|StrictRedis|aioredis\.Redis\(|"
    r"\bfrom_url\(|Sentinel\(|ConnectionPool\(|redis\.asyncio\.from_url"
)


def test_no_module_builds_its_own_redis_client() -> None:
    """Every client comes from dspex_jobs.connections, so none skips TLS, the ACL user or
    Sentinel. A module that needs Redis takes a client, or calls redis_client(settings)."""
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "connections.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if BYPASS.search(line) and not line.lstrip().startswith("#")
    ]
    assert not offenders, "use dspex_jobs.connections instead:\n" + "\n".join(offenders)
