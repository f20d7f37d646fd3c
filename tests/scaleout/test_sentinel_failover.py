"""Sentinel failover with real processes: jobs keep running after the primary dies.

A primary (AOF on, ``min-replicas-to-write 1``), one replica and three Sentinels run on
loopback; two subprocess workers and this test's producer reach them only through a
``sentinel://`` URL and the master name. Jobs run; the primary is SIGKILLed while some jobs
are running and others wait in the queue; the Sentinels promote the replica; the same
producer and the same workers go on, and every job submitted after the failover completes.

What happens to the jobs that were in flight is measured and printed as one JSON line
(``failover:``), and is what ``docs/deployment.md`` reports. The LM answers after
``DSPEX_TEST_FAILOVER_LATENCY_MS`` (default 800 ms) so that jobs are caught mid-run.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import LM_API_KEY, LM_MODEL
from redis_topologies import MASTER, SentinelGroup

from dspex_jobs.client import Client, JobHandle
from dspex_jobs.errors import BrokerUnavailable, DSPexError, JobTimeout
from dspex_jobs.results import JobStatus
from dspex_jobs.scaling import queue_metrics
from dspex_jobs.stack import LocalStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

IN_FLIGHT = int(os.environ.get("DSPEX_TEST_FAILOVER_JOBS", "6"))
LATENCY_MS = float(os.environ.get("DSPEX_TEST_FAILOVER_LATENCY_MS", "800"))
VISIBILITY_S = 6
"""Unacknowledged messages come back after this: it bounds the wait for redelivered jobs."""

SIGNATURE = "context, question -> answer"
INPUTS = {
    "context": "Sentinel promotes a replica when the primary fails.",
    "question": "What does Sentinel promote?",
}


@pytest.fixture(scope="module")
def group() -> Iterator[SentinelGroup]:
    with SentinelGroup(down_after_ms=1000) as running:
        yield running


@pytest.fixture(scope="module")
def stack(group: SentinelGroup) -> Iterator[LocalStack]:
    from dspex_jobs.lmserver import LMServerConfig, LMServerProcess

    with (
        LMServerProcess(LMServerConfig(latency_ms=LATENCY_MS, api_key=LM_API_KEY)) as lm,
        LocalStack(
            redis_url=group.url,
            lm=LM_MODEL,
            lm_api_base=lm.url,
            queues=["general", "general"],
            worker_args={"general": ["--concurrency", "1"]},
            settings={
                "redis_sentinel_master": MASTER,
                "lm_api_key": LM_API_KEY,
                "visibility_timeout_s": VISIBILITY_S,
                "lease_ttl_s": 4.0,
                "socket_timeout_s": 2.0,
                "retry_backoff_s": 0.2,
                "job_max_retries": 5,
            },
        ) as running,
    ):
        yield running


def _submit_until_accepted(client: Client, deadline_s: float) -> tuple[JobHandle, int]:
    """Submit one job, retrying while Redis fails over; the handle and the refusals."""
    refused = 0
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return client.predict(SIGNATURE, inputs=INPUTS), refused
        except BrokerUnavailable:
            refused += 1
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _outcome(handle: JobHandle, timeout_s: float) -> dict[str, Any]:
    try:
        result = handle.result(timeout=timeout_s)
        return {"status": result.status.value, "attempt": result.attempt}
    except JobTimeout:
        return {"status": "lost"}
    except DSPexError as exc:
        return {"status": "failed", "code": exc.code}


def test_jobs_survive_a_primary_failover(group: SentinelGroup, stack: LocalStack) -> None:
    assert stack.settings is not None
    client = Client(stack.settings)
    before = [client.predict(SIGNATURE, inputs=INPUTS) for _ in range(2)]
    assert all(h.result(timeout=60).outputs["answer"] for h in before)

    in_flight = [client.predict(SIGNATURE, inputs=INPUTS) for _ in range(IN_FLIGHT)]
    deadline = time.monotonic() + 30
    while not any(h.status() is JobStatus.RUNNING for h in in_flight):
        assert time.monotonic() < deadline, "no job started"
        time.sleep(0.05)
    # What an autoscaler reads (ops/k8s/): the workers' heartbeats report the jobs they hold.
    seen_in_flight = 0
    while not seen_in_flight and time.monotonic() < deadline:
        seen_in_flight = queue_metrics(stack.settings, ("general",))["queues"]["general"][
            "in_flight"
        ]
        time.sleep(0.1)
    assert seen_in_flight >= 1
    running_at_kill = sum(h.status() is JobStatus.RUNNING for h in in_flight)

    killed_at = time.monotonic()
    group.primary.kill()
    promotion: list[float] = []
    watcher = threading.Thread(target=lambda: promotion.append(group.wait_for_promotion(30)))
    watcher.start()
    # The producer keeps submitting through the failover; each job is accepted once
    # Sentinel names the new primary.
    after, refused = [], 0
    for _ in range(4):
        handle, refusals = _submit_until_accepted(client, deadline_s=30)
        after.append(handle)
        refused += refusals
    all_accepted_s = time.monotonic() - killed_at
    watcher.join(35)
    assert promotion, "the Sentinels did not promote the replica"
    assert group.current_primary_port() == group.replica_port

    results_after = [h.result(timeout=60) for h in after]
    assert all(r.status is JobStatus.SUCCEEDED and r.outputs["answer"] for r in results_after)
    outcomes = [_outcome(h, timeout_s=VISIBILITY_S * 4 + 30) for h in in_flight]
    # Let any message whose ack was lost in the failover come back (visibility timeout plus
    # one restore sweep), so the count of dropped redelivered copies below is complete.
    time.sleep(VISIBILITY_S + 2)
    summary = {
        "in_flight": IN_FLIGHT,
        "running_at_kill": running_at_kill,
        "promoted_after_s": round(promotion[0], 2),
        "submits_refused_during_failover": refused,
        "all_new_accepted_after_s": round(all_accepted_s, 2),
        "completed_first_attempt": sum(
            o.get("attempt") == 1 for o in outcomes if o["status"] == "succeeded"
        ),
        "completed_after_retry": sum(
            (o.get("attempt") or 1) > 1 for o in outcomes if o["status"] == "succeeded"
        ),
        "failed": [o for o in outcomes if o["status"] == "failed"],
        "lost": sum(o["status"] == "lost" for o in outcomes),
        # A job that finished while its ack could not reach Redis comes back after the
        # visibility timeout; the worker sees its result and drops the copy.
        "redelivered_copies_dropped": sum(
            w.log().count("dropped a redelivered copy") for w in stack.workers
        ),
    }
    print("failover:", json.dumps(summary))
    # Every in-flight job was replicated before the kill (min-replicas-to-write 1), so none
    # is lost: each finishes, on its first attempt or after a retry or a redelivery.
    assert summary["lost"] == 0 and not summary["failed"], summary
    assert all(w.alive() for w in stack.workers), "a worker died in the failover"
    client.close()
