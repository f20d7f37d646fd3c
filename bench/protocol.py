"""Protocol layer: encode+decode time and bytes on the wire, JSON vs MessagePack vs Arrow vs auto.

Each payload is a real Celery task message (``app.amqp.as_task_v2``: headers, properties
and the ``[args, kwargs, embed]`` body) carrying one job envelope. Each way of encoding it
goes through exactly what a Redis broker does with it, using kombu's own code:

    encode: Producer._prepare (serializer, kombu compression) -> Channel.prepare_message
            -> body base64 (the Redis transport's body_encoding) -> the JSON envelope LPUSHed
    decode: json.loads -> Message(...) (base64 decode, kombu decompression) -> Message.decode()

"wire bytes" is the length of what is LPUSHed; it is checked against a real redis-server
(``LINDEX`` after ``send_task``) for the baseline and auto. Each run is timed twice: wall
clock (``perf_counter``, what the goal is stated in) and this process's CPU time
(``process_time``, user + system, every thread): on a shared machine other processes stretch
wall-clock runs, long ones more than short ones, so the CPU-time ratio is the one to trust
when the two disagree. Modes:

    json (kombu)        the baseline: kombu's json serializer, what the app used before
                        (``serializer="json"``: kombu.utils.json, its encoder and object hook)
    json (kombu)+zlib   the same with kombu's own compression (``compression="zlib"``)
    dspex-<codec>       our frame with the codec forced, uncompressed and with zstd
    dspex-auto          our default: the codec chosen per message, zstd above 16 KiB
    dspex-auto, Python passes
                        the same with a table's two passes over its rows in Python, as
                        where the C helper (dspex_jobs/protocol/_table_c.c) is not built

JSON cannot carry numpy arrays, so the kombu baseline gets the matrix as ``tolist()``
(what a JSON producer must send); our codecs get the float32 array itself.

Run: .venv/bin/python bench/protocol.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import string
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from celery import Celery
from kombu import Connection
from kombu.utils.json import dumps as kombu_json_dumps
from kombu.utils.json import loads as kombu_json_loads

from dspex_jobs.app import make_app
from dspex_jobs.embedded import EmbeddedRedis
from dspex_jobs.jobs import Job, JobKind
from dspex_jobs.protocol import CONTENT_TYPE, EncodeOptions, _table, register_serializer
from dspex_jobs.settings import Settings

BUDGET_BYTES = 256 * 1024 * 1024
GOAL = (
    "auto >= 5x faster and >= 3x smaller than JSON on the 1 MB table; "
    "small job not more than 5% slower than JSON"
)


# -- payloads --------------------------------------------------------------------------------


def small_job() -> dict[str, Any]:
    """A typical question-answering job: about 1 KB of JSON."""
    context = [
        "The sky appears blue because molecules scatter short wavelengths more.",
        "Rayleigh scattering is inversely proportional to the fourth power of wavelength.",
        "At sunset light travels through more air, so reds dominate.",
        "Clouds are white because droplets scatter all wavelengths about equally.",
    ]
    return _job(
        "question: str, context: list[str] -> answer: str, confidence: float",
        {"question": "Why is the sky blue during the day?", "context": context * 2},
    )


def table_job(rows_n: int = 10_000) -> dict[str, Any]:
    """10,000 rows of mixed columns (int, str, float, str, bool): about 1 MB of JSON."""
    rng = random.Random(7)
    labels = ["positive", "negative", "neutral", "mixed"]
    rows = [
        {
            "id": i,
            "text": "".join(
                rng.choice(string.ascii_lowercase + "  ") for _ in range(rng.randint(6, 18))
            ),
            "score": rng.random(),
            "label": rng.choice(labels),
            "ok": rng.random() < 0.9,
        }
        for i in range(rows_n)
    ]
    return _job("rows: list[dict] -> summary: str", {"rows": rows})


def matrix_job() -> tuple[dict[str, Any], dict[str, Any]]:
    """10,000 embeddings of dimension 384 (float32); and the same as lists for JSON."""
    matrix = np.random.default_rng(7).standard_normal((10_000, 384), dtype=np.float32)
    native = _job("embeddings -> clusters: list[int]", {"embeddings": matrix})
    as_lists = _job("embeddings -> clusters: list[int]", {"embeddings": matrix.tolist()})
    return native, as_lists


def text_job() -> dict[str, Any]:
    """A long, repetitive document: about 1 MB of text."""
    rng = random.Random(7)
    sentences = [
        f"Clause {i}: the supplier shall deliver the goods within {i % 30 + 1} days "
        f"of the purchase order, subject to section {i % 12 + 1}."
        for i in range(40)
    ]
    text = " ".join(rng.choice(sentences) for _ in range(9_300))
    return _job("document: str -> summary: str", {"document": text})


def _job(signature: str, inputs: dict[str, Any]) -> dict[str, Any]:
    wire = Job(kind=JobKind.PREDICT, signature=signature).to_wire()
    wire["inputs"] = inputs  # kept as Python values (numpy too); to_wire() would JSON them
    return wire


# -- the transport, as kombu does it ----------------------------------------------------------


@dataclass
class Mode:
    """One way of encoding: a kombu serializer name and kombu compression, or none."""

    name: str
    serializer: str
    compression: str | None = None
    json_baseline: bool = False
    pure_python: bool = False
    """Run with the table passes in Python, as where the C helper is not built."""


@dataclass(frozen=True)
class Figures:
    """One mode's figures on one payload."""

    median_ms: float
    min_ms: float
    cpu_ms: float
    wire_bytes: int


