"""Embedding throughput: in-process sentence-transformers against the neural queue.

One run measures, on the same texts and the same machine:

1. ``SentenceTransformer.encode`` in this process (the baseline for big jobs), with the batch
   size the worker uses;
2. the same texts as **one big job** through the queue (``client.embed(texts)``): split into
   model-sized batches on the worker, vectors back as float32 bytes;
3. **many small concurrent jobs** (one text each) through a worker that micro-batches them;
4. the same small jobs through a worker with micro-batching off (``DSPEX_NEURAL_MAX_BATCH=1``:
   one text per model call, one at a time), the baseline for micro-batching;
5. for reference, as many ping jobs (no model: the per-job cost no batching removes) and
   in-process ``encode`` of one text per call (the model's own cost of not batching).

Both workers are real ``dspex-jobs worker --queue neural`` processes (the neural pool profile:
threads), each on its own Redis database of one embedded ``redis-server``, started and stopped
here. Measurements are interleaved round by round so machine noise hits all of them alike;
the table shows each path's best and median round, and each ratio is the median over rounds
of that round's pair, which ran back to back (this machine is shared and noisy: a ratio of
two bests can pair a quiet moment with a busy one). ``--pools`` adds a prefork worker (two
processes, each with its own model and only its own job to batch) to compare pool choices;
``--concurrency`` and ``--max-wait-ms`` tune the micro-batching worker.

Run: .venv/bin/python bench/neural.py [--big-texts 256] [--small-jobs 64] [--rounds 5]
Full size: .venv/bin/python bench/neural.py --big-texts 4096 --small-jobs 1024 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dspex_jobs import Client, JobKind
from dspex_jobs.embedded import EmbeddedRedis
from dspex_jobs.neural.vectors import Embeddings
from dspex_jobs.stack import LocalStack

_WORDS = [
    "the",
    "a",
    "model",
    "queue",
    "worker",
    "vector",
    "search",
    "index",
    "redis",
    "batch",
    "embedding",
    "sentence",
    "retrieval",
    "document",
    "fast",
    "slow",
    "local",
    "server",
    "python",
    "celery",
    "job",
    "result",
    "stream",
    "token",
    "river",
    "mountain",
    "city",
    "music",
    "history",
    "science",
    "market",
    "garden",
    "winter",
    "coffee",
    "train",
    "language",
    "paper",
    "light",
    "question",
    "answer",
    "network",
    "memory",
    "energy",
    "water",
    "forest",
    "ocean",
    "bridge",
    "story",
    "game",
    "doctor",
]


ALONE = 32
"""Texts encoded one per call in process (a reference row: the model's cost per call)."""


def make_texts(count: int, seed: int) -> list[str]:
    """Deterministic sentences of 6 to 24 words."""
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(_WORDS) for _ in range(rng.randint(6, 24))).capitalize() + "."
        for _ in range(count)
    ]


def start_worker(url: str, label: str, args: list[str], env: dict[str, str]) -> LocalStack:
    stack = LocalStack(
        redis_url=url, lm="openai/none", queues=["neural"], worker_args={"neural": args}, env=env
    )
    stack.start(timeout_s=180)
    assert stack.settings is not None
    with Client(stack.settings) as client:  # load the model now, not in the first round
        client.embed(["warm up"], timeout_s=180)
    print(f"  worker ready: {label}", file=sys.stderr)
    return stack


def small_jobs(client: Client, texts: list[str]) -> float:
    """Submit one job per text at once, wait for all; seconds taken."""
    started = time.perf_counter()
    handles = [client.submit(JobKind.EMBED, inputs={"texts": [text]}) for text in texts]
    for handle in handles:
        Embeddings.from_outputs(handle.result(timeout=300).outputs)
    return time.perf_counter() - started


def ping_jobs(client: Client, count: int) -> float:
    """As many jobs that do nothing: the per-job cost that no batching can remove."""
    started = time.perf_counter()
    handles = [client.ping(queue="neural") for _ in range(count)]
    for handle in handles:
        handle.result(timeout=300)
    return time.perf_counter() - started


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--big-texts", type=int, default=256, help="texts in the big job")
    parser.add_argument("--small-jobs", type=int, default=64, help="one-text jobs")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--pool", default=None, help="pool of the two main workers (default: the neural profile's)"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="their pool size (default: DSPEX_NEURAL_CONCURRENCY's default)",
    )
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=None,
        help="DSPEX_NEURAL_MAX_WAIT_MS of both workers (default: the setting's)",
    )
    parser.add_argument(
        "--pools", action="store_true", help="also measure a prefork -c2 worker (pool comparison)"
    )
    args = parser.parse_args()

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    big, small = make_texts(args.big_texts, 1), make_texts(args.small_jobs, 2)
    with EmbeddedRedis() as server:
        base = f"redis://127.0.0.1:{server.port}"
        pool = ([] if args.pool is None else ["--pool", args.pool]) + (
            [] if args.concurrency is None else ["--concurrency", str(args.concurrency)]
        )
        wait = (
            {} if args.max_wait_ms is None else {"DSPEX_NEURAL_MAX_WAIT_MS": str(args.max_wait_ms)}
        )
        specs = {
            "batched": (pool, wait),
            "unbatched": (pool, {**wait, "DSPEX_NEURAL_MAX_BATCH": "1"}),
        }
        if args.pools:
            specs["prefork -c2"] = (["--pool", "prefork", "--concurrency", "2"], {})
        stacks: dict[str, LocalStack] = {}
        try:
            for db, (label, (worker_args, env)) in enumerate(specs.items()):
                stacks[label] = start_worker(f"{base}/{db}", label, worker_args, env)
            seconds, device = run_rounds(args, big, small, stacks)
        finally:
            for stack in stacks.values():
                stack.stop()
    report(args, seconds, device)


