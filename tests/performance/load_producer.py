"""One producer process of the load test: submits its share of mixed jobs, reports latencies.

Run by ``tests/performance/test_load.py`` as ``python load_producer.py REDIS_URL INDEX COUNT
WINDOW``; prints one JSON object: per kind, the end-to-end latencies (submit to result,
from the result's own timestamps) and any errors. At most WINDOW jobs are outstanding at once
(as a producer with a bounded backlog keeps them); results are collected as they come.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dspex_jobs import Client
from dspex_jobs.jobs import JobKind
from dspex_jobs.pipeline import Dspy, Pipeline
from dspex_jobs.settings import Settings

KINDS = (
    ("predict", 42),
    ("chain_of_thought", 20),
    ("pipeline", 15),
    ("embed", 22),
    ("ping_optimizer", 1),
)
"""Job kinds and their share of the mix (percent). The optimizer pool forks a fresh child
(which imports DSPy) for every job, seconds each, so its share stays small."""

PIPELINE = Pipeline(
    [
        Dspy("Predict", signature="question -> answer"),
        Dspy("Predict", signature="answer -> summary"),
    ],
    name="load",
)

TOPICS = [
    "Paris is the capital of France.",
    "Redis keeps data in memory.",
    "Celery runs background jobs.",
    "DSPy programs language models.",
    "Rust has no garbage collector.",
    "The Nile flows north.",
]


def submit(client: Client, kind: str, rng: random.Random) -> Any:
    topic = rng.choice(TOPICS)
    question = f"What does this say? {topic}"
    if kind == "predict":
        return client.predict("question -> answer", question=question)
    if kind == "chain_of_thought":
        return client.chain_of_thought("question -> answer", question=question)
    if kind == "pipeline":
        return client.run(PIPELINE, question=question)
    if kind == "embed":
        return client.submit(JobKind.EMBED, inputs={"texts": rng.sample(TOPICS, 2)})
    return client.submit(JobKind.PING, queue="optimizer")


def main() -> None:
    redis_url, index, count, window = (
        sys.argv[1],
        int(sys.argv[2]),
        int(sys.argv[3]),
        int(sys.argv[4]),
    )
    rng = random.Random(index)
    names = [name for name, _ in KINDS]
    plan = rng.choices(names, weights=[share for _, share in KINDS], k=count)
    plan[0] = "ping_optimizer"  # every producer reaches every queue, even in a small run
    latencies: dict[str, list[float]] = {name: [] for name in names}
    errors: list[str] = []
    lock = threading.Lock()
    slots = threading.Semaphore(window)
    settings = Settings.from_env(redis_url=redis_url)  # DSPEX_RESULT_TTL_S from the test

    def collect(kind: str, handle: Any) -> None:
        try:
            result = handle.result(timeout=300)
            timings = getattr(result, "timings", None) or result
            with lock:
                latencies[kind].append(timings.finished_at - timings.created_at)
        except Exception as exc:  # reported, and the test fails on any
            with lock:
                errors.append(f"{kind}: {type(exc).__name__}: {exc}"[:300])
        finally:
            slots.release()

    started = time.time()
    # This thread submits; waiter threads collect results as they come, so a slow job holds
    # one of the WINDOW slots, not the whole producer.
    with Client(settings) as client, ThreadPoolExecutor(window) as waiters:
        for kind in plan:
            slots.acquire()
            waiters.submit(collect, kind, submit(client, kind, rng))
    print(
        json.dumps(
            {
                "index": index,
                "latencies": latencies,
                "errors": errors,
                "started": started,
                "finished": time.time(),
            }
        )
    )


if __name__ == "__main__":
    main()
