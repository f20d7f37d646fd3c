"""The nightly optimization, end to end on one machine, in about a minute.

Starts Redis, the local LM server and a general and an optimizer worker (LocalStack), then
does what celery beat does at 02:00 (sends ``dspex.optimize.nightly("qa-nightly")`` from
``ops/optimizer/nightly.yaml``), follows the optimization's progress bar, answers with the
promoted program (``qa@production``) and runs a batch over ``data/questions.jsonl``.

    .venv/bin/python producers/nightly_optimize/run.py

With a real deployment, the same file drives beat::

    DSPEX_NIGHTLY_OPTIMIZATIONS=ops/optimizer/nightly.yaml celery -A dspex_jobs.celery_app beat
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SCHEDULE = ROOT / "ops" / "optimizer" / "nightly.yaml"


def main() -> int:
    from dspex_jobs import Client
    from dspex_jobs.keys import Keys
    from dspex_jobs.optimize.handle import print_progress
    from dspex_jobs.optimize.schedule import NIGHTLY_TASK
    from dspex_jobs.stack import LocalStack

    # Workers read the schedule and its dataset paths (relative to the repository root).
    env = {"DSPEX_NIGHTLY_OPTIMIZATIONS": str(SCHEDULE)}
    with LocalStack(queues=("general", "optimizer"), env=env) as stack:
        assert stack.settings is not None
        settings = stack.settings.model_copy(update={"nightly_optimizations": str(SCHEDULE)})
        with Client(settings) as client:
            # 1. What beat sends every night at 02:00 UTC.
            client.app.send_task(NIGHTLY_TASK, args=("qa-nightly",), queue="general")
            key = Keys(settings.key_prefix).idempotency(
                f"nightly:qa-nightly:{time.strftime('%Y-%m-%d', time.gmtime())}"
            )
            job_id = None
            for _ in range(600):
                job_id = client._redis.get(key)
                if job_id:
                    break
                time.sleep(0.1)
            if not job_id:
                print("the nightly trigger did not submit anything", file=sys.stderr)
                return 1
            # 2. Follow it (what `dspex-jobs status <id> --follow` draws).
            handle = client.optimization(job_id.decode())
            result = handle.follow(timeout=300, on_progress=print_progress)
            print("\noptimized:", json.dumps(result.outputs))
            # 3. Answer with whatever is promoted as production.
            question = "Bern is the capital of Switzerland. What is the capital of Switzerland?"
            answer = client.predict(program="qa@production", question=question)
            print("qa@production:", answer.result(timeout=60).outputs["answer"])
            # 4. A batch over a file, in input order, resumable.
            with tempfile.TemporaryDirectory() as tmp:
                report = client.batch(
                    "qa@production", HERE / "data" / "questions.jsonl", Path(tmp) / "answers.jsonl"
                )
                print("batch:", json.dumps(report.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