def run_rounds(
    args: argparse.Namespace, big: list[str], small: list[str], stacks: dict[str, LocalStack]
) -> tuple[dict[str, list[float]], str]:
    """Seconds per measurement and round, and the device the in-process model ran on."""
    from dspex_jobs.neural.model import load_encoder
    from dspex_jobs.neural.service import DEFAULT_MAX_BATCH

    encoder = load_encoder(None, "auto")
    batch = DEFAULT_MAX_BATCH[encoder.device]
    model = encoder.model
    clients = {label: Client(stack.settings) for label, stack in stacks.items()}
    model.encode(big, batch_size=batch)  # warm both paths on these very shapes
    clients["batched"].embed(big, timeout_s=600)
    seconds: dict[str, list[float]] = {}

    def record(name: str, value: float) -> None:
        seconds.setdefault(name, []).append(value)

    try:
        for _ in range(args.rounds):
            record(
                "in-process encode, big",
                timed(
                    lambda: model.encode(
                        big, batch_size=batch, convert_to_numpy=True, show_progress_bar=False
                    )
                ),
            )
            record(
                "queue, one big job", timed(lambda: clients["batched"].embed(big, timeout_s=600))
            )
            record("queue, small jobs, micro-batched", small_jobs(clients["batched"], small))
            record("queue, small jobs, one at a time", small_jobs(clients["unbatched"], small))
            if "prefork -c2" in clients:
                record("queue, small jobs, prefork -c2", small_jobs(clients["prefork -c2"], small))
            record("queue, ping jobs (no model)", ping_jobs(clients["batched"], len(small)))
            record(
                "in-process encode, one text per call",
                timed(
                    lambda: [
                        model.encode([text], show_progress_bar=False) for text in small[:ALONE]
                    ]
                ),
            )
    finally:
        for client in clients.values():
            client.close()
    return seconds, f"{encoder.device} (batch size {batch})"


def paired_ratio(seconds: dict[str, list[float]], faster: str, slower: str) -> float:
    """Median over rounds of ``slower``'s time / ``faster``'s time (same texts per round):
    both ran back to back, so each round's ratio saw the same machine."""
    return statistics.median(s / f for f, s in zip(seconds[faster], seconds[slower], strict=True))


def report(args: argparse.Namespace, seconds: dict[str, list[float]], device: str) -> None:
    sizes = {name: args.big_texts if "big" in name else args.small_jobs for name in seconds}
    sizes["in-process encode, one text per call"] = min(ALONE, args.small_jobs)
    best = {name: sizes[name] / min(values) for name, values in seconds.items()}
    median = {name: sizes[name] / statistics.median(values) for name, values in seconds.items()}
    print(
        f"embedding throughput, all-MiniLM-L6-v2 on {device}, {args.rounds} rounds, "
        f"{args.big_texts}-text big job, {args.small_jobs} one-text jobs\n"
    )
    print(f"{'path':<40}{'best sent/s':>13}{'median':>10}")
    for name in seconds:
        print(f"{name:<40}{best[name]:>13.1f}{median[name]:>10.1f}")
    big, small = "queue, one big job", "queue, small jobs, micro-batched"
    in_process, one_at_a_time = "in-process encode, big", "queue, small jobs, one at a time"
    big_ratio = paired_ratio(seconds, big, in_process)
    small_ratio = paired_ratio(seconds, small, one_at_a_time)
    print("\nratios: median over rounds of each round's pair (best/best in brackets)")
    print(
        f"big job through the queue / in-process: {big_ratio:.2f}x "
        f"({best[big] / best[in_process]:.2f}x) (goal >= 0.9x)"
    )
    print(
        f"small jobs micro-batched / one at a time: {small_ratio:.2f}x "
        f"({best[small] / best[one_at_a_time]:.2f}x) (goal >= 3x)"
    )
    print(
        json.dumps(
            {
                "bench": "neural",
                "metric": "small_jobs_microbatched_sentences_per_s",
                "value": round(median[small], 2),
                "baseline": round(median[one_at_a_time], 2),
                "ratio": round(small_ratio, 3),
                "goal": "micro-batched >= 3x one at a time",
                "device": device.split()[0],
                "secondary": {
                    "metric": "big_job_queue_sentences_per_s",
                    "value": round(median[big], 2),
                    "baseline": round(median[in_process], 2),
                    "ratio": round(big_ratio, 3),
                    "goal": "queue >= 0.9x in-process",
                },
            }
        )
    )


if __name__ == "__main__":
    main()