@dataclass
class Result:
    times_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    wire_bytes: int = 0


class Transport:
    """kombu's Redis transport steps, without the network round trip."""

    def __init__(self, app: Celery, url: str) -> None:
        self.app = app
        self.connection = Connection(url)
        self.channel: Any = self.connection.default_channel
        self.producer = app.amqp.Producer(self.channel)
        self.accept = {"application/json", CONTENT_TYPE}

    def message(self, wire: dict[str, Any]) -> Any:
        return self.app.amqp.as_task_v2("0" * 32, "dspex.predict", args=(wire,))

    def encode(self, task_message: Any, mode: Mode) -> str:
        headers = dict(task_message.headers)
        body, content_type, content_encoding = self.producer._prepare(
            task_message.body,
            serializer=mode.serializer,
            compression=mode.compression,
            headers=headers,
        )
        message = self.channel.prepare_message(
            body,
            0,
            content_type,
            content_encoding,
            headers,
            {**task_message.properties, "delivery_info": {}},
        )
        self.channel._inplace_augment_message(message, "", "general")
        return str(kombu_json_dumps(message))

    def decode(self, raw: str) -> Any:
        payload = kombu_json_loads(raw)
        return self.channel.Message(payload, channel=self.channel, accept=self.accept).decode()

    def close(self) -> None:
        self.connection.release()


def measure(transport: Transport, task_message: Any, mode: Mode) -> tuple[float, float, int]:
    """One encode + decode: wall ms, CPU ms, wire bytes."""
    if mode.pure_python:
        helper, _table._table_c = _table._table_c, None
        try:
            return measure(transport, task_message, replace(mode, pure_python=False))
        finally:
            _table._table_c = helper
    cpu_start = time.process_time()
    start = time.perf_counter()
    raw = transport.encode(task_message, mode)
    decoded = transport.decode(raw)
    elapsed_ms = (time.perf_counter() - start) * 1000
    cpu_ms = (time.process_time() - cpu_start) * 1000
    assert isinstance(decoded, list | tuple) and len(decoded) == 3
    del decoded  # freed outside the timed span, as a worker frees a job after running it
    return elapsed_ms, cpu_ms, len(raw.encode("utf-8"))


def wire_bytes_on_redis(app: Celery, url: str, wire: dict[str, Any]) -> int:
    """What ``send_task`` really LPUSHes, read back from redis-server."""
    import redis

    client = redis.Redis.from_url(url)
    client.delete("general")
    app.send_task("dspex.predict", args=(wire,), task_id="0" * 32, queue="general")
    raw = client.lindex("general", 0)
    client.delete("general")
    client.close()
    return len(raw or b"")


