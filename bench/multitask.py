"""What the session gate costs a session job: one admit on submit, one release at its end.

Each is one Lua call (dspex_jobs.multitask). The baseline is the floor for two calls: two
PINGs to the same embedded Redis, measured in the same run. Rounds alternate.

Run: .venv/bin/python bench/multitask.py [--jobs 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import result_line

from dspex_jobs.embedded import EmbeddedRedis
from dspex_jobs.keys import Keys
from dspex_jobs.multitask import SessionGate

PAYLOAD = {
    "id": "x",
    "kind": "predict",
    "signature": "question -> answer",
    "inputs": {"question": "q" * 200},
}


def two_pings_us(client: redis.Redis, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        client.ping()
        client.ping()
    return (time.perf_counter() - started) / n * 1e6


def gate_us(gate: SessionGate, n: int, offset: int) -> float:
    started = time.perf_counter()
    for i in range(offset, offset + n):
        gate.admit("s", f"j{i}", "enqueue", task="dspex.predict", queue="general", payload=PAYLOAD)
        gate.release("s", f"j{i}")
    return (time.perf_counter() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url)
        gate = SessionGate(client, Keys(), ttl_s=60)
        gate_us(gate, 200, 0)  # load the scripts, warm the connection
        pings, gates = [], []
        for r in range(args.rounds):
            pings.append(two_pings_us(client, args.jobs))
            gates.append(gate_us(gate, args.jobs, (r + 1) * args.jobs))
        client.close()
    base, value = min(pings), min(gates)
    print(f"{'two PINGs (the floor of two round trips)':<46}{base:>8.0f} us")
    print(f"{'admit + release of one session job':<46}{value:>8.0f} us")
    result_line(
        "multitask", "admit+release per session job (us)", value, base, base / value, ">= 0.5"
    )


if __name__ == "__main__":
    main()
