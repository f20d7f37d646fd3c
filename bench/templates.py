"""Prompt templates: rendering a cached template, against building it each time, in one run.

The template has five fields (the issue's case); a second one adds a loop over passages and
filters, to show what a richer prompt costs. Cases, in interleaved rounds, median
microseconds per call:

* ``cached render``: ``template.render(values)`` on a compiled template (the figure held to
  the goal);
* ``compile hit + render``: ``Template.compile(source).render(values)``, the producer's
  path: a cache lookup, then the render;
* ``build each time``: compile the source with no cache (parse, check, bound, generate and
  compile Python) and render: the baseline;
* for reference: plain ``jinja2.Environment`` (no sandbox, no limits) and Jinja's default
  ``ImmutableSandboxedEnvironment``, each rendering its compiled template, and ``str.format``.

The last line is JSON: cached render against build-each-time (``ratio`` = baseline / cached,
bigger is better).

Run: .venv/bin/python bench/templates.py [--rounds N]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from dspex_jobs.templates import Template
from dspex_jobs.templates.compiler import compile_source

GOAL_US = 20.0

FIVE_FIELDS = (
    "You are helping a {{ audience }} reader.\n"
    "Topic: {{ topic }}\nTone: {{ tone }}\nAnswer in {{ language }}.\n"
    "Question: {{ question }}"
)
FIVE_VALUES: dict[str, Any] = {
    "audience": "curious",
    "topic": "physics",
    "tone": "friendly",
    "language": "English",
    "question": "Why is the sky blue?",
}
FORMAT_TEXT = FIVE_FIELDS.replace("{{ ", "{").replace(" }}", "}")

WITH_LOOP = (
    "Answer in {{ language | upper }} using only these passages:\n"
    "{% for p in passages %}[{{ loop.index }}] {{ p | trim }}\n{% endfor %}"
    "{% if style %}Style: {{ style }}.{% endif %}\nQuestion: {{ question }}"
)
LOOP_VALUES: dict[str, Any] = {
    "language": "English",
    "style": "brief",
    "question": "Why is the sky blue?",
    "passages": [f"  Passage number {i} about Rayleigh scattering.  " for i in range(5)],
}


def per_call_us(run: Callable[[], None], calls: int) -> float:
    """Microseconds per call of ``run``, which makes ``calls`` calls."""
    gc.disable()
    try:
        start = time.perf_counter_ns()
        run()
        return (time.perf_counter_ns() - start) / calls / 1000
    finally:
        gc.enable()


def repeat(action: Callable[[], object], calls: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(calls):
            action()

    return run


def cases(source: str, values: dict[str, Any]) -> dict[str, tuple[Callable[[], object], int]]:
    """Each way to produce the prompt, with how many calls make one timing."""
    compiled = Template.compile(source)
    trimmed = {"trim_blocks": True, "lstrip_blocks": True}  # as ours, so the output is the same
    plain = jinja2.Environment(**trimmed).from_string(source)
    sandboxed = ImmutableSandboxedEnvironment(**trimmed).from_string(source)
    found: dict[str, tuple[Callable[[], object], int]] = {
        "cached render": (lambda: compiled.render(values), 5000),
        "compile hit + render": (lambda: Template.compile(source).render(values), 5000),
        "build each time": (
            lambda: Template(source, *compile_source(source), frozenset()).render(values),
            50,
        ),
        "jinja2 plain (reference)": (lambda: plain.render(values), 5000),
        "jinja2 sandboxed (reference)": (lambda: sandboxed.render(values), 5000),
    }
    if source == FIVE_FIELDS:
        found["str.format (reference)"] = (lambda: FORMAT_TEXT.format(**values), 5000)
    return found


def measure(source: str, values: dict[str, Any], rounds: int) -> dict[str, float]:
    """Median microseconds per call of each case."""
    table = cases(source, values)
    expected = Template.compile(source).render(values)
    assert all(run() == expected for run, _ in table.values()), "the cases disagree"
    times: dict[str, list[float]] = {name: [] for name in table}
    for _ in range(rounds):
        for name, (action, calls) in table.items():
            times[name].append(per_call_us(repeat(action, calls), calls))
        gc.collect()
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
    args = parser.parse_args()
    five = measure(FIVE_FIELDS, FIVE_VALUES, args.rounds)
    loop = measure(WITH_LOOP, LOOP_VALUES, args.rounds)

    load = os.getloadavg()[0]
    print(f"prompt templates, median us per call over {args.rounds} interleaved rounds")
    print(f"({os.cpu_count()} CPUs, 1-minute load average {load:.2f} at the end)\n")
    print(f"{'case':<30}{'5 fields':>10}{'loop+filters':>14}")
    for name, value in five.items():
        other = f"{loop[name]:>14.2f}" if name in loop else f"{'-':>14}"
        print(f"{name:<30}{value:>10.2f}{other}")
    cached, built = five["cached render"], five["build each time"]
    print(
        f"\ncached render vs build each time: {built / cached:.0f}x faster (5 fields), "
        f"{loop['build each time'] / loop['cached render']:.0f}x (loop)"
    )
    print(
        f"sandbox and limits cost vs plain jinja2: "
        f"{cached - five['jinja2 plain (reference)']:+.2f} us (5 fields)"
    )
    print(
        f"goal: cached render of 5 fields under {GOAL_US:.0f} us: "
        f"{'met' if cached < GOAL_US else 'NOT met'} ({cached:.2f} us)"
    )
    print(json.dumps({
        "bench": "templates", "metric": "cached_render_5_fields_median_us",
        "value": round(cached, 3), "baseline": round(built, 1),
        "ratio": round(built / cached, 1), "goal": f"< {GOAL_US:.0f} us",
    }))  # fmt: skip


if __name__ == "__main__":
    main()
