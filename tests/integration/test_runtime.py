"""The worker runtime with real DSPy against the local LM server."""

from __future__ import annotations

import logging

import pytest
from conftest import make_settings

from dspex_jobs.jobs import Job, JobKind
from dspex_jobs.runtime import Runtime
from dspex_jobs.runtime.modules import ModuleCache

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def runtime(lm_server: object) -> Runtime:
    return Runtime(make_settings("redis://127.0.0.1:1/0", lm_server.url))  # type: ignore[attr-defined]


def test_history_does_not_grow_in_a_long_lived_worker(runtime: Runtime) -> None:
    from dspy.clients.base_lm import GLOBAL_HISTORY

    before = len(GLOBAL_HISTORY)
    for i in range(20):
        job = Job(
            kind=JobKind.PREDICT,
            signature="question -> answer",
            inputs={"question": f"question number {i}?"},
        )
        outcome = runtime.run(job)
        assert "answer" in outcome.outputs and outcome.usage
        assert outcome.model == "openai/extractive-minilm"
    assert len(GLOBAL_HISTORY) == before
    assert runtime.lms.get().history == []


def test_modules_are_built_once_per_signature(runtime: Runtime) -> None:
    job = Job(kind=JobKind.PREDICT, signature="text -> summary", inputs={"text": "A. B."})
    runtime.run(job)
    misses = runtime.modules.misses
    runtime.run(job)
    assert runtime.modules.misses == misses and runtime.modules.hits >= 1


def test_module_cache_is_bounded() -> None:
    cache = ModuleCache(max_entries=2)
    for signature in ("a -> b", "c -> d", "e -> f"):
        cache.get(JobKind.PREDICT, signature, None)
    assert len(cache) == 2 and cache.misses == 3
    cache.get(JobKind.PREDICT, "e -> f", None)
    assert cache.hits == 1


def test_dspy_log_records_reach_the_worker_log(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        logging.getLogger("dspy.some.module").warning("a message from inside DSPy")
    assert "a message from inside DSPy" in caplog.text


def test_a_non_streaming_lm_streams_each_output_as_one_chunk(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given DSPy's DummyLM, which cannot stream
    from dspy.utils import DummyLM

    monkeypatch.setattr(
        runtime.lms,
        "get",
        lambda options=None: DummyLM([{"answer": "forty-two", "confidence": "0.9"}]),
    )
    chunks: list[tuple[str, str, bool]] = []
    job = Job(
        kind=JobKind.PREDICT,
        signature="question -> answer, confidence: float",
        inputs={"question": "?"},
        stream=True,
    )
    # When the job runs with a chunk callback
    outcome = runtime.run(job, lambda field, text, last: chunks.append((field, text, last)))
    # Expect one last chunk per output field, equal to the final values
    assert chunks == [("answer", "forty-two", True), ("confidence", "0.9", True)]
    assert outcome.outputs == {"answer": "forty-two", "confidence": 0.9}
