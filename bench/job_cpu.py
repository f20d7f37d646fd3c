"""CPU per job, by process: where a one-text ``embed`` job's cost goes (docs/neural.md).

Wall-clock rates on a shared 2-core machine move by 20% and more with other load; CPU time
per job moves much less, so this measures what each process spends per job: the neural
worker (Celery, the job bookkeeping, the model), the producer (submit, wait, decode) and
``redis-server``, for ping jobs (no model: the per-job cost that batching cannot remove) and
one-text embed jobs, through one worker micro-batching and one with
``DSPEX_NEURAL_MAX_BATCH=1``. Each measurement runs ``--rounds`` rounds of ``--jobs``
concurrent jobs; the table shows the median over ``--repeats`` repeats.

Run: .venv/bin/python bench/job_cpu.py [--jobs 64] [--rounds 5] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from neural import make_texts

from dspex_jobs import Client, JobKind
from dspex_jobs.embedded import EmbeddedRedis
from dspex_jobs.neural.vectors import Embeddings
from dspex_jobs.stack import LocalStack


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(client: Client, kind: str, texts: list[str]) -> None:
    if kind == "ping":
        handles = [client.ping(queue="neural") for _ in texts]
        for handle in handles:
            handle.result(timeout=300)
        return
    handles = [client.submit(JobKind.EMBED, inputs={"texts": [text]}) for text in texts]
    for handle in handles:
        Embeddings.from_outputs(handle.result(timeout=300).outputs)


def measure(
    label: str,
    env: dict[str, str],
    args: argparse.Namespace,
    texts: list[str],
    redis_pid: int,
    url: str,
) -> dict[str, dict[str, float]]:
    stack = LocalStack(redis_url=url, lm="openai/none", queues=["neural"], env=env)
    stack.start(timeout_s=180)
    try:
        assert stack.settings is not None
        with Client(stack.settings) as client:
            client.embed(["warm up"], timeout_s=180)
            worker = stack.workers[0].pid
            samples: dict[str, list[tuple[float, float, float]]] = {}
            for _ in range(args.repeats):
                for kind in ("ping", "embed"):
                    before = (process_cpu_s(worker), own_cpu_s(), process_cpu_s(redis_pid))
                    for _ in range(args.rounds):
                        run(client, kind, texts)
                    after = (process_cpu_s(worker), own_cpu_s(), process_cpu_s(redis_pid))
                    jobs = args.rounds * len(texts)
                    samples.setdefault(kind, []).append(
                        tuple(1000 * (a - b) / jobs for a, b in zip(after, before, strict=True))
                    )
    finally:
        stack.stop()
    out = {}
    for kind, values in samples.items():
        worker_ms, producer_ms, redis_ms = (
            statistics.median(v[i] for v in values) for i in range(3)
        )
        out[f"{label}, {kind}"] = {
            "worker": worker_ms,
            "producer": producer_ms,
            "redis": redis_ms,
            "total": worker_ms + producer_ms + redis_ms,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=64, help="concurrent one-text jobs")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    texts = make_texts(args.jobs, 2)
    rows: dict[str, dict[str, float]] = {}
    with EmbeddedRedis() as server:
        assert server.process is not None
        base = f"redis://127.0.0.1:{server.port}"
        rows.update(measure("micro-batched", {}, args, texts, server.process.pid, f"{base}/0"))
        rows.update(
            measure(
                "one at a time",
                {"DSPEX_NEURAL_MAX_BATCH": "1"},
                args,
                texts,
                server.process.pid,
                f"{base}/1",
            )
        )
    print(f"CPU ms per job, median of {args.repeats} x {args.rounds} rounds of {args.jobs} jobs\n")
    print(f"{'worker, jobs':<28}{'worker':>9}{'producer':>10}{'redis':>8}{'total':>8}")
    for name, row in rows.items():
        print(
            f"{name:<28}{row['worker']:>9.2f}{row['producer']:>10.2f}{row['redis']:>8.2f}"
            f"{row['total']:>8.2f}"
        )
    ping = rows["micro-batched, ping"]["total"]
    batched = rows["micro-batched, embed"]["total"]
    print(
        json.dumps(
            {
                "bench": "job_cpu",
                "metric": "embed_job_cpu_ms_microbatched",
                "value": round(batched, 3),
                "baseline": round(rows["one at a time, embed"]["total"], 3),
                "ratio": round(rows["one at a time, embed"]["total"] / batched, 3),
                "goal": "report: per-job CPU outside the model (ping) against the model's",
                "secondary": {"metric": "ping_job_cpu_ms", "value": round(ping, 3)},
            }
        )
    )


if __name__ == "__main__":
    main()
