"""Parallel pipeline steps: wall time of k LM steps in one ``Parallel`` against the LM's latency.

A ``Parallel`` of k ``Predict`` steps is a chord of k tasks on the ``general`` queue plus the
merge task that ends it. With k no larger than the worker's concurrency, the k LM calls should
overlap, so the run should take about one call: the LM server's latency L plus a fixed
overhead (the producer's checks and send, the chord's bookkeeping, the merge task, the
producer's wake-up, DSPy's own per-call work and the LM server's embedding of the prompt).

One run starts a real stack (embedded ``redis-server``, the local LM server adding L ms to
every call, one ``dspex-jobs worker --queue general`` with the given concurrency and pool), then
measures, interleaved round by round so machine noise hits every row alike:

- a single ``Predict`` job through the queue (no pipeline): what one LM step costs on its own;
- k ``Predict`` jobs submitted at once, waiting for all (the same LM work without a
  pipeline: the baseline that isolates what the chord, the merge and the run state cost);
- a pipeline of one ``Predict`` step;
- a ``Parallel`` of k ``Predict`` steps for each k.

Each row shows the median wall time from ``client.run`` to the result, the ratio to L, and
whether it meets the goal of at most 1.2·L + 10 ms. The last line is one JSON object, like
the other benchmarks.

Run: .venv/bin/python bench/pipeline.py [--latency-ms 300] [--concurrency 4] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dspex_jobs import Client
from dspex_jobs.pipeline import Dspy, Parallel, Pipeline
from dspex_jobs.stack import LocalStack

GOAL_FACTOR = 1.2
GOAL_OVERHEAD_S = 0.010


def parallel_of(k: int) -> Pipeline:
    """k Predict steps at once, each writing its own field (no merge needed)."""
    steps = [Dspy("Predict", signature=f"question -> answer_{i}", name=f"lm_{i}") for i in range(k)]
    return Pipeline([Parallel(steps)] if k > 1 else steps, name=f"parallel_{k}")


def timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def measure(client: Client, ks: list[int], rounds: int) -> dict[str, list[float]]:
    pipelines = {k: parallel_of(k) for k in ks}
    seconds: dict[str, list[float]] = {}

    def record(name: str, value: float) -> None:
        seconds.setdefault(name, []).append(value)

    for pipeline in pipelines.values():  # warm every worker process and the LM server
        for _ in range(2):
            client.run(pipeline, question="warm up").result(timeout=60)
    for n in range(rounds):
        question = f"Which round is this? Round {n}."
        record(
            "one Predict job (no pipeline)",
            timed(
                lambda q=question: client.predict("question -> answer", question=q).result(
                    timeout=60
                )
            ),
        )
        record(
            f"{ks[-1]} Predict jobs at once (no pipeline)",
            timed(
                lambda q=question: [
                    h.result(timeout=60)
                    for h in [
                        client.predict(f"question -> answer_{i}", question=q) for i in range(ks[-1])
                    ]
                ]
            ),
        )
        for k, pipeline in pipelines.items():
            record(
                f"pipeline, {k} parallel LM step{'s' if k > 1 else ''}",
                timed(lambda p=pipeline, q=question: client.run(p, question=q).result(timeout=60)),
            )
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=300.0, help="LM latency L")
    parser.add_argument("--concurrency", type=int, default=4, help="general worker slots")
    parser.add_argument("--pool", default="prefork", choices=["prefork", "threads"])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    args = parser.parse_args()
    ks = sorted({1, 2, args.concurrency // 2 or 1, args.concurrency})
    latency_s = args.latency_ms / 1000
    goal_s = GOAL_FACTOR * latency_s + GOAL_OVERHEAD_S
    worker_args = ["--concurrency", str(args.concurrency), "--pool", args.pool]
    with LocalStack(
        queues=["general"],
        worker_args={"general": worker_args},
        lm_server_options={"latency_ms": args.latency_ms},
    ) as stack:
        assert stack.settings is not None
        with Client(stack.settings) as client:
            seconds = measure(client, ks, args.rounds)

    load = os.getloadavg()[0]
    print(
        f"parallel LM steps, LM latency L = {args.latency_ms:.0f} ms, general worker "
        f"{args.pool} x{args.concurrency}, median of {args.rounds} interleaved rounds"
    )
    print(
        f"({os.cpu_count()} CPUs, 1-minute load average {load:.2f} at the end); "
        f"goal: at most {GOAL_FACTOR}·L + {GOAL_OVERHEAD_S * 1000:.0f} ms = "
        f"{goal_s * 1000:.0f} ms\n"
    )
    print(f"{'case':<40}{'median ms':>10}{'best ms':>9}{'x L':>7}  goal")
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    for name, values in seconds.items():
        median = medians[name]
        verdict = "met" if median <= goal_s else "NOT met"
        print(
            f"{name:<40}{median * 1000:>10.1f}{min(values) * 1000:>9.1f}"
            f"{median / latency_s:>7.2f}  {verdict}"
        )
    widest = f"pipeline, {ks[-1]} parallel LM steps"
    single = "one Predict job (no pipeline)"
    jobs = f"{ks[-1]} Predict jobs at once (no pipeline)"
    wall = medians[widest]
    print(
        f"\n{ks[-1]} parallel steps / one plain LM job: {wall / medians[single]:.2f}x; "
        f"overhead over L: {(wall - latency_s) * 1000:.0f} ms; over {ks[-1]} plain jobs at "
        f"once: {(wall - medians[jobs]) * 1000:+.0f} ms"
    )
    print(
        json.dumps(
            {
                "bench": "pipeline",
                "metric": f"parallel_{ks[-1]}_lm_steps_wall_ms",
                "value": round(wall * 1000, 1),
                "baseline": round(args.latency_ms, 1),
                "ratio": round(wall / latency_s, 3),
                "goal": f"<= {GOAL_FACTOR}*L + {GOAL_OVERHEAD_S * 1000:.0f} ms "
                f"({goal_s * 1000:.0f} ms)",
                "met": wall <= goal_s,
                "concurrency": args.concurrency,
                "pool": args.pool,
                "secondary": {
                    "metric": f"{ks[-1]}_predict_jobs_at_once_wall_ms",
                    "value": round(medians[jobs] * 1000, 1),
                    "baseline": round(args.latency_ms, 1),
                    "ratio": round(medians[jobs] / latency_s, 3),
                    "one_predict_job_wall_ms": round(medians[single] * 1000, 1),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
