"""A cached Predict vs a no-LM job: what a hit in the shared LM cache costs end to end.

One `general` worker (prefork, one child) with the shared LM cache on, against the local LM
server. After one miss fills the cache, calls alternate: a Predict job whose answer comes from
Redis, then a `ping` job (no LM, no DSPy). The LM server's request counter proves the hits
made no LM call. An uncached Predict (cache=False, the LM server at 0 ms latency) is shown for
scale.

Run: .venv/bin/python bench/cache.py [--calls 300]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    environment,
    median,
    percentile,
    result_line,
    start,
    stop,
    wait_for_general,
    worker_argv,
    worker_env,
)

from dspex_jobs import Client
from dspex_jobs.settings import Settings

QUESTION = "Which city is the capital of France? Paris is the capital of France."


def lm_calls(lm_url: str) -> int:
    with urllib.request.urlopen(f"{lm_url}/stats", timeout=10) as response:
        return int(json.loads(response.read())["chat_completions"])


def timed(call: object) -> float:
    started = time.perf_counter()
    call()  # type: ignore[operator]
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=int(os.environ.get("BENCH_CALLS", "300")))
    args = parser.parse_args()

    with environment(lm_latency_ms=0) as (server, lm_url):
        assert lm_url is not None
        settings = Settings.from_env(environ={}, redis_url=server.url)
        worker = start(
            worker_argv("prefork", 1), worker_env(server.url, lm_url, DSPEX_LM_CACHE="true")
        )
        try:
            wait_for_general(settings)
            with Client(settings) as client:

                def cached() -> None:
                    client.predict("question -> answer", question=QUESTION).result(timeout=30)

                def uncached() -> None:
                    client.predict(
                        "question -> answer", question=QUESTION, lm={"cache": False}
                    ).result(timeout=30)

                def ping() -> None:
                    client.ping().result(timeout=30)

                for _ in range(30):  # warm: the first predict fills the cache
                    cached(), ping(), uncached()
                calls_before = lm_calls(lm_url)
                hit_ms, ping_ms = [], []
                for _ in range(args.calls):
                    hit_ms.append(timed(cached))
                    ping_ms.append(timed(ping))
                lm_calls_by_hits = lm_calls(lm_url) - calls_before
                miss_ms = [timed(uncached) for _ in range(max(30, args.calls // 5))]
        finally:
            stop(worker)

    print(f"round trip, {args.calls} calls each, prefork -c1 worker, shared LM cache on\n")
    print(f"{'job':<40}{'median ms':>11}{'p99 ms':>10}")
    rows = (
        ("ping (no LM, no DSPy)", ping_ms),
        ("Predict, answer from the cache", hit_ms),
        ("Predict, cache=False (LM at 0 ms)", miss_ms),
    )
    for name, values in rows:
        print(f"{name:<40}{median(values):>11.3f}{percentile(values, 0.99):>10.3f}")
    print(f"\nLM calls made by {args.calls} cached Predicts: {lm_calls_by_hits}")
    ratio = median(hit_ms) / median(ping_ms)
    print(f"cached Predict / no-LM job: {ratio:.2f}x (goal <= 1.3x)")
    result_line(
        "cache",
        "cached_predict_roundtrip_median_ms",
        median(hit_ms),
        median(ping_ms),
        median(ping_ms) / median(hit_ms),
        "cached Predict <= 1.3x a no-LM job (ratio >= 0.77)",
        lm_calls_by_hits=lm_calls_by_hits,
    )


if __name__ == "__main__":
    main()
