"""Real worker processes, started the way users start them, and a SIGKILLed pool child."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis
from conftest import LM_MODEL, redis_db_url

from dspex_jobs import Client, JobStatus
from dspex_jobs.embedded import EmbeddedRedis
from dspex_jobs.health import check_health
from dspex_jobs.stack import LocalStack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def slow_lm() -> Iterator[object]:
    """An LM server that takes 2 s per call, so a job is reliably mid-flight when killed."""
    from dspex_jobs.lmserver import LMServerConfig, LMServerProcess

    with LMServerProcess(LMServerConfig(port=0, latency_ms=2000)) as server:
        yield server


@pytest.fixture(scope="module")
def stack(redis_server: EmbeddedRedis, slow_lm: object) -> Iterator[LocalStack]:
    url = redis_db_url(redis_server, 2)
    redis.Redis.from_url(url).flushdb()
    with LocalStack(
        redis_url=url,
        lm=LM_MODEL,
        lm_api_base=slow_lm.url,  # type: ignore[attr-defined]
        queues=["general"],
        worker_args={"general": ["--pool", "prefork", "--concurrency", "1"]},
    ) as running:
        yield running


@pytest.fixture
def client(stack: LocalStack) -> Iterator[Client]:
    assert stack.settings is not None
    with Client(stack.settings) as c:
        yield c


def test_subprocess_worker_runs_predict(client: Client) -> None:
    result = client.predict(
        "question: str, context: list[str] -> answer: str",
        question="What color is the sky?",
        context=["The sky is blue.", "Grass is green."],
    ).result(timeout=60)
    assert result.outputs is not None
    assert result.outputs["answer"] in ("The sky is blue.", "Grass is green.")
    assert result.worker.startswith("general-")


def test_sigkilled_pool_child_gets_its_job_redelivered_and_completed(
    client: Client, stack: LocalStack
) -> None:
    # Given a job that is running in the worker's only pool child
    handle = client.predict("question -> answer", question="Will this survive a crash?")
    deadline = time.monotonic() + 30
    while handle.status() is not JobStatus.RUNNING:
        assert time.monotonic() < deadline, "job never started"
        time.sleep(0.05)
    children = _children(stack.workers[0].pid)
    assert children, "prefork worker has no pool child"
    # When that child is SIGKILLed mid-job
    for child in children:
        os.kill(child, signal.SIGKILL)
    # Expect the message to come back (reject_on_worker_lost) and the job to complete
    result = handle.result(timeout=60)
    assert result.ok and result.outputs is not None
    assert stack.workers[0].alive()
    assert "WorkerLostError" in stack.workers[0].log() or "exited" in stack.workers[0].log()


def test_plain_celery_command_runs_a_worker_too(stack: LocalStack, client: Client) -> None:
    # Given a worker started with the plain celery CLI on another queue
    env = {**stack.worker_env(), "DSPEX_NEURAL_CONCURRENCY": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "dspex_jobs.celery_app",
            "worker",
            "-Q",
            "neural",
            "-c",
            "1",
            "-n",
            "plain@%h",
            "--without-mingle",
            "-l",
            "warning",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert stack.settings is not None
        deadline = time.monotonic() + 60
        while not check_health(stack.settings, ("neural",)).ok:
            assert proc.poll() is None, "celery worker exited"
            assert time.monotonic() < deadline, "celery worker never became live"
            time.sleep(0.2)
        # When a ping is sent to its queue, expect that worker to answer
        result = client.ping(queue="neural").result(timeout=30)
        assert result.ok and result.worker.startswith("plain@")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found += [int(p) for p in f.read().split()]
    return found
