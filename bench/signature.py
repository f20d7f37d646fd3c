"""Signature parsing: the native engine against ``dspy.Signature(text)``, in one run.

For each signature it measures, in interleaved rounds so machine noise hits all alike:

* ``uncached``: the internal parse with no cache in the way (what a cache miss costs);
* ``miss``: ``Signature.parse`` on texts it has never seen (the miss plus the LRU's upkeep);
* ``cached``: ``Signature.parse`` on a text it has seen;
* ``dspy``: ``dspy.Signature(text)``, which has no cache.

Medians per call over the rounds; the ratio is DSPy's median over our uncached one. The last
line is JSON, for the seed's signature.

Run: .venv/bin/python bench/signature.py [--rounds N]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import time
from collections.abc import Callable

import dspy

from dspex_jobs.signature import Signature, clear_caches
from dspex_jobs.signature.signature import _parse_uncached

SEED = "question: str, context: list[str] -> answer: str, confidence: float"
SIGNATURES = [
    SEED,
    "question -> answer",
    "context: list[str], question: str -> reasoning: str, answer: str",
    "image: dspy.Image, history: dspy.History | None -> caption: str, tags: dict[str, list[int]]",
    "review: str -> sentiment: Literal['positive', 'negative', 'neutral'], score: float",
]


def per_call_us(run: Callable[[], None], calls: int) -> float:
    """Microseconds per call of ``run``, which makes ``calls`` calls."""
    gc.disable()
    try:
        start = time.perf_counter_ns()
        run()
        return (time.perf_counter_ns() - start) / calls / 1000
    finally:
        gc.enable()


def measure(text: str, rounds: int) -> dict[str, float]:
    """Median microseconds per call of each way to parse ``text``."""
    n_ours, n_cached, n_dspy = 2000, 20000, 20
    first = text.split(":")[0].split(" ")[0]  # renamed in each unique text: same work to parse
    unique = iter([text.replace(first, f"{first}{i}", 1) for i in range(rounds * n_ours)])
    Signature.parse(text)
    times: dict[str, list[float]] = {"uncached": [], "miss": [], "cached": [], "dspy": []}

    def uncached() -> None:
        for _ in range(n_ours):
            _parse_uncached(text)

    def miss() -> None:
        for _ in range(n_ours):
            Signature.parse(next(unique))

    def cached() -> None:
        for _ in range(n_cached):
            Signature.parse(text)

    def dspy_parse() -> None:
        for _ in range(n_dspy):
            dspy.Signature(text)

    for _ in range(rounds):
        times["uncached"].append(per_call_us(uncached, n_ours))
        times["miss"].append(per_call_us(miss, n_ours))
        times["cached"].append(per_call_us(cached, n_cached))
        times["dspy"].append(per_call_us(dspy_parse, n_dspy))
        gc.collect()
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=25, help="interleaved rounds per signature")
    args = parser.parse_args()
    clear_caches()
    results = {text: measure(text, args.rounds) for text in SIGNATURES}

    load = os.getloadavg()[0]
    print(f"signature parsing, median us per call over {args.rounds} interleaved rounds")
    print(f"({os.cpu_count()} CPUs, 1-minute load average {load:.2f} at the end)\n")
    print(f"{'signature':<44}{'uncached':>10}{'miss':>8}{'cached':>8}{'dspy':>10}{'dspy/ours':>11}")
    for text, r in results.items():
        label = text if len(text) <= 42 else text[:39] + "..."
        print(
            f"{label:<44}{r['uncached']:>10.2f}{r['miss']:>8.2f}{r['cached']:>8.3f}"
            f"{r['dspy']:>10.1f}{r['dspy'] / r['uncached']:>10.0f}x"
        )
    seed = results[SEED]
    ok = seed["dspy"] / seed["uncached"] >= 80 and seed["uncached"] < 10 and seed["cached"] < 1
    print(f"\nseed: uncached < 10 us, >= 80x DSPy, cached < 1 us: {'met' if ok else 'NOT met'}")
    print(json.dumps({
        "bench": "signature", "metric": "uncached_parse_median_us",
        "value": round(seed["uncached"], 3), "baseline": round(seed["dspy"], 1),
        "ratio": round(seed["dspy"] / seed["uncached"], 1), "goal": ">= 80x and < 10 us",
    }))  # fmt: skip


if __name__ == "__main__":
    main()