def run_case(
    transport: Transport, messages: dict[str, Any], modes: list[Mode], repeats: int, budget_s: float
) -> dict[str, Result]:
    """Median-ready samples of every mode, interleaved (both orders) so noise hits all alike.

    A mode stops sampling once it has used ``budget_s`` (the JSON baselines of the matrix
    take seconds each); a warm-up that took over half a second counts as a sample.
    """
    results = {m.name: Result() for m in modes}
    spent_s = dict.fromkeys(results, 0.0)
    for mode in modes:  # warm up (imports, caches) and record the size
        result = results[mode.name]
        elapsed_ms, cpu_ms, result.wire_bytes = measure(transport, _message(messages, mode), mode)
        if elapsed_ms > 500:
            result.times_ms.append(elapsed_ms)
            result.cpu_ms.append(cpu_ms)
    for i in range(repeats):
        for mode in modes if i % 2 == 0 else list(reversed(modes)):
            result = results[mode.name]
            if result.times_ms and spent_s[mode.name] > budget_s:
                continue
            elapsed_ms, cpu_ms, _ = measure(transport, _message(messages, mode), mode)
            result.times_ms.append(elapsed_ms)
            result.cpu_ms.append(cpu_ms)
            spent_s[mode.name] += elapsed_ms / 1000
    return results


