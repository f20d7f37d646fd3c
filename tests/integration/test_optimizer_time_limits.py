"""The optimizer pool's own Celery time limits, on real prefork worker processes (databases
60 and 61; each scenario has its own LocalStack worker, started with short limits).

- past the SOFT limit (``DSPEX_OPTIMIZER_SOFT_TIME_LIMIT_S``) the job fails with a typed,
  stored ``optimize_time_limit``, is not retried, is dead-lettered, and the same worker runs
  the next job;
- past the HARD limit (``DSPEX_OPTIMIZER_HARD_TIME_LIMIT_S``, soft limit off, so nothing in
  the job can stop it) Celery kills the pool child; the worker's main process stores the same
  typed failure (the producer does not wait forever), the message is acknowledged (it never
  runs again), and the worker survives and runs the next job.

The job's own cooperative ``time_limit_s`` stays far away (6 h), so only the pool's limits act.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from conftest import LM_API_KEY, LM_MODEL, redis_db_url

from dspex_jobs.client import Client
from dspex_jobs.errors import OptimizeTimeLimit
from dspex_jobs.keys import Keys
from dspex_jobs.resilience.deadletter import DeadLetters
from dspex_jobs.results import JobStatus
from dspex_jobs.stack import LocalStack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SOFT_DB, HARD_DB = 60, 61
SOFT_LIMIT_S = 2
HARD_LIMIT_S = 3
LEASE_TTL_S = 2
LM_LATENCY_MS = 300
"""Slow enough that the long job below needs well over 10 s, whatever the CPU."""
SIGNATURE = "question -> answer"


def _rows(count: int, offset: int = 0) -> list[dict[str, str]]:
    return [
        {
            "question": f"Item {i} is kept in box {i % 7}. Where is item {i} kept?",
            "answer": f"Item {i} is kept in box {i % 7}.",
        }
        for i in range(offset, offset + count)
    ]


@pytest.fixture(scope="module")
def slow_lm() -> Iterator[Any]:
    from dspex_jobs.lmserver import LMServerConfig, LMServerProcess

    with LMServerProcess(
        LMServerConfig(port=0, api_key=LM_API_KEY, latency_ms=LM_LATENCY_MS)
    ) as server:
        yield server


def _stack(redis_server: Any, slow_lm: Any, db: int, limits: dict[str, str]) -> LocalStack:
    url = redis_db_url(redis_server, db)
    redis.Redis.from_url(url).flushdb()
    env = {
        "DSPEX_LM_API_KEY": LM_API_KEY,
        "DSPEX_LEASE_TTL_S": str(LEASE_TTL_S),
        "DSPEX_OPTIMIZER_CONCURRENCY": "1",
        "DSPEX_OPTIMIZER_NUM_THREADS": "2",
        "DSPEX_OPTIMIZER_PROGRESS_INTERVAL_S": "0.1",
        **limits,
    }
    return LocalStack(
        redis_url=url, lm=LM_MODEL, lm_api_base=slow_lm.url, queues=("optimizer",), env=env
    )


@pytest.fixture(scope="module")
def soft_stack(redis_server: Any, slow_lm: Any) -> Iterator[LocalStack]:
    with _stack(
        redis_server,
        slow_lm,
        SOFT_DB,
        {
            "DSPEX_OPTIMIZER_SOFT_TIME_LIMIT_S": str(SOFT_LIMIT_S),
            "DSPEX_OPTIMIZER_HARD_TIME_LIMIT_S": "60",
        },
    ) as stack:
        yield stack
    redis.Redis.from_url(redis_db_url(redis_server, SOFT_DB)).flushdb()


@pytest.fixture(scope="module")
def hard_stack(redis_server: Any, slow_lm: Any) -> Iterator[LocalStack]:
    with _stack(
        redis_server,
        slow_lm,
        HARD_DB,
        {
            "DSPEX_OPTIMIZER_SOFT_TIME_LIMIT_S": "0",  # no soft limit: only the kill stops it
            "DSPEX_OPTIMIZER_HARD_TIME_LIMIT_S": str(HARD_LIMIT_S),
        },
    ) as stack:
        yield stack
    redis.Redis.from_url(redis_db_url(redis_server, HARD_DB)).flushdb()


def _long_job(client: Client, program: str) -> Any:
    """A random search that needs far longer than either limit (slow LM, 5 evaluations)."""
    return client.optimize(
        program=program,
        signature=SIGNATURE,
        optimizer="BootstrapFewShotWithRandomSearch",
        trainset=_rows(20),
        valset=_rows(20, 100),
        metric="token_f1",
        num_candidate_programs=2,
        max_bootstrapped_demos=2,
    )


def _next_job_runs_on(client: Client, worker_name: str) -> None:
    """A short optimization right after: the same worker process takes and finishes it."""
    handle = client.optimize(
        program="after-limit",
        signature=SIGNATURE,
        optimizer="LabeledFewShot",
        trainset=_rows(4),
        k=2,
    )
    result = handle.result(timeout=60)
    assert result.status is JobStatus.SUCCEEDED
    assert result.worker == worker_name


def _wait_for_log(worker: Any, text: str, timeout_s: float = 10) -> None:
    """Celery's own log line of the limit (written around the time our result is stored)."""
    deadline = time.monotonic() + timeout_s
    while text not in worker.log():
        if time.monotonic() > deadline:
            lines = [line for line in worker.log().splitlines() if "limit" in line.lower()]
            raise AssertionError(f"no {text!r} in the worker log:\n" + "\n".join(lines))
        time.sleep(0.1)


