"""LM-bound throughput: one `general` worker vs DSPy's own `module.batch(num_threads=N)`.

The local LM server adds 100 ms to every call, so throughput is set by how many calls are in
flight. Both sides keep N in flight: the worker runs a threads pool of N, DSPy a batch of N
threads in this process. Then a second worker joins, to show scale-out. The rounds alternate
(DSPy, one worker, DSPy, ...) so that machine noise hits both. Last, DSPy runs again with the
worker's memos of DSPy lookups (:mod:`dspex_jobs.runtime.model_metadata`,
:mod:`dspex_jobs.runtime.type_adapters`), reported: the ratio against it is what the rest of
the worker (Celery, Redis, our bookkeeping) costs.

``--pools`` instead measures the candidate pools of the `general` queue (prefork and threads
at several sizes): the numbers behind the choice in workers/README.md.

Run: .venv/bin/python bench/lm_throughput.py [--jobs 320] [--threads 16] [--pools]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    LM_MODEL,
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
from dspex_jobs.runtime.model_metadata import install_model_info_memo
from dspex_jobs.runtime.type_adapters import install_type_adapter_memo
from dspex_jobs.settings import Settings

SIGNATURE = "question -> answer"


def questions(jobs: int, tag: str) -> list[str]:
    # One text per round: nothing caches LM calls here (DSPy's cache is off, and so is ours),
    # but the LM server's embedding cache makes its own work per call small, so the 100 ms
    # latency, not the server's CPU, is what each call waits for.
    return [f"Which city is the capital ({tag})? Paris is the capital."] * jobs


def dspy_batch(lm_url: str, jobs: int, threads: int, tag: str) -> float:
    """Calls per second of ``Predict.batch`` with ``threads`` threads."""
    import dspy

    lm = dspy.LM(LM_MODEL, api_base=lm_url, api_key="local", cache=False, num_retries=0)
    program = dspy.Predict(SIGNATURE)
    examples = [dspy.Example(question=q).with_inputs("question") for q in questions(jobs, tag)]
    with dspy.context(lm=lm, disable_history=True):
        started = time.perf_counter()
        results = program.batch(examples, num_threads=threads, disable_progress_bar=True)
        elapsed = time.perf_counter() - started
    assert len(results) == jobs and all(r is not None for r in results)
    return jobs / elapsed


def ours(settings: Settings, jobs: int, tag: str) -> float:
    """Jobs per second through the worker(s) running now."""
    with Client(settings) as client:
        started = time.perf_counter()
        handles = [client.predict(SIGNATURE, question=q) for q in questions(jobs, tag)]
        for handle in handles:
            handle.result(timeout=300)
        return jobs / (time.perf_counter() - started)


def compare(args: argparse.Namespace) -> None:
    with environment(lm_latency_ms=args.latency_ms) as (server, lm_url):
        assert lm_url is not None
        settings = Settings.from_env(environ={}, redis_url=server.url)
        env = worker_env(server.url, lm_url)
        argv = worker_argv("threads", args.threads)
        workers = [start(argv, env)]
        try:
            wait_for_general(settings)
            ours(settings, args.threads, "warm")
            dspy_batch(lm_url, args.threads, args.threads, "warm")
            base, one = [], []
            for r in range(args.rounds):
                base.append(dspy_batch(lm_url, args.jobs, args.threads, f"b{r}"))
                one.append(ours(settings, args.jobs, f"o{r}"))
            workers.append(start(argv, env))
            wait_for_general(settings, workers=2)
            two = [ours(settings, args.jobs, f"t{r}") for r in range(args.rounds)]
            # The worker remembers DSPy's model-metadata lookups (a self-hosted model name
            # costs DSPy a scan of its price map per call: dspex_jobs/runtime/model_metadata.py)
            # and keeps one pydantic adapter per type DSPy formats (runtime/type_adapters.py).
            # DSPy with the same memos, last because they are process-wide once installed,
            # says how much of the ratio is the memos and how much is the rest of the worker.
            install_model_info_memo()
            install_type_adapter_memo()
            memo = [
                dspy_batch(lm_url, args.jobs, args.threads, f"m{r}") for r in range(args.rounds)
            ]
        finally:
            for w in workers:
                stop(w)
    cpus = os.cpu_count() or 1
    print(
        f"LM-bound throughput, {args.jobs} Predict calls per round, {args.rounds} rounds, "
        f"LM latency {args.latency_ms:g} ms, N={args.threads}, {cpus} CPUs\n"
    )
    print(f"{'path':<44}{'median calls/s':>16}")
    print(f"{'DSPy Predict.batch(num_threads=N)':<44}{median(base):>16.1f}")
    print(f"{'dspex-jobs, 1 general worker (threads -cN)':<44}{median(one):>16.1f}")
    print(f"{'dspex-jobs, 2 general workers':<44}{median(two):>16.1f}")
    print(f"{'DSPy batch with the worker memos':<44}{median(memo):>16.1f}")
    print(
        f"\none worker / DSPy batch: {median(one) / median(base):.2f}x (goal >= 0.9x); "
        f"two workers / one: {median(two) / median(one):.2f}x (goal close to 2x while "
        "CPU allows)"
    )
    print(
        f"one worker / DSPy batch with the same memos: "
        f"{median(one) / median(memo):.2f}x (reported: what the rest of the worker costs)"
    )
    result_line(
        "lm_throughput",
        "predict_jobs_per_s_1_worker",
        median(one),
        median(base),
        median(one) / median(base),
        "one worker >= 0.9x DSPy batch at the same N",
        two_workers_per_s=round(median(two), 2),
        two_over_one=round(median(two) / median(one), 3),
        dspy_with_memo_per_s=round(median(memo), 2),
        ratio_vs_dspy_with_memo=round(median(one) / median(memo), 3),
    )


POOLS = (("prefork", 2), ("prefork", 8), ("threads", 8), ("threads", 16), ("threads", 32))


def pools(args: argparse.Namespace) -> None:
    rows = []
    with environment(lm_latency_ms=args.latency_ms) as (server, lm_url):
        assert lm_url is not None
        settings = Settings.from_env(environ={}, redis_url=server.url)
        env = worker_env(server.url, lm_url)
        for pool, concurrency in POOLS:
            worker = start(worker_argv(pool, concurrency), env)
            try:
                wait_for_general(settings)
                ours(settings, concurrency, "warm")
                rates = [
                    ours(settings, args.jobs, f"{pool}{concurrency}{r}") for r in range(args.rounds)
                ]
            finally:
                stop(worker)
            time.sleep(1.0)  # the stopped worker's heartbeat expires before the next starts
            rows.append((pool, concurrency, median(rates)))
    print(
        f"general pool choices, {args.jobs} Predict jobs per round, LM latency "
        f"{args.latency_ms:g} ms, {os.cpu_count()} CPUs\n"
    )
    print(f"{'pool':<10}{'concurrency':>12}{'jobs/s':>10}{'ideal':>8}")
    ideal = 1000.0 / max(args.latency_ms, 1.0)
    for pool, concurrency, rate in rows:
        print(f"{pool:<10}{concurrency:>12}{rate:>10.1f}{concurrency * ideal:>8.0f}")
    best = max(rows, key=lambda row: row[2])
    base = rows[0][2]
    result_line(
        "lm_pools",
        "best_general_pool_jobs_per_s",
        best[2],
        base,
        best[2] / base,
        "the chosen pool beats prefork -c2 (the old default)",
        best=f"{best[0]} -c{best[1]}",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("BENCH_LM_JOBS", "320")))
    parser.add_argument("--threads", type=int, default=16, help="N: calls in flight")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--pools", action="store_true", help="compare general pool choices")
    args = parser.parse_args()
    pools(args) if args.pools else compare(args)


if __name__ == "__main__":
    main()
