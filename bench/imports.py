"""Producer start-up: `import dspex_jobs`, `from dspex_jobs import Client`, vs `import dspy`.

A producer (a web app, a script) imports dspex_jobs and never DSPy, LiteLLM or torch, so it
starts fast. ``import dspex_jobs`` is the goal figure: its public names load on first use
(PEP 562, ``dspex_jobs/__init__.py``), so it costs next to nothing. ``from dspex_jobs import
Client`` is what a producer really pays before it can enqueue, and ``Client()`` what building
one adds (the Celery app, its task registry); ``celery.app`` is their floor: a producer
enqueues through Celery, so it pays for Celery, kombu and redis-py whatever we do.

Each statement runs in a fresh interpreter and is timed there with ``time.perf_counter``
around it (``python -X importtime`` misses the submodule a ``from`` import loads after the
package itself). The figure is the best of several runs, the statements interleaved. The
interpreters read bytecode from a private cache (``PYTHONPYCACHEPREFIX``, warmed by one
uncounted run of each statement), as an installed package does: without one (say with
``PYTHONDONTWRITEBYTECODE=1`` on an editable install) every run would also compile our
sources.

Run: .venv/bin/python bench/imports.py [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import base_env, result_line

HEAVY = ("dspy", "litellm", "torch", "sentence_transformers", "numpy")

STATEMENTS = {
    "import dspex_jobs": "import dspex_jobs",
    "from dspex_jobs import Client": "from dspex_jobs import Client",
    "  + Client()": "from dspex_jobs import Client; Client().close()",
    "import celery.app (floor)": "import celery.app",
    "  + redis, pydantic_settings": "import celery.app, redis, pydantic_settings",
    "import dspy": "import dspy",
}
"""Label -> the statement timed. ``Client()`` needs no Redis until it submits; the floor
with redis-py and pydantic-settings is every third-party import a Client cannot do without
(redis-py imports the OpenTelemetry SDK too when it is installed)."""


def _env(cache: str) -> dict[str, str]:
    env = base_env(PYTHONPYCACHEPREFIX=cache)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def statement_s(statement: str, env: dict[str, str]) -> float:
    """Seconds ``statement`` takes in a fresh interpreter."""
    code = f"import time\nt = time.perf_counter()\n{statement}\nprint(time.perf_counter() - t)"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return float(done.stdout.split()[-1])


def heavy_modules(statement: str, env: dict[str, str]) -> list[str]:
    """Heavy packages ``statement`` pulls in (should be none for a producer)."""
    code = f"import sys\n{statement}\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", "7")))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dspex-bench-pyc-") as cache:
        env = _env(cache)
        for statement in STATEMENTS.values():  # compile into the cache; not counted
            statement_s(statement, env)
        times: dict[str, list[float]] = {label: [] for label in STATEMENTS}
        for _ in range(args.runs):  # interleaved: load changes hit every statement alike
            for label, statement in STATEMENTS.items():
                times[label].append(statement_s(statement, env))
        heavy = sorted({m for s in list(STATEMENTS.values())[:3] for m in heavy_modules(s, env)})
    best = {label: min(values) for label, values in times.items()}
    ours, client = best["import dspex_jobs"], best["from dspex_jobs import Client"]
    construct, floor = best["  + Client()"], best["import celery.app (floor)"]
    floors = best["  + redis, pydantic_settings"]
    theirs = best["import dspy"]
    print(f"fresh interpreters, bytecode cached, {args.runs} runs each (seconds)\n")
    print(f"{'statement':<32}{'best':>8}{'median':>8}")
    for label, values in times.items():
        print(f"{label:<32}{best[label]:>8.3f}{statistics.median(values):>8.3f}")
    print(f"\nheavy packages imported by a producer: {', '.join(heavy) or 'none'}")
    print(
        f"import dspex_jobs: {ours:.4f} s (goal <= 0.1 s); from dspex_jobs import Client: "
        f"{client:.3f} s, {client - floors:.3f} s over its third-party floor; "
        f"dspy / dspex_jobs: {theirs / ours:.0f}x"
    )
    result_line(
        "imports",
        "import_dspex_jobs_s",
        ours,
        theirs,
        theirs / ours,
        "import dspex_jobs <= 0.1 s (and no dspy/litellm/torch)",
        heavy_imports=heavy,
        client_import_s=round(client, 4),
        client_construct_s=round(construct, 4),
        celery_app_s=round(floor, 4),
        third_party_floor_s=round(floors, 4),
    )


if __name__ == "__main__":
    main()
