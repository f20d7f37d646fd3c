"""Worker memory: RSS after 5,000 jobs vs after 100 (no unbounded growth).

One `general` worker in a threads pool (one process, so nothing is recycled: prefork's
``--max-tasks-per-child`` would hide a leak) runs Predict jobs with 25 signatures and 400
questions in rotation, the shared LM cache on (most answers come from Redis, so the LM
server is not the bottleneck), plus ping jobs. Its resident memory is read from /proc after
the first 100 jobs and after all of them, and the sizes of its caches (``ping`` reports
them) show every cache stopped at its bound.

Run: .venv/bin/python bench/memory.py [--jobs 5000]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    environment,
    result_line,
    rss_bytes,
    start,
    stop,
    wait_for_general,
    worker_argv,
    worker_env,
)

from dspex_jobs import Client
from dspex_jobs.settings import Settings

SIGNATURES = 25
QUESTIONS = 400
BATCH = 200


def run(client: Client, first: int, count: int) -> None:
    for start_at in range(first, first + count, BATCH):
        handles = []
        for i in range(start_at, min(first + count, start_at + BATCH)):
            if i % 10 == 9:
                handles.append(client.ping())
                continue
            signature = f"question -> answer_{i % SIGNATURES}"
            question = f"Question {i % QUESTIONS}: which city is the capital? Paris is."
            handles.append(client.predict(signature, question=question))
        for handle in handles:
            handle.result(timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--jobs", type=int, default=int(os.environ.get("BENCH_MEMORY_JOBS", "5000"))
    )
    parser.add_argument("--early", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    with environment(lm_latency_ms=0) as (server, lm_url):
        settings = Settings.from_env(environ={}, redis_url=server.url)
        worker = start(
            worker_argv("threads", args.concurrency),
            worker_env(server.url, lm_url, DSPEX_LM_CACHE="true"),
        )
        try:
            wait_for_general(settings)
            with Client(settings) as client:
                run(client, 0, args.early)
                early = rss_bytes(worker.pid)
                run(client, args.early, args.jobs - args.early)
                late = rss_bytes(worker.pid)
                caches = client.ping().result(timeout=30).outputs["caches"]  # type: ignore[index]
        finally:
            stop(worker)

    mib = 1024 * 1024
    print(
        f"worker RSS, threads -c{args.concurrency}, {args.jobs} jobs "
        f"({SIGNATURES} signatures, {QUESTIONS} questions, 1 in 10 a ping)\n"
    )
    print(f"{'after':<16}{'RSS MiB':>10}")
    print(f"{args.early:<16}{early / mib:>10.1f}")
    print(f"{args.jobs:<16}{late / mib:>10.1f}")
    print(f"\ngrowth: {(late - early) / mib:+.1f} MiB ({late / early:.3f}x); caches at the end:")
    for name, size in sorted(caches.items()):
        print(f"  {name:<24}{size['size']:>6} / {size['max']}")
    result_line(
        "memory",
        f"worker_rss_mib_after_{args.jobs}",
        late / mib,
        early / mib,
        early / late,
        "RSS after 5,000 jobs <= 1.1x RSS after 100 (ratio >= 0.91)",
    )


if __name__ == "__main__":
    main()
