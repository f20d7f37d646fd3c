"""Routing overhead: what a routing decision and a routed call cost, against a bare call.

Measured in interleaved rounds (so machine noise hits every case alike), median microseconds
per call:

* ``direct``: a dict lookup and a function call (the baseline: routing with no router at all);
* ``route warm``: ``router.route(op)`` with the decision cached, no telemetry handler attached;
* ``route warm + handler``: the same with a handler attached to ``dspex.router.route`` (what
  production looks like once an exporter listens): the figure held to the goal;
* ``route cold``: the decision cache emptied before every call (registry lookup + strategy);
* ``call``: ``router.call(op)`` of a native no-op implementation (decide, run, count);
* ``call + fallback``: the first implementation raises ``UnsupportedOperation``, the second
  answers (two attempts, a fallback event);
* ``emit, no handler``: ``telemetry.emit`` of an event nobody listens to.

The last line is JSON: the warm decision with a handler, against the direct call measured in
the same run (``ratio`` = direct / routed, so bigger is better and 1.0 would mean free). The
seed's bar was 10 ms; the goal here is under 20 microseconds.

Run: .venv/bin/python bench/router.py [--rounds N]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

from dspex_jobs import telemetry
from dspex_jobs.errors import UnsupportedOperation
from dspex_jobs.router import ROUTE_EVENT, Registry, Router

GOAL_US = 20.0
SEED_BAR_US = 10_000.0


def noop() -> None:
    return None


def unsupported() -> None:
    raise UnsupportedOperation("not this one")


def listener(name: str, measurements: Mapping[str, float], metadata: Mapping[str, Any]) -> None:
    return None


def per_call_us(run: Callable[[], None], calls: int) -> float:
    """Microseconds per call of ``run``, which makes ``calls`` calls."""
    gc.disable()
    try:
        start = time.perf_counter_ns()
        run()
        return (time.perf_counter_ns() - start) / calls / 1000
    finally:
        gc.enable()


def build() -> Router:
    registry = Registry()
    registry.register("bench.noop", noop)
    # A dspy implementation too, so the decision has a fallback to order (never imported).
    registry.register("bench.noop", target="dspex_jobs.router.dspy_ops:predict", kind="dspy")
    registry.register("bench.fallback", unsupported, name="first")
    registry.register("bench.fallback", noop, name="second")
    return Router(registry)


TABLE: dict[str, Callable[[], None]] = {"bench.noop": noop}


def direct(router: Router, calls: int) -> None:
    for _ in range(calls):
        TABLE["bench.noop"]()


def route_warm(router: Router, calls: int) -> None:
    for _ in range(calls):
        router.route("bench.noop")


def route_cold(router: Router, calls: int) -> None:
    for _ in range(calls):
        router.clear_decisions()
        router.route("bench.noop")


def call(router: Router, calls: int) -> None:
    for _ in range(calls):
        router.call("bench.noop")


def call_fallback(router: Router, calls: int) -> None:
    for _ in range(calls):
        router.call("bench.fallback")


def emit_nobody(router: Router, calls: int) -> None:
    for _ in range(calls):
        telemetry.emit("dspex.bench.nobody", {}, {})


Case = Callable[[Router, int], None]


def with_handler(case: Case) -> Case:
    """``case`` run with a do-nothing handler attached to the route event."""

    def run(router: Router, calls: int) -> None:
        telemetry.attach("bench-router", ROUTE_EVENT, listener)
        try:
            case(router, calls)
        finally:
            telemetry.detach("bench-router")

    return run


FAST, SLOW = 20_000, 2_000
CASES: dict[str, tuple[Case, int]] = {
    "direct": (direct, FAST),
    "route warm": (route_warm, FAST),
    "route warm + handler": (with_handler(route_warm), FAST),
    "route cold": (route_cold, SLOW),
    "call": (call, FAST),
    "call + handler": (with_handler(call), FAST),
    "call + fallback": (call_fallback, SLOW),
    "emit, no handler": (emit_nobody, FAST),
}


def measure(rounds: int) -> dict[str, float]:
    """Median microseconds per call of each case (see the module docstring)."""
    router = build()
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(rounds):
        for name, (case, calls) in CASES.items():
            times[name].append(per_call_us(lambda: case(router, calls), calls))  # noqa: B023
        gc.collect()
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
    args = parser.parse_args()
    results = measure(args.rounds)

    load = os.getloadavg()[0]
    print(f"router overhead, median us per call over {args.rounds} interleaved rounds")
    print(f"({os.cpu_count()} CPUs, 1-minute load average {load:.2f} at the end)\n")
    direct = results["direct"]
    print(f"{'case':<24}{'us/call':>10}{'x direct':>10}")
    for name, value in results.items():
        print(f"{name:<24}{value:>10.3f}{value / direct:>10.1f}")
    decision = results["route warm + handler"]
    print(
        f"\nrouted call overhead over direct: {results['call'] - direct:.2f} us "
        f"({results['call + handler'] - direct:.2f} us with a handler attached)"
    )
    print(
        f"goal: a routing decision under {GOAL_US:.0f} us: "
        f"{'met' if decision < GOAL_US else 'NOT met'} ({decision:.2f} us); the seed's bar "
        f"was {SEED_BAR_US / 1000:.0f} ms ({SEED_BAR_US / decision:,.0f}x under it)"
    )
    print(json.dumps({
        "bench": "router", "metric": "route_decision_with_handler_median_us",
        "value": round(decision, 3), "baseline": round(direct, 3),
        "ratio": round(direct / decision, 3), "goal": f"< {GOAL_US:.0f} us",
    }))  # fmt: skip


if __name__ == "__main__":
    main()
