"""Webhooks: what they cost a job, how soon they arrive, and whether a dead endpoint hurts.

One embedded Redis, one ``general`` worker and one ``webhooks`` worker (real processes, via
``LocalStack``), a local HTTP receiver in this process, and ``ping`` jobs (no LM, so the
webhook's own cost is what shows). Rounds alternate so machine noise hits both sides:

1. ping jobs without a webhook (baseline) vs the same jobs with one while the webhooks
   worker is paused (SIGSTOP): jobs/s until every result is in, so only the job path's
   cost shows (it records the delivery and sends a task; nothing more);
2. the same with the webhooks worker running beside the jobs (on a small machine it takes
   CPU from them), and the delivery latency: from the job's ``finished_at`` to the POST
   arriving (p50, p95);
3. that latency while 40 webhooks hang on another endpoint that never answers in time
   (the per-host slots keep them from holding the webhooks pool).

Run: .venv/bin/python bench/webhooks.py [--jobs 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import percentile, result_line

from dspex_jobs import Client
from dspex_jobs.embedded import EmbeddedRedis
from dspex_jobs.stack import LocalStack
from dspex_jobs.webhooks import enqueue_webhook


class Receiver:
    """Records when each delivery arrived; ``/hang`` sleeps past the webhook timeout."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path == "/hang":
                    time.sleep(3.0)  # past DSPEX_WEBHOOK_TIMEOUT_S=1
                else:
                    job_id = json.loads(body).get("job_id")
                    with receiver.lock:
                        receiver.arrived.setdefault(job_id, time.time())
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, ids: list[str], timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if all(i in self.arrived for i in ids):
                    return
            time.sleep(0.01)
        raise TimeoutError("not every webhook arrived")


def burst(client: Client, jobs: int, webhook: str | None) -> tuple[float, dict[str, float]]:
    """Jobs/s for a burst of pings; and each job's finished_at."""
    started = time.perf_counter()
    handles = [client.submit("ping", webhook=webhook) for _ in range(jobs)]
    finished = {h.id: h.result(timeout=120).timings.finished_at for h in handles}
    return jobs / (time.perf_counter() - started), finished


def latencies_ms(receiver: Receiver, finished: dict[str, float]) -> list[float]:
    receiver.wait(list(finished))
    return [(receiver.arrived[i] - at) * 1000 for i, at in finished.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    receiver, dead = Receiver(), Receiver()
    env = {
        "DSPEX_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
        "DSPEX_WEBHOOK_SECRET": "bench",
        "DSPEX_WEBHOOK_TIMEOUT_S": "1",
        "DSPEX_WEBHOOK_HOST_CONCURRENCY": "4",
    }
    with (
        EmbeddedRedis() as redis_server,
        LocalStack(
            redis_url=redis_server.url,
            lm="openai/none",
            lm_api_base="http://127.0.0.1:9/v1",
            queues=["general", "webhooks"],
            env=env,
        ) as stack,
    ):
        assert stack.settings is not None
        settings = stack.settings.model_copy(update={"webhook_allowed_hosts": ("127.0.0.1",)})
        with Client(settings) as client:
            hooks = next(w for w in stack.workers if w.queue == "webhooks")
            burst(client, 50, receiver.url + "/ok")  # warm both workers
            without, path_only, beside, quiet = [], [], [], []
            for _ in range(args.rounds):
                without.append(burst(client, args.jobs, None)[0])
                os.killpg(hooks.pid, signal.SIGSTOP)  # deliveries wait on their queue
                try:
                    rate, finished = burst(client, args.jobs, receiver.url + "/ok")
                finally:
                    os.killpg(hooks.pid, signal.SIGCONT)
                path_only.append(rate)
                latencies_ms(receiver, finished)  # drained once it runs again
                rate, finished = burst(client, args.jobs, receiver.url + "/ok")
                beside.append(rate)
                quiet += latencies_ms(receiver, finished)
            # A dead endpoint takes 40 webhooks; healthy ones keep flowing beside them.
            for i in range(40):
                enqueue_webhook(
                    client.app,
                    dead.url + "/hang",
                    {"event": "bench.hang"},
                    delivery_id=f"hang-{i}",
                    kind="bench",
                )
            time.sleep(0.5)
            _, finished = burst(client, args.jobs, receiver.url + "/ok")
            loaded = latencies_ms(receiver, finished)
    receiver.server.shutdown()
    dead.server.shutdown()
    base, value, shared = max(without), max(path_only), max(beside)
    print(f"{'':<48}{'value':>10}")
    print(f"{'ping jobs/s, no webhook (best of rounds)':<48}{base:>10.1f}")
    print(f"{'ping jobs/s, with a webhook (deliveries paused)':<48}{value:>10.1f}")
    print(f"{'ping jobs/s, with a webhook (delivering beside)':<48}{shared:>10.1f}")
    print(
        f"{'delivery latency p50 / p95 (ms)':<48}{statistics.median(quiet):>10.1f}"
        f"{percentile(quiet, 0.95):>10.1f}"
    )
    print(
        f"{'... with 40 hanging on a dead endpoint':<48}{statistics.median(loaded):>10.1f}"
        f"{percentile(loaded, 0.95):>10.1f}"
    )
    result_line(
        "webhooks",
        "ping jobs/s with a webhook (job path only) vs without",
        value,
        base,
        value / base,
        ">= 0.8",
        beside_jobs_per_s=round(shared, 1),
        added_ms_per_job=round((1 / value - 1 / base) * 1000, 2),
        delivery_p50_ms=round(statistics.median(quiet), 1),
        delivery_p95_ms=round(percentile(quiet, 0.95), 1),
        dead_endpoint_p50_ms=round(statistics.median(loaded), 1),
        dead_endpoint_p95_ms=round(percentile(loaded, 0.95), 1),
    )


if __name__ == "__main__":
    main()
