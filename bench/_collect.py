"""``make bench``: run every ``bench/*.py``, collect their results, write the table.

Each benchmark runs on its own (a fresh interpreter, its own Redis and workers) and prints
as its last line one JSON object (see DESIGN.md). This script streams their output, keeps
those lines in ``bench/results.json`` and rewrites the table in ``docs/benchmarks.md``
between the ``bench:begin``/``bench:end`` markers (the prose around it is kept).

Run: .venv/bin/python bench/_collect.py [NAME ...]   (default: every benchmark)
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results.json"
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
TIMEOUT_S = int(os.environ.get("BENCH_TIMEOUT_S", "900"))


def run(path: Path) -> dict[str, Any]:
    print(f"== {path.relative_to(ROOT)}", flush=True)
    started = time.monotonic()
    last = ""
    with subprocess.Popen(
        [sys.executable, str(path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                print(line, end="", flush=True)
                if line.strip():
                    last = line.strip()
            proc.wait(TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
    seconds = round(time.monotonic() - started, 1)
    entry: dict[str, Any] = {"file": path.name, "seconds": seconds, "exit": proc.returncode}
    try:
        result = json.loads(last)
        if not isinstance(result, dict) or "bench" not in result:
            raise ValueError("not a result object")
        entry["result"] = result
    except ValueError:
        entry["error"] = f"no JSON result line (exit {proc.returncode}): {last[:200]}"
    return entry


def table(entries: list[dict[str, Any]]) -> str:
    rows = [
        "| bench | metric | value | baseline | ratio (bigger is better) | goal |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for entry in entries:
        r = entry.get("result")
        if r is None:
            rows.append(f"| {entry['file']} | failed: {entry['error']} | | | | |")
            continue
        rows.append(
            f"| {r['bench']} | {r['metric']} | {r['value']} | {r['baseline']} | "
            f"{r['ratio']} | {r.get('goal', '')} |"
        )
    return "\n".join(rows)


def write_doc(entries: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    block = (
        f"{BEGIN}\n_Last `make bench`: {meta['finished_at']}, {meta['cpus']} CPUs, "
        f"Python {meta['python']}, {meta['seconds']} s in all._\n\n{table(entries)}\n{END}"
    )
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text)


def main() -> int:
    names = sys.argv[1:]
    paths = sorted(p for p in HERE.glob("*.py") if not p.name.startswith("_"))
    if names:
        paths = [p for p in paths if p.stem in names]
    started = time.monotonic()
    entries = [run(path) for path in paths]
    meta = {
        "finished_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "seconds": round(time.monotonic() - started, 1),
    }
    if names and RESULTS.exists():  # a partial run updates its benchmarks only
        kept = [
            e
            for e in json.loads(RESULTS.read_text()).get("results", [])
            if e.get("file") not in {p.name for p in paths}
        ]
        entries = sorted(kept + entries, key=lambda e: str(e.get("file")))
    RESULTS.write_text(json.dumps({**meta, "results": entries}, indent=2) + "\n")
    write_doc(entries, meta)
    print(f"\n{table(entries)}\n\nwrote {RESULTS.relative_to(ROOT)} and {DOC.relative_to(ROOT)}")
    return 1 if any("error" in e for e in entries) else 0


if __name__ == "__main__":
    sys.exit(main())
