"""A threads-pool worker enforces deadlines and cancellation itself (Celery does not there).

The worker's LM endpoint accepts connections and never answers (a hung provider), so only
the worker's own bounds can end the job. Database 38.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
import redis
from conftest import LM_MODEL, redis_db_url

from dspex_jobs.client import Client
from dspex_jobs.embedded import EmbeddedRedis
from dspex_jobs.errors import DeadlineExceeded, JobCancelled
from dspex_jobs.jobs import JobKind
from dspex_jobs.results import JobStatus
from dspex_jobs.stack import LocalStack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def hung_worker(redis_server: EmbeddedRedis) -> Iterator[LocalStack]:
    url = redis_db_url(redis_server, 38)
    redis.Redis.from_url(url).flushdb()
    with socket.socket() as black_hole:  # completes TCP handshakes, never replies
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(64)
        api_base = f"http://127.0.0.1:{black_hole.getsockname()[1]}/v1"
        stack = LocalStack(
            redis_url=url,
            lm=LM_MODEL,
            lm_api_base=api_base,
            queues=["general"],
            worker_args={"general": ["--pool", "threads", "--concurrency", "4"]},
            env={"DSPEX_LM_API_KEY": "k", "DSPEX_LM_TIMEOUT_S": "30", "DSPEX_JOB_MAX_RETRIES": "0"},
        )
        with stack:
            yield stack


def test_a_deadline_ends_a_hung_job_on_time(hung_worker: LocalStack) -> None:
    assert hung_worker.settings is not None
    with Client(hung_worker.settings) as client:
        started = time.monotonic()
        handle = client.submit(
            JobKind.PREDICT, "question -> answer", {"question": "q?"}, deadline_s=1.5
        )
        # Expect: DeadlineExceeded soon after the deadline, not after the LM's 30 s timeout
        with pytest.raises(DeadlineExceeded, match="reached its deadline"):
            handle.result(timeout=20)
        assert handle.status() is JobStatus.FAILED
        assert time.monotonic() - started < 10


def test_a_cancel_ends_a_hung_job_promptly(hung_worker: LocalStack) -> None:
    assert hung_worker.settings is not None
    with Client(hung_worker.settings) as client:
        handle = client.submit(JobKind.PREDICT, "question -> answer", {"question": "q2?"})
        deadline = time.monotonic() + 10
        while handle.status() is not JobStatus.RUNNING:
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.05)
        cancelled_at = time.monotonic()
        handle.cancel()
        # Expect: the job ends cancelled at once, not when the hung LM call gives up
        with pytest.raises(JobCancelled):
            handle.result(timeout=20)
        assert handle.status() is JobStatus.CANCELLED
        assert time.monotonic() - cancelled_at < 5
