"""``make demo``: the main job end to end on an embedded default.

Starts Redis (unless ``DSPEX_REDIS_URL`` is set), the local LM server (unless ``DSPEX_LM``
is set) and one worker per queue; submits a Predict and a ChainOfThought job with the seed's
signature; prints inputs, outputs, timings and token usage; stops everything.
"""

from __future__ import annotations

import os
import textwrap
import time
from typing import Any

from dspex_jobs.client import Client
from dspex_jobs.errors import DSPexError
from dspex_jobs.results import JobResult
from dspex_jobs.settings import QUEUES, Settings
from dspex_jobs.stack import LocalStack

__all__ = ["DEMO_INPUTS", "DEMO_SIGNATURE", "run_demo"]

DEMO_SIGNATURE = "question: str, context: list[str] -> answer: str, confidence: float"
"""The seed's signature."""

DEMO_INPUTS: dict[str, Any] = {
    "question": "Which queue runs long batch optimization?",
    "context": [
        "The general queue runs LM calls such as Predict and ChainOfThought.",
        "The optimizer queue runs long batch optimization like MIPROv2 overnight.",
        "The neural queue runs local models for embeddings and retrieval.",
        "Results, streams and sessions live in Redis.",
    ],
}


def run_demo() -> int:
    """Run the demo; the exit status (0 when both jobs answered)."""
    env = Settings.from_env()  # fail fast on a misspelt DSPEX_ variable
    redis_url = env.redis_url if "DSPEX_REDIS_URL" in os.environ else None
    lm = env.lm if "DSPEX_LM" in os.environ else None
    print("dspex-jobs demo: starting", _describe(redis_url, lm), flush=True)
    started = time.perf_counter()
    # Your Redis's TLS, ACL and Sentinel settings reach the demo's workers too.
    security = (
        {
            name: getattr(env, name)
            for name in env.model_fields_set
            if name.startswith("redis_") and name != "redis_url"
        }
        if redis_url
        else {}
    )
    with LocalStack(
        redis_url=redis_url, lm=lm, lm_api_base=env.lm_api_base, queues=QUEUES, settings=security
    ) as stack:
        assert stack.settings is not None
        print(
            f"ready in {time.perf_counter() - started:.1f} s: redis "
            f"{stack.settings.redacted_redis_url()}, "
            f"LM {stack.settings.lm} at {stack.settings.lm_api_base or 'provider default'}, "
            f"workers on {', '.join(QUEUES)}\n",
            flush=True,
        )
        with Client(stack.settings) as client:
            handles = [
                client.predict(DEMO_SIGNATURE, **DEMO_INPUTS),
                client.chain_of_thought(DEMO_SIGNATURE, **DEMO_INPUTS),
            ]
            results = []
            for handle in handles:
                try:
                    results.append(handle.result(timeout=120))
                except DSPexError as exc:
                    print(f"job {handle.id} failed: [{exc.code}] {exc}")
                    return 1
    print(render(results))
    print("\nstopped redis, LM server and workers.")
    return 0


def _describe(redis_url: str | None, lm: str | None) -> str:
    redis = "your Redis" if redis_url else "an embedded redis-server"
    model = f"your LM ({lm})" if lm else "the local LM server (extractive-minilm)"
    return f"{redis}, {model} and one worker per queue..."


def render(results: list[JobResult]) -> str:
    """A readable table of each job's inputs, outputs, timings and usage."""
    lines = [f"signature: {DEMO_SIGNATURE}", f"question:  {DEMO_INPUTS['question']}", "context:"]
    lines += [f"  - {c}" for c in DEMO_INPUTS["context"]]
    for result in results:
        lines.append("")
        lines.append(f"== {result.kind}  (job {result.job_id}, worker {result.worker})")
        for name, value in (result.outputs or {}).items():
            text = value if isinstance(value, str) else repr(value)
            wrapped = textwrap.wrap(text, 88, subsequent_indent=" " * 14) or [""]
            lines.append(f"  {name:<11} {wrapped[0]}")
            lines.extend(wrapped[1:])
        t = result.timings
        lines.append(
            f"  {'timings':<11} queued {t.queued_s * 1000:.1f} ms, "
            f"run {t.run_s * 1000:.1f} ms, total {t.total_s * 1000:.1f} ms"
        )
        for model, usage in result.usage.items() or [("(none reported)", {})]:
            lines.append(
                f"  {'tokens':<11} {model}: prompt {usage.get('prompt_tokens', 0)}, "
                f"completion {usage.get('completion_tokens', 0)}, "
                f"total {usage.get('total_tokens', 0)}"
            )
    return "\n".join(lines)