def _message(messages: dict[str, Any], mode: Mode) -> Any:
    return messages["json" if mode.json_baseline else "native"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()

    forced = {
        codec: {
            "none": register_serializer(EncodeOptions(codec=codec, compression="none")),
            "zstd": register_serializer(EncodeOptions(codec=codec)),
        }
        for codec in ("json", "msgpack", "arrow")
    }
    modes = [
        Mode("json (kombu)", "json", json_baseline=True),
        Mode("json (kombu)+zlib", "json", "zlib", json_baseline=True),
    ]
    for codec in ("json", "msgpack", "arrow"):
        modes.append(Mode(f"dspex-{codec}", forced[codec]["none"]))
        modes.append(Mode(f"dspex-{codec}+zstd", forced[codec]["zstd"]))
    modes.append(
        Mode("dspex-auto, uncompressed", register_serializer(EncodeOptions(compression="none")))
    )
    modes.append(Mode("dspex-auto", "dspex"))
    if _table.COMPILED:  # what the C helper is worth, in the same run
        modes.append(Mode("dspex-auto, Python passes", "dspex", pure_python=True))

    matrix_native, matrix_lists = matrix_job()
    cases: list[tuple[str, dict[str, Any], dict[str, Any], int]] = [
        ("small job (1 KB)", small_job(), small_job(), 3000),
        ("1 MB job, 10,000 rows", table_job(), table_job(), 60),
        ("10,000 x 384 float32 matrix", matrix_native, matrix_lists, 10),
        ("1 MB repetitive text", text_job(), text_job(), 40),
    ]
    quick = 5 if args.quick else 1
    print(
        "payloads (JSON body of the job envelope): "
        + ", ".join(
            f"{label} {len(json.dumps(as_json)):,} B"
            for label, _, as_json, _ in cases
            if "matrix" not in label
        )
        + ", matrix 15,360,000 B of float32 (79 MB as JSON)"
    )
    print(
        "a table's rows into columns and back: "
        + (
            "the compiled helper (dspex_jobs/protocol/_table_c.c)\n"
            if _table.COMPILED
            else "pure Python (the C helper is not built: see setup.py)\n"
        )
    )

    with EmbeddedRedis() as server:
        # The JSON matrix is 79 MB: over the default 64 MiB decompression budget that kombu's
        # (bounded) zlib gets too, so the bench raises it.
        app = make_app(
            Settings.from_env(environ={}, redis_url=server.url, max_decompressed_bytes=BUDGET_BYTES)
        )
        transport = Transport(app, server.url)
        table: list[tuple[str, str, Figures]] = []
        summary: dict[str, dict[str, Figures]] = {}
        checked: list[str] = []
        try:
            for label, native, as_json, repeats in cases:
                messages = {"native": transport.message(native), "json": transport.message(as_json)}
                results = run_case(
                    transport, messages, modes, max(3, repeats // quick), budget_s=10.0 / quick
                )
                summary[label] = {}
                for mode in modes:
                    result = results[mode.name]
                    figures = Figures(
                        statistics.median(result.times_ms),
                        min(result.times_ms),
                        statistics.median(result.cpu_ms),
                        result.wire_bytes,
                    )
                    table.append((label, mode.name, figures))
                    summary[label][mode.name] = figures
                checked.append(
                    _check_on_redis(app, server.url, label, native, as_json, summary[label])
                )
        finally:
            transport.close()

    _print_table(table, summary)
    for line in checked:
        print(line)
    _print_verdict(summary)


def _check_on_redis(
    app: Celery,
    url: str,
    label: str,
    native: dict[str, Any],
    as_json: dict[str, Any],
    sizes: dict[str, Figures],
) -> str:
    json_app = make_app(
        Settings.from_env(environ={}, redis_url=url, max_decompressed_bytes=BUDGET_BYTES)
    )
    json_app.conf.task_serializer = "json"
    real_json = wire_bytes_on_redis(json_app, url, as_json)
    real_auto = wire_bytes_on_redis(app, url, native)
    return (
        f"  on redis-server, {label}: json {real_json:,} B "
        f"(table {sizes['json (kombu)'].wire_bytes:,}), auto {real_auto:,} B "
        f"(table {sizes['dspex-auto'].wire_bytes:,})"
    )


def _print_table(
    table: list[tuple[str, str, Figures]], summary: dict[str, dict[str, Figures]]
) -> None:
    print(
        "encode + decode of one Celery task message through kombu's Redis transport steps "
        "(base64 body, JSON envelope); wall ms (median of interleaved runs, and the "
        "fastest), CPU ms (median), bytes LPUSHed\n"
    )
    print(
        f"{'payload':<30}{'mode':<26}{'median ms':>11}{'min ms':>10}{'CPU ms':>10}"
        f"{'wire bytes':>14}{'JSON/this time':>16}{'JSON/this CPU':>15}{'JSON/this size':>16}"
    )
    for label, mode, figures in table:
        base = summary[label]["json (kombu)"]
        print(
            f"{label:<30}{mode:<26}{figures.median_ms:>11.3f}{figures.min_ms:>10.3f}"
            f"{figures.cpu_ms:>10.3f}{figures.wire_bytes:>14,}"
            f"{base.median_ms / figures.median_ms:>15.2f}x"
            f"{base.cpu_ms / figures.cpu_ms:>14.2f}x"
            f"{base.wire_bytes / figures.wire_bytes:>15.2f}x"
        )
    print()


def _print_verdict(summary: dict[str, dict[str, Figures]]) -> None:
    print("\nJSON (kombu) / dspex-auto:")
    for label, modes in summary.items():
        base, auto = modes["json (kombu)"], modes["dspex-auto"]
        print(
            f"  {label:<30} time {base.median_ms / auto.median_ms:7.2f}x   "
            f"CPU {base.cpu_ms / auto.cpu_ms:7.2f}x   "
            f"size {base.wire_bytes / auto.wire_bytes:7.2f}x"
        )
    table_base, table = (
        summary["1 MB job, 10,000 rows"]["json (kombu)"],
        summary["1 MB job, 10,000 rows"]["dspex-auto"],
    )
    small_base, small = (
        summary["small job (1 KB)"]["json (kombu)"],
        summary["small job (1 KB)"]["dspex-auto"],
    )
    time_ratio = table_base.median_ms / table.median_ms
    cpu_ratio = table_base.cpu_ms / table.cpu_ms
    size_ratio = table_base.wire_bytes / table.wire_bytes
    small_ratio = small_base.median_ms / small.median_ms
    small_cpu_ratio = small_base.cpu_ms / small.cpu_ms
    for clock, ratio, small_clock in (
        ("wall clock", time_ratio, small_ratio),
        ("CPU time", cpu_ratio, small_cpu_ratio),
    ):
        met = ratio >= 5 and size_ratio >= 3 and small_clock >= 1 / 1.05
        print(
            f"goal ({GOAL}), {clock}: {'met' if met else 'NOT met'} "
            f"(table {ratio:.2f}x, size {size_ratio:.2f}x, small {small_clock:.2f}x)"
        )
    print(
        json.dumps(
            {
                "bench": "protocol",
                "metric": "table_1mb_encode_decode_ms",
                "value": round(table.median_ms, 3),
                "baseline": round(table_base.median_ms, 3),
                "ratio": round(time_ratio, 3),
                "goal": GOAL,
                "cpu_value": round(table.cpu_ms, 3),
                "cpu_baseline": round(table_base.cpu_ms, 3),
                "cpu_ratio": round(cpu_ratio, 3),
                "size_ratio": round(size_ratio, 3),
                "small_time_ratio": round(small_ratio, 3),
                "small_cpu_ratio": round(small_cpu_ratio, 3),
                "compiled_table_passes": _table.COMPILED,
            }
        )
    )


if __name__ == "__main__":
    main()
