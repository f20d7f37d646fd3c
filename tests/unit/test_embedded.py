from __future__ import annotations

import os

import redis

from dspex_jobs.embedded import EmbeddedRedis, find_redis_server


def test_starts_a_real_server_and_stops_it_without_leftovers() -> None:
    server = EmbeddedRedis().start()
    pid = server.process.pid if server.process else 0
    data_dir = server.data_dir
    client = redis.Redis.from_url(server.url)
    assert client.ping()
    assert client.info("server")["tcp_port"] == server.port
    client.close()
    server.stop()
    assert not os.path.exists(f"/proc/{pid}") or _is_zombie(pid)
    assert not os.path.exists(data_dir)


def test_append_only_survives_a_kill(tmp_path: object) -> None:
    data_dir = str(tmp_path)
    server = EmbeddedRedis(appendonly=True, data_dir=data_dir).start()
    redis.Redis.from_url(server.url).set("k", "v")
    server.kill()
    restarted = EmbeddedRedis(server.port, appendonly=True, data_dir=data_dir).start()
    try:
        assert redis.Redis.from_url(restarted.url).get("k") == b"v"
    finally:
        restarted.stop()


def test_finds_a_binary() -> None:
    assert os.access(find_redis_server(), os.X_OK)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] == "Z"
    except OSError:
        return True
