"""Pipeline webhooks: what recording one costs the process that ends a run.

Embedded Redis, the real ``RunStore`` and the real Celery app (its broker is the same
Redis; no worker consumes the delivery tasks, so only the ending side is timed). Each round
stores ``--runs`` runs of a three-step plan, then ends them with ``pipeline.webhook.end_run``,
half with no webhook (one ``HSETNX`` + one pipelined push: the baseline) and half with one
(``WATCH``, reading the steps' records and outputs for the body, one ``MULTI`` with the
delivery record and outbox entry, sending the delivery task, dropping the outbox entry).
Rounds alternate so machine noise hits both sides; medians of per-round means.

Run: .venv/bin/python bench/pipeline_webhooks.py [--runs 300] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import result_line

from dspex_jobs.app import make_app
from dspex_jobs.embedded import EmbeddedRedis
from dspex_jobs.jobs import new_job_id
from dspex_jobs.keys import Keys
from dspex_jobs.pipeline import Native, Pipeline
from dspex_jobs.pipeline.state import RunStore
from dspex_jobs.pipeline.webhook import end_run
from dspex_jobs.router import default_registry
from dspex_jobs.settings import Settings


def constant(value: object) -> object:
    return value


default_registry().register("bench.constant", constant, replace=True)
PLAN = Pipeline(
    [
        Native("bench.constant", name="a", outputs=["x"], value=1),
        Native("bench.constant", name="b", outputs=["y"], inputs={"value": "x"}),
        Native("bench.constant", name="c", outputs=["z"], inputs={"value": "y"}),
    ],
    name="bench",
).plan()


def one_round(store: RunStore, app: object, runs: int, webhook: str | None, ttl_s: int) -> float:
    """Mean ms to end one run."""
    ids = [new_job_id() for _ in range(runs)]
    for run_id in ids:
        store.create(run_id, PLAN, {}, trace_id=run_id, deadline_at=None, webhook=webhook)
        store.record(
            run_id,
            "c",
            {"name": "c", "state": "done", "usage": {"m": {"prompt_tokens": 10}}},
            {"x": 1, "y": 1, "z": 1, "a": {"x": 1}, "b": {"y": 1}, "c": {"z": 1}},
        )
    started = time.perf_counter()
    for run_id in ids:
        end_run(
            store,
            app,
            run_id,
            {"status": "succeeded"},  # type: ignore[arg-type]
            pipeline="bench",
            trace_id=run_id,
            created_at=time.time(),
            webhook=webhook,
            record_ttl_s=ttl_s,
            plan=PLAN,
        )
    return (time.perf_counter() - started) * 1000 / runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with EmbeddedRedis() as server:
        settings = Settings.from_env(
            environ={}, redis_url=server.url, webhook_allowed_hosts=("127.0.0.1",)
        )
        app = make_app(settings)
        import redis

        client = redis.Redis.from_url(settings.redis_url)
        store = RunStore(client, Keys(settings.key_prefix), settings.result_ttl_s)
        ttl = settings.webhook_record_ttl_s
        one_round(store, app, 20, "http://127.0.0.1:9/hook", ttl)  # warm up
        without, with_hook = [], []
        for _ in range(args.rounds):
            without.append(one_round(store, app, args.runs, None, ttl))
            with_hook.append(one_round(store, app, args.runs, "http://127.0.0.1:9/hook", ttl))
            client.flushdb()
        client.close()
    base, value = statistics.median(without), statistics.median(with_hook)
    print(f"{'':<40}{'ms per run end':>16}")
    print(f"{'no webhook (HSETNX)':<40}{base:>16.3f}")
    print(f"{'with a webhook (WATCH/MULTI + send)':<40}{value:>16.3f}")
    result_line(
        "pipeline_webhooks",
        "ms to end a run, with a webhook vs without",
        value,
        base,
        value / base,
        "added ms per run << one step's LM call",
        added_ms_per_run=round(value - base, 3),
    )


if __name__ == "__main__":
    main()
