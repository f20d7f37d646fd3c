"""Batch inference: ``client.batch`` over N rows vs DSPy's own ``Predict.batch`` in process.

The local LM server adds a fixed latency per call (100 ms by default), so both sides are
bound by how many calls they keep in flight, not by this machine's CPU. DSPy runs
``Predict.batch(num_threads=N)`` here; dspex-jobs runs the same rows as a registered program
through one ``general`` worker (prefork ``-c2``, each chunk on ``DSPEX_BATCH_ROW_THREADS``
threads, so N = 2 x row threads in flight), writing the JSONL output in input order. Rounds
alternate so machine noise hits both.

Run: .venv/bin/python bench/batch.py [--rows 1000] [--rounds 2] [--latency-ms 100]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import LM_MODEL, result_line

SIGNATURE = "question -> answer"


def rows(count: int, tag: str) -> list[dict[str, str]]:
    return [
        {"question": f"Item {i} ({tag}) is in box {i % 9}. Where is item {i}?"}
        for i in range(count)
    ]


def dspy_batch(lm_url: str, data: list[dict[str, str]], threads: int) -> float:
    import dspy

    lm = dspy.LM(LM_MODEL, api_base=lm_url, api_key="local", cache=False, num_retries=0)
    program = dspy.Predict(SIGNATURE)
    examples = [dspy.Example(**r).with_inputs("question") for r in data]
    with dspy.context(lm=lm, disable_history=True):
        started = time.perf_counter()
        results = program.batch(examples, num_threads=threads, disable_progress_bar=True)
        elapsed = time.perf_counter() - started
    assert len(results) == len(data)
    return len(data) / elapsed


def ours(client: object, data: list[dict[str, str]]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        report = client.batch("bench-qa@latest", data, Path(tmp) / "out.jsonl")  # type: ignore[attr-defined]
        elapsed = time.perf_counter() - started
    assert report.rows == len(data) and report.errors == 0, report
    return len(data) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=int(os.environ.get("BENCH_BATCH_ROWS", "1000")))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--row-threads", type=int, default=8)
    args = parser.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

    from dspex_jobs import Client
    from dspex_jobs.stack import LocalStack

    threads = 2 * args.row_threads
    env = {"DSPEX_BATCH_ROW_THREADS": str(args.row_threads)}
    with LocalStack(
        queues=("general",), env=env, lm_server_options={"latency_ms": args.latency_ms}
    ) as stack:
        assert stack.settings is not None and stack.lm_api_base is not None
        settings = stack.settings.model_copy(update={"batch_row_threads": args.row_threads})
        with Client(settings) as client:
            client.programs.define("bench-qa", {"module": "predict", "signature": SIGNATURE})
            client.programs.save("bench-qa", client.programs.spec("bench-qa"), {}, {})
            ours(client, rows(threads, "warm"))
            dspy_batch(stack.lm_api_base, rows(threads, "warm"), threads)
            base, mine = [], []
            for r in range(args.rounds):
                base.append(dspy_batch(stack.lm_api_base, rows(args.rows, f"d{r}"), threads))
                mine.append(ours(client, rows(args.rows, f"o{r}")))
    b, m = statistics.median(base), statistics.median(mine)
    print(
        f"batch inference, {args.rows} rows per round, {args.rounds} rounds, LM latency "
        f"{args.latency_ms:g} ms, N={threads} calls in flight, {os.cpu_count()} CPUs\n"
    )
    print(f"{'path':<52}{'median rows/s':>14}")
    print(f"{'DSPy Predict.batch(num_threads=N), in process':<52}{b:>14.1f}")
    print(f"{'dspex-jobs client.batch, 1 general worker (-c2)':<52}{m:>14.1f}")
    print(
        f"\nclient.batch / DSPy batch: {m / b:.2f}x (goal >= 0.8x: chunks, Redis and "
        "result files cost little next to the LM)"
    )
    result_line(
        "batch",
        "batch_rows_per_s",
        m,
        b,
        m / b,
        "client.batch >= 0.8x DSPy Predict.batch at the same calls in flight",
        rows=args.rows,
    )


if __name__ == "__main__":
    main()
