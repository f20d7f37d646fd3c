"""The load test: mixed jobs from several producer processes against workers on all queues.

Sizes come from the environment: CI runs it small (the defaults); ``make load`` runs 10,000
jobs from 4 producer processes. It reports throughput, p50/p95/p99 latency per kind (submit to
result, from the results' own timestamps) and Redis memory before and after, and asserts
what must hold at any size: no job fails, and once the results expire Redis is back to its
baseline (nothing a job leaves behind outlives its TTL).

The mix (``load_producer.KINDS``): Predict 42%, ChainOfThought 20%, two-step pipelines 15%,
embeddings on the neural queue 22%, and pings on the optimizer queue 1% (a job any optimizer
worker answers, so that queue's worker takes part without an hours-long optimization; the
optimizer pool forks a fresh child per job, which shows in their latency).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import LM_API_KEY, LM_MODEL

from dspex_jobs.embedded import EmbeddedRedis
from dspex_jobs.stack import LocalStack

pytestmark = [pytest.mark.load, pytest.mark.integration]

JOBS = int(os.environ.get("DSPEX_TEST_LOAD_JOBS", "100"))
PRODUCERS = int(os.environ.get("DSPEX_TEST_LOAD_PRODUCERS", "2"))
WINDOW = int(os.environ.get("DSPEX_TEST_LOAD_WINDOW", "20"))
RESULT_TTL_S = int(os.environ.get("DSPEX_TEST_LOAD_RESULT_TTL_S", "15"))
"""Results expire this long after they are written: long enough for a producer to collect a
window of them on a loaded machine, short enough to wait for in a test."""
PRODUCER = Path(__file__).with_name("load_producer.py")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def _used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


_PER_JOB = ("result", "done", "state", "lease", "stream", "payload", "pipeline", "idem", "cancel")
"""Key families a job or a run leaves, each with a TTL (``dspex_jobs.keys``)."""


def _job_keys(client: redis.Redis) -> int:
    return sum(1 for family in _PER_JOB for _ in client.scan_iter(f"dspex:{family}:*", count=1000))


def _settled_memory(client: redis.Redis, timeout_s: float) -> int:
    """Wait until every per-job key has expired (Redis expires keys in passes), then
    return the memory in use."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _job_keys(client):
        time.sleep(1.0)
    return _used_memory(client)


def _warm_up(stack: LocalStack) -> None:
    """One job of each kind, so every worker has loaded what it needs (DSPy, the model)."""
    from load_producer import PIPELINE

    from dspex_jobs import Client
    from dspex_jobs.jobs import JobKind

    assert stack.settings is not None
    # The producers' TTL too: a pipeline run's keys are written by the producer that starts it
    settings = stack.settings.model_copy(update={"result_ttl_s": RESULT_TTL_S})
    with Client(settings) as client:
        handles = [
            client.predict("question -> answer", question="warm?"),
            client.chain_of_thought("question -> answer", question="warm?"),
            client.run(PIPELINE, question="warm?"),
            client.submit(JobKind.EMBED, inputs={"texts": ["warm up"]}),
            client.submit(JobKind.PING, queue="optimizer"),
        ]
        for handle in handles:
            handle.result(timeout=180)


@pytest.mark.timeout(3600)
def test_mixed_load_runs_without_errors_and_leaves_nothing_behind(lm_server: object) -> None:
    with EmbeddedRedis() as server:
        env = {
            "DSPEX_LM_API_KEY": LM_API_KEY,
            "DSPEX_RESULT_TTL_S": str(RESULT_TTL_S),
            "DSPEX_LOG_LEVEL": "WARNING",
        }
        stack = LocalStack(
            redis_url=server.url,
            lm=LM_MODEL,
            lm_api_base=str(lm_server.url),  # type: ignore[attr-defined]
            queues=["general", "neural", "optimizer"],
            env=env,
        )
        with stack:
            _warm_up(stack)  # the neural model loads on first use: not part of the figures
            client = redis.Redis.from_url(server.url)
            # (the warm-up's results are in the baseline and expire during the run)
            baseline = _used_memory(client)
            baseline_keys = client.dbsize()
            # When PRODUCERS processes submit JOBS mixed jobs between them
            started = time.monotonic()
            share = [JOBS // PRODUCERS + (i < JOBS % PRODUCERS) for i in range(PRODUCERS)]
            procs = [
                subprocess.Popen(
                    [sys.executable, str(PRODUCER), server.url, str(i), str(n), str(WINDOW)],
                    stdout=subprocess.PIPE,
                    text=True,
                    env={**os.environ, **env},
                )
                for i, n in enumerate(share)
            ]
            reports: list[dict[str, Any]] = []
            for proc in procs:
                out, _ = proc.communicate(timeout=3000)
                assert proc.returncode == 0, f"a producer failed (exit {proc.returncode})"
                reports.append(json.loads(out.strip().splitlines()[-1]))
            elapsed = time.monotonic() - started
            peak = _used_memory(client)
            peak_keys = client.dbsize()
            # Then wait for the results to expire
            after = _settled_memory(client, RESULT_TTL_S + 90)
            left_per_job = _job_keys(client)
            after_keys = client.dbsize()
            leftovers = sorted({k.decode().rsplit(":", 1)[0] for k in client.scan_iter(count=1000)})

    latencies: dict[str, list[float]] = {}
    errors: list[str] = []
    for report in reports:
        errors += report["errors"]
        for kind, values in report["latencies"].items():
            latencies.setdefault(kind, []).extend(values)
    done = sum(len(v) for v in latencies.values())
    print(
        f"\nload: {JOBS} jobs from {PRODUCERS} producers in {elapsed:.1f} s = "
        f"{done / elapsed:.1f} jobs/s, errors {len(errors)}"
    )
    print(f"{'kind':<18}{'jobs':>7}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}")
    for kind, values in sorted(latencies.items()):
        print(
            f"{kind:<18}{len(values):>7}{_percentile(values, 0.5) * 1000:>10.0f}"
            f"{_percentile(values, 0.95) * 1000:>10.0f}{_percentile(values, 0.99) * 1000:>10.0f}"
        )
    print(
        f"redis used_memory: baseline {baseline / 1024:.0f} KiB ({baseline_keys} keys), "
        f"peak {peak / 1024:.0f} KiB ({peak_keys} keys), after expiry {after / 1024:.0f} KiB "
        f"({after_keys} keys: {', '.join(leftovers)[:300]})"
    )
    # Expect: every job succeeded
    assert not errors, errors[:5]
    assert done == JOBS
    # Expect: once results expire, nothing a job wrote is left, and Redis holds what it
    # held before (within 256 KiB: the LM endpoint's breaker, Celery's bindings)
    assert left_per_job == 0, leftovers
    assert after <= baseline + 256 * 1024, (baseline, after, leftovers)
