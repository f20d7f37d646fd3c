"""Round trip of Client.ping() against a bare Celery no-op task, on the same Redis.

Both run on one worker process each, with the same pool (prefork, one child), against one
embedded redis-server. Calls are interleaved (ours, bare, ours, ...) so machine noise hits
both alike. A raw Redis LPUSH/BRPOP echo is reported as the floor.

Run: .venv/bin/python bench/roundtrip.py [--calls N]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import redis

from dspex_jobs import Client
from dspex_jobs.embedded import EmbeddedRedis
from dspex_jobs.health import check_health
from dspex_jobs.settings import Settings

HERE = Path(__file__).resolve().parent


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def raw_echo(url: str, calls: int) -> list[float]:
    """LPUSH a request, a thread BRPOPs it and LPUSHes a reply, we BRPOP the reply."""
    client, server = redis.Redis.from_url(url), redis.Redis.from_url(url)
    stop_flag = threading.Event()

    def serve() -> None:
        while not stop_flag.is_set():
            item = server.brpop(["echo:req"], timeout=1)
            if item:
                server.lpush("echo:rep", item[1])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    times = []
    for i in range(calls):
        t = time.perf_counter()
        client.lpush("echo:req", i)
        client.brpop(["echo:rep"], timeout=5)
        times.append((time.perf_counter() - t) * 1000)
    stop_flag.set()
    thread.join()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=int(os.environ.get("BENCH_CALLS", "500")))
    args = parser.parse_args()

    with EmbeddedRedis() as server:
        settings = Settings.from_env(environ={}, redis_url=server.url)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DSPEX_")}
        env.update(DSPEX_REDIS_URL=server.url, BENCH_REDIS_URL=server.url)
        ours = start(
            [
                sys.executable,
                "-m",
                "dspex_jobs",
                "worker",
                "--queue",
                "general",
                "--pool",
                "prefork",
                "--concurrency",
                "1",
                "--loglevel",
                "WARNING",
            ],
            env,
        )
        bare = start(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "_bare_app",
                "worker",
                "-Q",
                "bare",
                "-P",
                "prefork",
                "-c",
                "1",
                "--without-mingle",
                "-l",
                "WARNING",
            ],
            env,
            cwd=HERE,
        )
        try:
            deadline = time.monotonic() + 120
            while not check_health(settings, ("general",)).ok:
                if time.monotonic() > deadline:
                    sys.exit("our worker did not start")
                time.sleep(0.2)
            sys.path.insert(0, str(HERE))
            os.environ["BENCH_REDIS_URL"] = server.url
            from _bare_app import noop

            noop.apply_async().get(timeout=60)  # the bare worker is up
            with Client(settings) as client:
                for _ in range(50):  # warm both paths
                    client.ping().result(timeout=10)
                    noop.apply_async().get(timeout=10)
                ours_ms, bare_ms = [], []
                for _ in range(args.calls):
                    t = time.perf_counter()
                    client.ping().result(timeout=10)
                    ours_ms.append((time.perf_counter() - t) * 1000)
                    t = time.perf_counter()
                    noop.apply_async().get(timeout=10)
                    bare_ms.append((time.perf_counter() - t) * 1000)
            raw_ms = raw_echo(server.url, args.calls)
        finally:
            stop(ours)
            stop(bare)

    rows = [
        ("dspex-jobs Client.ping()", ours_ms),
        ("bare Celery no-op task", bare_ms),
        ("raw Redis LPUSH/BRPOP echo", raw_ms),
    ]
    print(f"round trip, {args.calls} calls each, prefork -c1 workers, one redis-server\n")
    print(f"{'path':<30}{'median ms':>11}{'p99 ms':>10}")
    for name, values in rows:
        print(f"{name:<30}{statistics.median(values):>11.3f}{percentile(values, 0.99):>10.3f}")
    ours_med, bare_med = statistics.median(ours_ms), statistics.median(bare_ms)
    print(
        f"\nours / bare: median {ours_med / bare_med:.2f}x, "
        f"p99 {percentile(ours_ms, 0.99) / percentile(bare_ms, 0.99):.2f}x "
        f"(goal: median <= 1.2x)"
    )
    print(
        json.dumps(
            {
                "bench": "roundtrip",
                "metric": "ping_roundtrip_median_ms",
                "value": round(ours_med, 4),
                "baseline": round(bare_med, 4),
                "ratio": round(bare_med / ours_med, 4),
                "goal": "ours <= 1.2x bare Celery (ratio >= 0.83)",
            }
        )
    )


if __name__ == "__main__":
    main()
