"""Producer import time: `import dspex_jobs` vs `import dspy`.

A producer (a web app, a script) imports dspex_jobs and never DSPy, LiteLLM or torch, so it
starts fast. Each import runs in a fresh interpreter under ``python -X importtime``; the figure
is the cumulative time of the top-level package, best of several runs (the first run also
warms the OS file cache). ``celery.app`` is shown as the floor: a producer enqueues through
Celery, so it pays for Celery, kombu and redis-py whatever we do.

Run: .venv/bin/python bench/imports.py [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import base_env, result_line


def import_s(module: str) -> float:
    """Cumulative import time of ``module`` in a fresh interpreter (seconds)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        env=base_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    for line in done.stderr.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[2] == module:
            return int(parts[1]) / 1e6
    raise RuntimeError(f"no importtime line for {module}")


def heavy_modules(module: str) -> list[str]:
    """Heavy packages that ``import module`` pulls in (should be none for dspex_jobs)."""
    code = (
        f"import sys, {module}; print(' '.join(m for m in ('dspy', 'litellm', 'torch', "
        "'sentence_transformers', 'numpy') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=base_env(), capture_output=True, text=True, check=True
    )
    return done.stdout.split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", "7")))
    args = parser.parse_args()
    ours = min(import_s("dspex_jobs") for _ in range(args.runs))
    theirs = min(import_s("dspy") for _ in range(max(3, args.runs // 2)))
    floor = min(import_s("celery.app") for _ in range(max(3, args.runs // 2)))
    heavy = heavy_modules("dspex_jobs")
    print(f"import time, best of {args.runs} fresh interpreters (python -X importtime)\n")
    print(f"{'import':<22}{'seconds':>10}")
    print(f"{'dspex_jobs':<22}{ours:>10.3f}")
    print(f"{'dspy':<22}{theirs:>10.3f}")
    print(f"{'celery.app (floor)':<22}{floor:>10.3f}")
    print(f"\nheavy packages imported by dspex_jobs: {', '.join(heavy) or 'none'}")
    print(f"dspex_jobs: {ours:.3f} s (goal <= 0.1 s); dspy / dspex_jobs: {theirs / ours:.1f}x")
    result_line(
        "imports",
        "import_dspex_jobs_s",
        ours,
        theirs,
        theirs / ours,
        "import dspex_jobs <= 0.1 s (and no dspy/litellm/torch)",
        heavy_imports=heavy,
        celery_app_s=round(floor, 4),
    )


if __name__ == "__main__":
    main()
