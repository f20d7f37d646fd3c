"""What telemetry costs: job round trip with every exporter on against all off, same run.

Two workers (prefork, one child each) on one embedded redis-server, on two databases:

* **off**: no telemetry configured (events still emitted; nobody listens);
* **on**: Prometheus metrics in multiprocess mode (``DSPEX_METRICS_PORT``), JSON logs, and the
  alert rule windows with a webhook (``DSPEX_ALERT_WEBHOOK_URL``; a dead one: the POSTs fail
  in a background thread), and the producer's metrics handler for ``dspex.job.submit``.

Pings are interleaved (on, off, on, ...) so machine noise hits both alike; a ping job is the
worst case, as telemetry's cost is per job and a ping does nothing else. Also prints the cost
of one ``emit`` with the metrics handler attached and with none.

Run: .venv/bin/python bench/telemetry.py [--calls N]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

from dspex_jobs import Client
from dspex_jobs.embedded import EmbeddedRedis
from dspex_jobs.health import check_health
from dspex_jobs.settings import Settings
from dspex_jobs.telemetry import emit, prometheus
from dspex_jobs.telemetry.catalogue import JOB_STOP


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    argv = [
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
        "INFO",
    ]
    return subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def emit_cost_ns(calls: int = 200_000) -> tuple[float, float]:
    """ns per emit of dspex.job.stop: nobody listening, then the metrics handler attached."""
    metadata = {
        "job_id": "j",
        "kind": "ping",
        "queue": "general",
        "trace_id": "t",
        "status": "succeeded",
    }
    measurements = {"duration_s": 0.001, "queue_wait_s": 0.001}
    prometheus.uninstall()
    t = time.perf_counter()
    for _ in range(calls):
        emit(JOB_STOP, measurements, metadata)
    off = (time.perf_counter() - t) / calls * 1e9
    prometheus.install()
    t = time.perf_counter()
    for _ in range(calls):
        emit(JOB_STOP, measurements, metadata)
    on = (time.perf_counter() - t) / calls * 1e9
    prometheus.uninstall()
    return off, on


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=int(os.environ.get("BENCH_CALLS", "300")))
    args = parser.parse_args()
    emit_off_ns, emit_on_ns = emit_cost_ns()

    with EmbeddedRedis() as server:
        url_off, url_on = f"{server.url.rsplit('/', 1)[0]}/1", f"{server.url.rsplit('/', 1)[0]}/2"
        base = {k: v for k, v in os.environ.items() if not k.startswith("DSPEX_")}
        off = start_worker({**base, "DSPEX_REDIS_URL": url_off})
        on = start_worker(
            {
                **base,
                "DSPEX_REDIS_URL": url_on,
                "DSPEX_METRICS_PORT": str(free_port()),
                "DSPEX_LOG_FORMAT": "json",
                "DSPEX_ALERT_WEBHOOK_URL": "http://127.0.0.1:9/alerts",
                "DSPEX_ALERT_MIN_JOBS": "1000000",
            }
        )
        try:
            settings_off = Settings.from_env(environ={}, redis_url=url_off)
            settings_on = Settings.from_env(environ={}, redis_url=url_on)
            deadline = time.monotonic() + 120
            while not (
                check_health(settings_off, ("general",)).ok
                and check_health(settings_on, ("general",)).ok
            ):
                if time.monotonic() > deadline:
                    sys.exit("the workers did not start")
                time.sleep(0.2)
            with Client(settings_off) as c_off, Client(settings_on) as c_on:
                for _ in range(30):  # warm both paths
                    c_off.ping().result(timeout=10)
                    c_on.ping().result(timeout=10)
                on_ms, off_ms = [], []
                for _ in range(args.calls):
                    prometheus.install()  # the producer's side of "on"
                    t = time.perf_counter()
                    c_on.ping().result(timeout=10)
                    on_ms.append((time.perf_counter() - t) * 1000)
                    prometheus.uninstall()
                    t = time.perf_counter()
                    c_off.ping().result(timeout=10)
                    off_ms.append((time.perf_counter() - t) * 1000)
        finally:
            stop(on)
            stop(off)

    print(f"ping round trip, {args.calls} calls each, prefork -c1 workers, one redis-server\n")
    print(f"{'telemetry':<12}{'median ms':>11}{'p90 ms':>10}{'p99 ms':>10}")
    for name, values in (("on", on_ms), ("off", off_ms)):
        print(
            f"{name:<12}{statistics.median(values):>11.3f}{percentile(values, 0.9):>10.3f}"
            f"{percentile(values, 0.99):>10.3f}"
        )
    on_med, off_med = statistics.median(on_ms), statistics.median(off_ms)
    print(f"\non / off: median {on_med / off_med:.3f}x (goal: <= 1.05x)")
    print(
        f"emit(dspex.job.stop): {emit_off_ns:.0f} ns with no handler, "
        f"{emit_on_ns:.0f} ns with the Prometheus handler"
    )
    print(
        json.dumps(
            {
                "bench": "telemetry",
                "metric": "ping_roundtrip_median_ms_telemetry_on",
                "value": round(on_med, 4),
                "baseline": round(off_med, 4),
                "ratio": round(off_med / on_med, 4),
                "emit_ns_off": round(emit_off_ns, 1),
                "emit_ns_metrics": round(emit_on_ns, 1),
                "goal": "telemetry on <= 1.05x off (ratio >= 0.95)",
            }
        )
    )


if __name__ == "__main__":
    main()
