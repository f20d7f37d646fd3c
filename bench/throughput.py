"""No-LM throughput: dspex-jobs `ping` jobs vs bare Celery no-op tasks, same worker settings.

Each side gets one worker process with the same pool, concurrency and prefetch; the
producer submits a burst of jobs, then waits for every result (ours through the result
store, bare Celery through its Redis result backend). Rounds alternate so machine noise
hits both alike.

Run: .venv/bin/python bench/throughput.py [--jobs 1000] [--pool prefork] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    HERE,
    bare_argv,
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
from dspex_jobs.settings import Settings


def ours(client: Client, jobs: int) -> float:
    started = time.perf_counter()
    handles = [client.ping() for _ in range(jobs)]
    for handle in handles:
        handle.result(timeout=120)
    return jobs / (time.perf_counter() - started)


def bare(noop: object, jobs: int) -> float:
    started = time.perf_counter()
    results = [noop.apply_async() for _ in range(jobs)]  # type: ignore[attr-defined]
    for result in results:
        result.get(timeout=120)
    return jobs / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("BENCH_JOBS", "600")))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pool", default="prefork")
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()

    with environment() as (server, _):
        settings = Settings.from_env(environ={}, redis_url=server.url)
        env = worker_env(server.url, None, BENCH_REDIS_URL=server.url)
        workers = [
            start(worker_argv(args.pool, args.concurrency), env),
            start(bare_argv(args.pool, args.concurrency), env, cwd=HERE),
        ]
        try:
            wait_for_general(settings)
            os.environ["BENCH_REDIS_URL"] = server.url
            from _bare_app import noop

            noop.apply_async().get(timeout=60)
            with Client(settings) as client:
                ours(client, 100)
                bare(noop, 100)
                mine, theirs = [], []
                for _ in range(args.rounds):
                    mine.append(ours(client, args.jobs))
                    theirs.append(bare(noop, args.jobs))
        finally:
            for worker in workers:
                stop(worker)

    print(
        f"no-LM throughput, bursts of {args.jobs}, {args.rounds} rounds, {args.pool} "
        f"-c{args.concurrency}, prefetch 1, one redis-server\n"
    )
    print(f"{'path':<32}{'median jobs/s':>15}{'best':>9}")
    print(f"{'dspex-jobs ping jobs':<32}{median(mine):>15.1f}{max(mine):>9.1f}")
    print(f"{'bare Celery no-op tasks':<32}{median(theirs):>15.1f}{max(theirs):>9.1f}")
    ratio = median(mine) / median(theirs)
    print(f"\nours / bare: {ratio:.2f}x (goal >= 0.85x)")
    result_line(
        "throughput",
        "noop_jobs_per_s",
        median(mine),
        median(theirs),
        ratio,
        "ours >= 0.85x bare Celery",
    )


if __name__ == "__main__":
    main()