def _failure_of(client: Client, job_id: str, limit_s: int) -> tuple[Any, float]:
    """Wait for the job's typed failure; return its stored result and how long the job ran
    (from its task's start in the pool child to the stored failure)."""
    handle = client.job(job_id)
    with pytest.raises(OptimizeTimeLimit) as caught:
        handle.result(timeout=60)
    assert caught.value.code == "optimize_time_limit"
    assert caught.value.details["time_limit_s"] == limit_s
    stored = client._store.get(job_id)
    assert stored is not None and stored.status is JobStatus.FAILED
    ran_s = stored.timings.finished_at - stored.timings.started_at
    print(f"{job_id}: stopped after {ran_s:.2f} s (limit {limit_s} s)")
    return stored, ran_s


def test_soft_limit_fails_the_job_typed_and_the_worker_goes_on(soft_stack: LocalStack) -> None:
    assert soft_stack.settings is not None
    with Client(soft_stack.settings) as client:
        keys = Keys(client.settings.key_prefix)
        # Given a job that needs far longer than the pool's soft limit
        handle = _long_job(client, "qa-soft")
        # When the soft limit passes, expect a typed, stored failure soon after
        stored, ran_s = _failure_of(client, handle.id, SOFT_LIMIT_S)
        assert SOFT_LIMIT_S - 0.5 < ran_s < SOFT_LIMIT_S + 10, f"stopped after {ran_s:.1f} s"
        assert "soft time limit" in stored.error.message
        # not retried, dead-lettered, and nothing stored in the registry
        assert stored.attempt == 1
        assert int(client._redis.get(keys.optimize_starts(handle.id)) or 0) == 1
        letter = DeadLetters(client._redis, keys).get(handle.id)
        assert letter is not None and letter["error"]["code"] == "optimize_time_limit"
        assert client.programs.versions("qa-soft") == []
        # And Celery's soft limit is what fired, and the same worker runs the next job
        (worker,) = soft_stack.workers
        _wait_for_log(worker, "Soft time limit")
        _next_job_runs_on(client, str(stored.worker))
        assert worker.alive()


def test_hard_limit_kills_the_child_stores_a_failure_and_the_worker_survives(
    hard_stack: LocalStack,
) -> None:
    assert hard_stack.settings is not None
    with Client(hard_stack.settings) as client:
        keys = Keys(client.settings.key_prefix)
        (worker,) = hard_stack.workers
        # Given a job that needs far longer than the hard limit, with no soft limit set
        handle = _long_job(client, "qa-hard")
        # When the hard limit passes, expect the child killed and a typed failure stored
        stored, ran_s = _failure_of(client, handle.id, HARD_LIMIT_S)
        assert HARD_LIMIT_S - 0.5 < ran_s < HARD_LIMIT_S + 10, f"settled after {ran_s:.1f} s"
        assert "hard time limit" in stored.error.message
        _wait_for_log(worker, "Hard time limit")
        letter = DeadLetters(client._redis, keys).get(handle.id)
        assert letter is not None and letter["error"]["code"] == "optimize_time_limit"
        # The message was acknowledged and its lease dropped: after the lease would have
        # lapsed, it has not run again and its failure still stands
        time.sleep(LEASE_TTL_S + 1)
        assert client._redis.hlen("unacked") == 0
        assert not client._redis.exists(keys.lease(handle.id))
        assert int(client._redis.get(keys.optimize_starts(handle.id)) or 0) == 1
        assert client._store.get(handle.id) == stored
        assert client.programs.versions("qa-hard") == []
        # And the worker's main process survives and runs the next job in a new child
        assert worker.alive()
        _next_job_runs_on(client, str(stored.worker))
