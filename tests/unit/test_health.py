from __future__ import annotations

import json

import redis
from click.testing import CliRunner

from dspex_jobs.cli import main
from dspex_jobs.health import check_health, queue_depth
from dspex_jobs.keys import Keys
from dspex_jobs.settings import Settings


def test_unreachable_redis_fails_with_the_reason() -> None:
    report = check_health(
        Settings.from_env({}, redis_url="redis://127.0.0.1:1/0", socket_timeout_s=0.5)
    )
    assert not report.ok and not report.redis_ok
    assert "Connection" in (report.error or "")
    assert report.render().startswith("FAIL redis")


def test_counts_depth_and_live_workers_per_queue(redis_url: str) -> None:
    # Given two messages waiting on general (one at a priority) and one live general worker
    client = redis.Redis.from_url(redis_url)
    client.lpush("general", "m1")
    client.lpush("general\x06\x163", "m2")
    client.set(
        Keys().worker_heartbeat("general@h"),
        json.dumps({"name": "general@h", "queues": ["general"]}),
        px=5000,
    )
    settings = Settings.from_env({}, redis_url=redis_url)
    # When health is checked
    report = check_health(settings)
    # Expect general healthy with depth 2; the queues without workers fail
    by_name = {q.name: q for q in report.queues}
    assert queue_depth(client, "general") == 2
    assert by_name["general"].depth == 2 and by_name["general"].workers == ["general@h"]
    assert not by_name["neural"].ok and not report.ok
    assert check_health(settings, ("general",)).ok


def test_cli_exit_status_and_json(redis_url: str, monkeypatch: object) -> None:
    runner = CliRunner()
    env = {"DSPEX_REDIS_URL": redis_url}
    failed = runner.invoke(main, ["health", "--json"], env=env)
    assert failed.exit_code == 1
    data = json.loads(failed.output)
    assert data["redis_ok"] is True and data["ok"] is False
    redis.Redis.from_url(redis_url).set(
        Keys().worker_heartbeat("w"), json.dumps({"name": "w", "queues": ["general"]}), px=5000
    )
    passed = runner.invoke(main, ["health", "--queue", "general"], env=env)
    assert passed.exit_code == 0, passed.output
    assert "general" in passed.output
