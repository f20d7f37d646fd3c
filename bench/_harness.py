"""Shared parts of the benchmarks: real Redis, the real LM server, real worker processes.

Not a benchmark itself (``make bench`` skips ``bench/_*.py``). Everything started here is a
real process in its own process group and is stopped, group and all, on exit.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import redis

from dspex_jobs.embedded import EmbeddedRedis
from dspex_jobs.health import check_health
from dspex_jobs.settings import Settings

HERE = Path(__file__).resolve().parent
LM_MODEL = "openai/extractive-minilm"


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def result_line(
    bench: str, metric: str, value: float, baseline: float, ratio: float, goal: str, **extra: Any
) -> None:
    """The last line every benchmark prints (collected by ``make bench``)."""
    print(
        json.dumps(
            {
                "bench": bench,
                "metric": metric,
                "value": round(value, 4),
                "baseline": round(baseline, 4),
                "ratio": round(ratio, 4),
                "goal": goal,
                **extra,
            }
        )
    )


def base_env(**values: str) -> dict[str, str]:
    """This environment without any DSPEX_ setting, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DSPEX_")}
    env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    env.update(values)
    return env


def start(
    argv: Sequence[str], env: dict[str, str], cwd: Path | None = None, log: str | None = None
) -> subprocess.Popen[bytes]:
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - the child owns it
    return subprocess.Popen(
        list(argv), env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def worker_argv(pool: str, concurrency: int, queue: str = "general") -> list[str]:
    return [
        sys.executable,
        "-m",
        "dspex_jobs",
        "worker",
        "--queue",
        queue,
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "--loglevel",
        "WARNING",
    ]


def bare_argv(pool: str, concurrency: int, prefetch: int = 1) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "_bare_app",
        "worker",
        "-Q",
        "bare",
        "-P",
        pool,
        "-c",
        str(concurrency),
        "--prefetch-multiplier",
        str(prefetch),
        "--without-mingle",
        "--without-gossip",
        "-l",
        "WARNING",
    ]


def wait_for_general(settings: Settings, workers: int = 1, timeout_s: float = 120.0) -> None:
    """Until ``workers`` general workers beat and one answers a ping."""
    from dspex_jobs import Client

    client = redis.Redis.from_url(settings.redis_url)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        beats = len(list(client.scan_iter(f"{settings.key_prefix}:worker:*")))
        if beats >= workers and check_health(settings, ("general",)).ok:
            with Client(settings) as c:
                for _ in range(workers * 2):
                    c.ping().result(timeout=max(1.0, deadline - time.monotonic()))
            return
        time.sleep(0.2)
    sys.exit("the worker did not start")


@contextmanager
def environment(lm_latency_ms: float | None = None) -> Iterator[tuple[EmbeddedRedis, str | None]]:
    """A fresh embedded Redis and, when ``lm_latency_ms`` is given, the local LM server."""
    with ExitStack() as stack:
        server = stack.enter_context(EmbeddedRedis())
        lm_url = None
        if lm_latency_ms is not None:
            from dspex_jobs.lmserver import LMServerConfig, LMServerProcess

            lm = stack.enter_context(LMServerProcess(LMServerConfig(latency_ms=lm_latency_ms)))
            lm_url = lm.url
        yield server, lm_url


def worker_env(redis_url: str, lm_url: str | None, **extra: str) -> dict[str, str]:
    env = base_env(DSPEX_REDIS_URL=redis_url, DSPEX_LOG_LEVEL="WARNING", **extra)
    if lm_url:
        env.update(DSPEX_LM=LM_MODEL, DSPEX_LM_API_BASE=lm_url, DSPEX_LM_API_KEY="local")
    return env


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants (Linux /proc)."""
    total = 0
    for child in [pid, *_descendants(pid)]:
        try:
            for line in Path(f"/proc/{child}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return found
    for child in children:
        found.append(int(child))
        found.extend(_descendants(int(child)))
    return found
