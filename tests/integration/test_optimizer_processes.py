"""Optimizer jobs across real worker processes (dspex_jobs.stack.LocalStack, database 21).

- a program stored by one process is loaded by another and answers the same;
- under a visibility timeout far shorter than the job, redelivered copies never run it twice;
- a hard-killed optimizer worker's job is taken over by another worker within a bound and
  resumes from its checkpoints.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from conftest import LM_API_KEY, LM_MODEL, redis_db_url

from dspex_jobs.client import Client
from dspex_jobs.keys import Keys
from dspex_jobs.results import JobStatus
from dspex_jobs.stack import LocalStack, WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

DB = 21
VISIBILITY_TIMEOUT_S = 3
LEASE_TTL_S = 2
SIGNATURE = "question -> answer"
LM_LATENCY_MS = 100


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
    """An LM server of the module's own that takes LM_LATENCY_MS per call, so a long job is
    long on a fast machine too: the lease test needs a job that outlives the visibility
    timeout several times over, whatever the CPU."""
    from dspex_jobs.lmserver import LMServerConfig, LMServerProcess

    with LMServerProcess(
        LMServerConfig(port=0, api_key=LM_API_KEY, latency_ms=LM_LATENCY_MS)
    ) as server:
        yield server


@pytest.fixture(scope="module")
def stack(redis_server: Any, slow_lm: Any) -> Iterator[LocalStack]:
    url = redis_db_url(redis_server, DB)
    redis.Redis.from_url(url).flushdb()
    env = {
        "DSPEX_LM_API_KEY": LM_API_KEY,
        "DSPEX_VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S),
        "DSPEX_LEASE_TTL_S": str(LEASE_TTL_S),
        "DSPEX_OPTIMIZER_NUM_THREADS": "2",
        "DSPEX_OPTIMIZER_PROGRESS_INTERVAL_S": "0.1",
    }
    local = LocalStack(
        redis_url=url,
        lm=LM_MODEL,
        lm_api_base=slow_lm.url,
        queues=("general", "optimizer"),
        env=env,
    )
    with local:
        local.add_worker("optimizer")  # a second one, to take jobs over
        local.wait_for_workers()
        yield local
    redis.Redis.from_url(url).flushdb()


@pytest.fixture
def client(stack: LocalStack) -> Iterator[Client]:
    assert stack.settings is not None
    with Client(stack.settings) as producer:
        yield producer


def _worker_running(
    stack: LocalStack, client: Client, job_id: str, timeout_s: float = 60
) -> WorkerProcess:
    """The worker process whose pool runs the job (from the job's state record)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = client._store.state(job_id) or {}
        name = str(state.get("worker", ""))
        for worker in stack.workers:
            if worker.queue == "optimizer" and name.startswith(f"optimizer-{worker.pid}@"):
                return worker
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never started on an optimizer worker")


def test_program_round_trips_to_another_process(stack: LocalStack, client: Client) -> None:
    import dspy

    from dspex_jobs.programs.loader import load_version

    # Given a program optimized and stored by an optimizer worker process
    handle = client.optimize(
        program="qa-proc", signature=SIGNATURE, optimizer="LabeledFewShot", trainset=_rows(6), k=3
    )
    ref = handle.result(timeout=120).outputs["program"]
    question = "Item 99 is kept in box 1. Where is item 99 kept?"
    # When a general worker process answers with it, and this process loads it too
    remote = client.predict(program=ref, question=question).result(timeout=60).outputs
    stored = client.programs.get(ref)
    local_module = load_version(stored)
    assert stack.settings is not None
    lm = dspy.LM(LM_MODEL, api_base=stack.settings.lm_api_base, api_key=LM_API_KEY, cache=False)
    with dspy.context(lm=lm):
        local = local_module(question=question).toDict()
    # Expect the same demos and the same answer everywhere
    assert [d["question"] for d in local_module.demos] == [
        d["question"] for d in stored.state["demos"]
    ]
    assert remote == local
    # And an exported-then-imported copy answers the same too
    copy = client.programs.import_(client.programs.export(ref), name="qa-proc-copy")
    again = client.predict(program=copy.ref, question=question).result(timeout=60).outputs
    assert again == remote and copy.metadata["imported_from"] == ref


def test_lease_prevents_double_runs_under_short_visibility_timeout(
    stack: LocalStack,
    client: Client,
) -> None:
    keys = Keys(client.settings.key_prefix)
    # Given a job that runs far longer than the visibility timeout, and two optimizer workers
    handle = client.optimize(
        program="qa-lease",
        signature=SIGNATURE,
        optimizer="BootstrapFewShotWithRandomSearch",
        trainset=_rows(40),
        valset=_rows(40, 100),
        metric="token_f1",
        num_candidate_programs=2,
        max_bootstrapped_demos=2,
    )
    started = time.monotonic()
    result = handle.result(timeout=240)
    elapsed = time.monotonic() - started
    # Expect it to outlive several redeliveries, yet its body started once and stored once
    assert result.status is JobStatus.SUCCEEDED
    assert elapsed > 2 * VISIBILITY_TIMEOUT_S, f"too fast ({elapsed:.1f} s) to prove anything"
    assert int(client._redis.get(keys.optimize_starts(handle.id)) or 0) == 1
    assert int(client._redis.get(keys.duplicate_results()) or 0) == 0
    assert [v.version for v in client.programs.versions("qa-lease")] == [1]


def test_killed_worker_job_is_taken_over_and_resumes(stack: LocalStack, client: Client) -> None:
    keys = Keys(client.settings.key_prefix)
    # Given a random search running on one optimizer worker, past its first checkpoint
    handle = client.optimize(
        program="qa-takeover",
        signature=SIGNATURE,
        optimizer="BootstrapFewShotWithRandomSearch",
        trainset=_rows(40),
        valset=_rows(40, 200),
        metric="token_f1",
        num_candidate_programs=2,
        max_bootstrapped_demos=2,
    )
    victim = _worker_running(stack, client, handle.id)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        progress = handle.progress()
        if progress is not None and progress.trials_done >= 1:
            break
        time.sleep(0.05)
    # When that worker is killed outright (no warm shutdown, no ack, no lease release)
    os.killpg(victim.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    stack.workers.remove(victim)
    victim.process.wait(10)  # type: ignore[union-attr]
    # Expect another worker to take it over within the bound, resume, and finish it
    # (the bound: the visibility timeout, the restore sweep, the dead lease, a new child)
    bound_s = VISIBILITY_TIMEOUT_S + 1 + LEASE_TTL_S + 10
    taker = _worker_running(stack, client, handle.id, timeout_s=bound_s + 30)
    taken_over_s = time.monotonic() - killed_at
    assert taker is not victim
    result = handle.result(timeout=180)
    assert result.status is JobStatus.SUCCEEDED
    assert taken_over_s < bound_s, f"taken over after {taken_over_s:.1f} s"
    print(f"taken over {taken_over_s:.1f} s after the kill (bound {bound_s} s)")
    assert int(client._redis.get(keys.optimize_starts(handle.id)) or 0) == 2
    assert handle.progress().resumed is True
    assert len(client.programs.get(result.outputs["program"]).metadata["candidates"]) == 5
