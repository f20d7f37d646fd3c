"""Metrics and Flower against a real prefork worker process (Redis DB 29).

The worker serves ``/metrics`` (prometheus_client multiprocess mode: jobs run in pool
children, the main process serves their sum); ``dspex-jobs metrics`` reads queue depths from
Redis; ``dspex-jobs flower`` runs real Flower with basic auth, and its HTTP API shows our
tasks by their readable names."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from conftest import LM_API_KEY, LM_MODEL, redis_db_url
from prometheus_client.parser import text_string_to_metric_families

from dspex_jobs.cli import main
from dspex_jobs.client import Client
from dspex_jobs.embedded import EmbeddedRedis
from dspex_jobs.stack import LocalStack

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def stack(redis_server: EmbeddedRedis, lm_server: object) -> Iterator[tuple[LocalStack, int]]:
    url = redis_db_url(redis_server, 29)
    redis.Redis.from_url(url).flushdb()
    port = _free_port()
    stack = LocalStack(
        redis_url=url,
        lm=LM_MODEL,
        lm_api_base=lm_server.url,  # type: ignore[attr-defined]
        queues=["general"],
        worker_args={"general": ["--pool", "prefork", "--concurrency", "2"]},
        env={"DSPEX_LM_API_KEY": LM_API_KEY, "DSPEX_METRICS_PORT": str(port)},
    )
    with stack:
        yield stack, port


def _get(url: str, auth: tuple[str, str] | None = None, timeout_s: float = 5) -> Any:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return response.read().decode()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    deadline = time.monotonic() + 30
    while True:
        try:
            return _samples(_get(f"http://127.0.0.1:{port}/metrics"))
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _settled(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A scrape once every started ping has finished (the stack pings its worker at start)."""
    kq = {"kind": "ping", "queue": "general"}
    deadline = time.monotonic() + 15
    while True:
        samples = _scrape(port)
        if (
            _value(samples, "dspex_jobs_started_total", **kq)
            == _value(samples, "dspex_jobs_finished_total", **kq, status="succeeded")
            or time.monotonic() > deadline
        ):
            return samples
        time.sleep(0.1)


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_worker_metrics_move_when_jobs_run(stack: tuple[LocalStack, int]) -> None:
    local, port = stack
    assert local.settings is not None
    done = {"kind": "ping", "queue": "general", "status": "succeeded"}
    before = _settled(port)
    # When pings and a predict run on the prefork pool's children
    with Client(local.settings) as client:
        for handle in [client.ping() for _ in range(4)]:
            handle.result(timeout=60)
        client.predict(
            "question, context -> answer", question="Who?", context="Ada wrote it."
        ).result(timeout=60)
    after = _scrape(port)
    # Expect the children's counts summed on the main process's page
    assert (
        _value(after, "dspex_jobs_finished_total", **done)
        - _value(before, "dspex_jobs_finished_total", **done)
        == 4
    )
    assert _value(after, "dspex_job_duration_seconds_count", **done) >= 4
    assert _value(after, "dspex_lm_tokens_total", model=LM_MODEL, type="prompt") > 0
    assert _value(after, "dspex_lm_latency_seconds_count", model=LM_MODEL) >= 1
    # and the Redis-backed gauges
    assert _value(after, "dspex_workers_alive", queue="general") == 1
    assert ("dspex_queue_depth", (("queue", "general"),)) in after


def test_metrics_command_reads_queue_depths(stack: tuple[LocalStack, int]) -> None:
    local, _ = stack
    assert local.settings is not None
    redis.Redis.from_url(local.settings.redis_url).rpush("optimizer", b"x", b"y")
    try:
        result = CliRunner().invoke(
            main, ["metrics", "--once"], env={"DSPEX_REDIS_URL": local.settings.redis_url}
        )
    finally:
        redis.Redis.from_url(local.settings.redis_url).delete("optimizer")
    assert result.exit_code == 0, result.output
    samples = _samples(result.output)
    assert _value(samples, "dspex_queue_depth", queue="optimizer") == 2
    assert _value(samples, "dspex_workers_alive", queue="general") == 1


@pytest.fixture
def flower(stack: tuple[LocalStack, int]) -> Iterator[tuple[str, tuple[str, str]]]:
    local, _ = stack
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSPEX_")}
    env["DSPEX_REDIS_URL"] = local.settings.redis_url  # type: ignore[union-attr]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dspex_jobs",
            "flower",
            "--port",
            str(port),
            "--address",
            "127.0.0.1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        text=True,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()  # the generated password, printed once
        match = re.search(r"Flower login: (\S+) / (\S+)", line)
        assert match, line
        base = f"http://127.0.0.1:{port}"
        auth = (match.group(1), match.group(2))
        deadline = time.monotonic() + 30
        while True:
            try:
                _get(f"{base}/healthcheck", timeout_s=2)
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline and process.poll() is None, "no Flower"
                time.sleep(0.3)
        yield base, auth
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def _seen_whole(task: dict[str, Any] | None) -> bool:
    """Flower saw the task from its receipt (a job received before Flower subscribed has no
    name: without task-sent events the name comes from task-received) to its success."""
    return bool(task) and task["state"] == "SUCCESS" and task.get("name") is not None  # type: ignore[index]


def test_flower_shows_our_tasks_behind_authentication(
    stack: tuple[LocalStack, int],
    flower: tuple[str, tuple[str, str]],
) -> None:
    local, _ = stack
    base, auth = flower
    # Expect the API closed without credentials
    with pytest.raises(urllib.error.HTTPError) as refused:
        _get(f"{base}/api/workers")
    assert refused.value.code == 401
    # When jobs run while Flower listens
    tasks: dict[str, Any] = {}
    handles = []
    deadline = time.monotonic() + 40
    with Client(local.settings) as client:
        while time.monotonic() < deadline:
            handle = client.submit(
                "predict", "question -> answer", {"question": "Hi?"}, trace_id="trace-flower"
            )
            handle.result(timeout=60)
            handles.append(handle.id)
            time.sleep(0.5)
            tasks = json.loads(_get(f"{base}/api/tasks", auth))
            if any(_seen_whole(tasks.get(job_id)) for job_id in handles):
                break
    # Expect our task by its readable name, with the summary instead of the envelope
    shown = next(tasks[job_id] for job_id in handles if _seen_whole(tasks.get(job_id)))
    assert shown["name"] == "dspex.predict"
    assert (
        shown["args"] == "predict 'question -> answer' inputs=[question] queue=general "
        "trace=trace-flower"
    )
    assert "Hi?" not in json.dumps(shown)
    workers = json.loads(_get(f"{base}/api/workers?refresh=1", auth, timeout_s=20))
    assert any(name.startswith("general") for name in workers), list(workers)
