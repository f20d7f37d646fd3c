"""Scale-out: LM-bound throughput with 1, 2 and 4 worker processes, against linear.

Four `general` workers start once (each its own process, ``--pool threads`` with
``--per-worker`` jobs in flight); Celery's remote control (``add_consumer`` /
``cancel_consumer``) then lets exactly k of them consume the queue for each measurement, so
no measurement pays a worker's start-up. The local LM server adds ``--latency-ms`` to every
call, so one worker's throughput is set by the LM's latency, and k workers should give k
times as much: efficiency(k) = throughput(k) / (k * throughput(1)). Measurements interleave
(1, 2, 4, 1, 2, 4, ...) so machine noise hits every k alike; medians are reported.

Run: .venv/bin/python bench/scaling.py [--rounds 3] [--latency-ms 250] [--per-worker 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    environment,
    median,
    result_line,
    start,
    stop,
    wait_for_general,
    worker_argv,
    worker_env,
)

from dspex_jobs import Client
from dspex_jobs.connections import redis_client
from dspex_jobs.keys import Keys
from dspex_jobs.settings import Settings

SIGNATURE = "context, question -> answer"
INPUTS = {"context": "Paris is the capital of France.", "question": "What is the capital?"}
COUNTS = (1, 2, 4)


def worker_names(settings: Settings) -> list[str]:
    client = redis_client(settings)
    try:
        keys = list(client.scan_iter(match=Keys(settings.key_prefix).worker_pattern()))
        return sorted(json.loads(raw)["name"] for raw in client.mget(keys) if raw)
    finally:
        client.close()


def consume_with(client: Client, names: list[str], active: list[str]) -> None:
    """Exactly ``active`` workers consume `general` (replies awaited, so it is in effect)."""
    idle = [n for n in names if n not in active]
    control = client.app.control
    if idle:
        control.cancel_consumer("general", destination=idle, reply=True, timeout=5)
    control.add_consumer("general", destination=active, reply=True, timeout=5)


def measure(client: Client, jobs: int) -> float:
    """Jobs per second: submit ``jobs`` at once, wait for the last result."""
    started = time.perf_counter()
    handles = [client.predict(SIGNATURE, inputs=INPUTS) for _ in range(jobs)]
    for handle in handles:
        handle.result(timeout=300)
    return jobs / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "3")))
    parser.add_argument("--latency-ms", type=float, default=250.0)
    parser.add_argument("--per-worker", type=int, default=2, help="jobs in flight per worker")
    parser.add_argument(
        "--jobs-per-worker",
        type=int,
        default=24,
        help="jobs per measurement = this x workers (a few seconds each)",
    )
    args = parser.parse_args()

    with environment(lm_latency_ms=args.latency_ms) as (server, lm_url):
        settings = Settings.from_env(
            environ={},
            redis_url=server.url,
            lm="openai/extractive-minilm",
            lm_api_base=lm_url,
            lm_api_key="local",
        )
        env = worker_env(server.url, lm_url)
        workers = [
            start([*worker_argv("threads", args.per_worker), "--hostname", f"scale{i}@%h"], env)
            for i in range(max(COUNTS))
        ]
        try:
            wait_for_general(settings, workers=max(COUNTS))
            names = worker_names(settings)
            assert len(names) == max(COUNTS), names
            rates: dict[int, list[float]] = {k: [] for k in COUNTS}
            with Client(settings) as client:
                consume_with(client, names, names)
                measure(client, 2 * max(COUNTS) * args.per_worker)  # warm every worker
                for _ in range(args.rounds):
                    for k in COUNTS:
                        consume_with(client, names, names[:k])
                        rates[k].append(measure(client, args.jobs_per_worker * k))
        finally:
            for proc in workers:
                stop(proc)

    base = median(rates[1])
    print(
        f"LM-bound throughput, LM latency {args.latency_ms:.0f} ms, {args.per_worker} jobs in "
        f"flight per worker process, {args.rounds} interleaved rounds, {os.cpu_count()} CPUs\n"
    )
    print(f"{'workers':>8}{'jobs/s (median)':>17}{'linear':>9}{'efficiency':>12}   rounds")
    efficiency = {}
    for k in COUNTS:
        rate = median(rates[k])
        efficiency[k] = rate / (k * base)
        print(
            f"{k:>8}{rate:>17.2f}{k * base:>9.2f}{efficiency[k]:>12.2f}   "
            + ", ".join(f"{r:.2f}" for r in rates[k])
        )
    print(
        f"\nideal per worker: {args.per_worker / (args.latency_ms / 1000):.2f} jobs/s "
        f"({args.per_worker} in flight / {args.latency_ms:.0f} ms)"
    )
    result_line(
        "scaling",
        "efficiency_2_workers",
        efficiency[2],
        1.0,
        efficiency[2],
        "efficiency >= 0.8 at 2 workers (throughput(2) / 2 x throughput(1))",
        efficiency_4_workers=round(efficiency[4], 4),
        jobs_per_s={str(k): round(median(rates[k]), 3) for k in COUNTS},
    )


if __name__ == "__main__":
    main()
