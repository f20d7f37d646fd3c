"""Pipelines through a real worker on the general and neural queues, the local LM server (300 ms
per call) and real Redis: the seed's pipeline, real parallelism, every failure policy, live
status, cancel, deadlines, Map and When, and the ``dspex-jobs run`` command."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from click.testing import CliRunner
from conftest import LM_API_KEY, inprocess_worker, make_settings, redis_db_url

from dspex_jobs import Client, JobCancelled, JobTimeout
from dspex_jobs.cli import main
from dspex_jobs.embedded import EmbeddedRedis
from dspex_jobs.errors import PipelineDeadlineExceeded, PipelineStepFailed
from dspex_jobs.pipeline import (
    START_EVENT,
    STEP_EVENT,
    STOP_EVENT,
    Dspy,
    Fallback,
    Map,
    Native,
    Parallel,
    Pipeline,
    Retry,
    Skip,
    When,
)
from dspex_jobs.router import default_registry
from dspex_jobs.telemetry import attach, detach

pytestmark = [
    pytest.mark.integration,
    # transformers/torch internals on some versions; never ours
    pytest.mark.filterwarnings("ignore:.*encoder_attention_mask.*:FutureWarning"),
    pytest.mark.filterwarnings("ignore:.*TypedStorage is deprecated.*:UserWarning"),
]

LATENCY_S = 0.3
"""What the module's LM server adds to every call."""

CONCURRENCY = 8
"""The module's worker: one threads pool consuming general and neural."""

DOCS = [
    "DSPy is a framework for programming, not prompting, language models.",
    "Celery is a distributed task queue for running background jobs in Python.",
    "Redis is an in-memory key-value store often used as a message broker.",
]

SEED = Pipeline(
    [
        Native("signature.validate", signature="question: str -> answer: str"),
        Dspy("ChainOfThought", signature="question, context: list[str] -> answer"),
        Parallel(
            [
                Native("search", index="docs", k=2),
                Dspy("Predict", signature="question -> keywords: list[str]"),
            ]
        ),
    ],
    name="seed",
)

# -- native operations the tests fail, slow down and count -------------------------------------

_calls: dict[str, int] = {}
_calls_lock = threading.Lock()


def _fail(message: str = "boom") -> str:
    raise ValueError(message)


def _sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def _flaky(key: str, failures: int) -> int:
    """Fails ``failures`` times for ``key``, then returns the attempt number."""
    with _calls_lock:
        _calls[key] = _calls.get(key, 0) + 1
        attempt = _calls[key]
    if attempt <= failures:
        raise ConnectionError(f"flaky attempt {attempt}")
    return attempt


def _constant(value: Any) -> Any:
    return value


def _trace_context(value: Any) -> dict[str, Any]:
    """What a log line written by the step would carry."""
    from dspex_jobs.telemetry.context import current

    return {name: current().get(name) for name in ("run_id", "step", "trace_id", "queue")}


_OPERATIONS = {
    "tests.fail": _fail,
    "tests.sleep": _sleep,
    "tests.flaky": _flaky,
    "tests.constant": _constant,
    "tests.trace_context": _trace_context,
}


@pytest.fixture(scope="module", autouse=True)
def operations() -> Iterator[None]:
    registry = default_registry()
    for name, function in _OPERATIONS.items():
        registry.register(name, function, replace=True)
    yield
    for name in _OPERATIONS:
        registry.unregister(name)


# -- the module's stack -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_lm() -> Iterator[Any]:
    from dspex_jobs.lmserver import LMServerConfig, LMServerProcess

    with LMServerProcess(
        LMServerConfig(port=0, api_key=LM_API_KEY, latency_ms=LATENCY_S * 1000)
    ) as server:
        yield server


@pytest.fixture(scope="module")
def app(redis_server: EmbeddedRedis, slow_lm: Any) -> Iterator[Celery]:
    settings = make_settings(redis_db_url(redis_server, 16), slow_lm.url, job_max_retries=0)
    with inprocess_worker(
        settings, concurrency=CONCURRENCY, queues=("general", "neural")
    ) as worker_app:
        yield worker_app


@pytest.fixture(scope="module")
def client(app: Celery) -> Iterator[Client]:
    with Client(app.dspex_settings, app=app) as c:  # type: ignore[attr-defined]
        c.index("docs").add(DOCS, ids=["dspy", "celery", "redis"], timeout_s=120)
        yield c


# -- the seed's pipeline ----------------------------------------------------------------------


def test_the_seed_pipeline_runs_end_to_end(client: Client) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    attach(
        "test-pipeline",
        [START_EVENT, STEP_EVENT, STOP_EVENT],
        lambda name, _measurements, metadata: events.append((name, dict(metadata))),
    )
    try:
        # Given the seed's pipeline: a native check, ChainOfThought, then search (neural)
        # alongside Predict (general)
        handle = client.run(
            SEED,
            question="What is DSPy?",
            context=["DSPy programs language models.", "Paris is in France."],
        )
        result = handle.result(timeout=60)
        # The worker emits the stop event just after it stores the outcome the producer
        # wakes on: wait for it before detaching (under load it arrives a moment later).
        deadline = time.monotonic() + 10
        while STOP_EVENT not in [n for n, _ in events] and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        detach("test-pipeline")
    # Expect every step's outputs in the context, flat and under the step's name
    assert result["answer"] == "DSPy programs language models."
    assert result.outputs_of("chain_of_thought")["reasoning"]
    assert result["passages"][0] == DOCS[0] and result["hits"][0]["id"] == "dspy"
    assert isinstance(result["keywords"], list) and result["keywords"]
    # And each step done, on its own queue, with the LM usage of the DSPy steps
    status = handle.status()
    assert status.state.value == "succeeded"
    assert {s.name: (s.state.value, s.queue) for s in status.steps} == {
        "signature_validate": ("done", "general"),
        "chain_of_thought": ("done", "general"),
        "search": ("done", "neural"),
        "predict": ("done", "general"),
        "parallel": ("done", "general"),
    }
    assert status["chain_of_thought"].duration_s >= LATENCY_S
    assert "merged by its last branch step" in str(status["parallel"].note)  # not a hop later
    assert "signature_validate" in status.render()
    # And one trace id on every event of the run: start, five steps, stop
    assert [n for n, _ in events].count(STEP_EVENT) == 5
    assert {n for n, _ in events} == {START_EVENT, STEP_EVENT, STOP_EVENT}
    assert {m["trace_id"] for _, m in events} == {result.trace_id}


def test_a_parallel_of_four_lm_steps_takes_about_one_step(client: Client) -> None:
    one = Pipeline([Dspy("Predict", signature="question -> a0")])
    four = Pipeline([Parallel([Dspy("Predict", signature=f"question -> a{i}") for i in range(4)])])
    client.run(one, question="warm up").result(timeout=30)

    def wall_s(pipeline: Pipeline, question: str) -> float:
        started = time.perf_counter()
        client.run(pipeline, question=question).result(timeout=30)
        return time.perf_counter() - started

    # When one LM step runs alone, then four at once (best of two: the box is shared)
    single_s = min(wall_s(one, f"alone {n}") for n in range(2))
    parallel_s = min(wall_s(four, f"together {n}") for n in range(2))
    result = client.run(four, question="together").result(timeout=30)
    print(f"one LM step {single_s:.3f} s, four in parallel {parallel_s:.3f} s")
    # Expect the four to overlap: well under four times one step
    assert all(f"a{i}" in result.context for i in range(4))
    assert parallel_s < 2 * single_s, (single_s, parallel_s)


# -- failure policies -------------------------------------------------------------------------


def test_a_failing_branch_fails_the_run_at_once_naming_the_step(client: Client) -> None:
    # Given a branch that fails at once beside one that takes 5 s
    pipeline = Pipeline(
        [
            Parallel(
                [
                    Native("tests.sleep", name="slow", outputs=["slept"], seconds=5.0),
                    Native("tests.fail", name="broken", outputs=["never"], message="disk on fire"),
                ]
            )
        ]
    )
    started = time.perf_counter()
    handle = client.run(pipeline)
    # Expect the producer to see the failure long before the slow branch ends
    with pytest.raises(PipelineStepFailed) as caught:
        handle.result(timeout=30)
    assert time.perf_counter() - started < 2.0
    assert caught.value.step == "broken"
    assert "disk on fire" in caught.value.message
    status = handle.status()
    assert status.state.value == "failed" and status["broken"].state.value == "failed"
    assert status.error is not None and status.error["details"]["step"] == "broken"
    # And the slow branch told to stop (its outputs dropped), within a poll interval or so
    deadline = time.monotonic() + 3
    while handle.status()["slow"].state.value == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert handle.status()["slow"].state.value == "cancelled"


def test_skip_records_the_error_and_later_steps_see_the_defaults(client: Client) -> None:
    pipeline = Pipeline(
        [
            Parallel(
                [
                    Native(
                        "tests.fail",
                        name="broken",
                        outputs=["tags"],
                        on_error=Skip({"tags": ["none"]}),
                    ),
                    Native("tests.constant", name="fine", outputs=["label"], value="ok"),
                ]
            ),
            Native("tests.constant", name="after", inputs={"value": "tags"}, outputs=["seen"]),
        ]
    )
    handle = client.run(pipeline)
    result = handle.result(timeout=30)
    assert result["seen"] == ["none"] and result["label"] == "ok"
    broken = handle.status()["broken"]
    assert broken.state.value == "skipped" and broken.error is not None
    assert "boom" in broken.error["message"]


def test_branches_writing_one_field_are_merged_by_their_rule(client: Client) -> None:
    pipeline = Pipeline(
        [
            Parallel(
                [
                    Native("tests.constant", name="a", outputs=["tags"], value=["x", "y"]),
                    Native("tests.constant", name="b", outputs=["tags"], value=["y", "z"]),
                ],
                merge={"tags": "unique"},
            )
        ]
    )
    result = client.run(pipeline).result(timeout=30)
    assert result["tags"] == ["x", "y", "z"]
    assert result.outputs_of("a") == {"tags": ["x", "y"]}


def test_retry_runs_the_step_again_until_it_succeeds(client: Client) -> None:
    pipeline = Pipeline(
        [
            Native(
                "tests.flaky",
                name="flaky",
                outputs=["attempt"],
                key="retry-ok",
                failures=2,
                on_error=Retry(2, backoff_s=0.05),
            )
        ]
    )
    handle = client.run(pipeline)
    assert handle.result(timeout=30)["attempt"] == 3
    assert handle.status()["flaky"].attempt == 3


def test_retry_spent_fails_the_run_with_the_last_error(client: Client) -> None:
    pipeline = Pipeline(
        [
            Parallel(
                [
                    Native(
                        "tests.flaky",
                        name="flaky",
                        outputs=["attempt"],
                        key="retry-spent",
                        failures=5,
                        on_error=Retry(1, backoff_s=0.05),
                    ),
                    Native("tests.constant", name="fine", outputs=["label"], value="ok"),
                ]
            )
        ]
    )
    handle = client.run(pipeline)
    with pytest.raises(PipelineStepFailed) as caught:
        handle.result(timeout=30)
    assert caught.value.step == "flaky" and "flaky attempt 2" in caught.value.message
    assert handle.status()["flaky"].attempt == 2


def test_fallback_answers_in_the_failed_steps_place(client: Client) -> None:
    pipeline = Pipeline(
        [
            Parallel(
                [
                    Native(
                        "tests.fail",
                        name="primary",
                        outputs=["label"],
                        on_error=Fallback(
                            Native("tests.constant", outputs=["label"], value="from fallback")
                        ),
                    ),
                    Dspy("Predict", signature="question -> keywords: list[str]"),
                ]
            ),
        ]
    )
    handle = client.run(pipeline, question="What is Celery?")
    result = handle.result(timeout=30)
    assert result["label"] == "from fallback" and result["keywords"]
    primary = handle.status()["primary"]
    assert primary.state.value == "done" and "fallback" in str(primary.note)


# -- following, stopping and time limits ------------------------------------------------------


def test_status_shows_each_step_while_it_runs(client: Client) -> None:
    pipeline = Pipeline(
        [
            Native("tests.sleep", name="first", outputs=["a"], seconds=0.8),
            Native("tests.constant", name="second", outputs=["b"], value=2),
        ]
    )
    handle = client.run(pipeline)
    seen: list[tuple[str, str, str]] = []
    deadline = time.monotonic() + 10
    while (not seen or seen[-1] != ("succeeded", "done", "done")) and time.monotonic() < deadline:
        status = handle.status()
        states = (status.state.value, status["first"].state.value, status["second"].state.value)
        if not seen or seen[-1] != states:
            seen.append(states)
        time.sleep(0.02)
    assert seen[-1] == ("succeeded", "done", "done"), seen
    assert ("running", "running", "pending") in seen
    status = handle.status()
    assert status["first"].queue == "general" and status["first"].duration_s >= 0.8
    assert status["first"].worker


def test_cancel_stops_the_running_step_and_never_starts_the_next(client: Client) -> None:
    pipeline = Pipeline(
        [
            Native("tests.sleep", name="long", outputs=["a"], seconds=10.0),
            Native("tests.constant", name="next", outputs=["b"], value=2),
        ]
    )
    handle = client.run(pipeline)
    while handle.status()["long"].state.value != "running":
        time.sleep(0.02)
    assert handle.cancel() is True
    with pytest.raises(JobCancelled):
        handle.result(timeout=5)
    deadline = time.monotonic() + 3
    while handle.status()["long"].state.value == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    status = handle.status()
    assert status.state.value == "cancelled" and status["long"].state.value == "cancelled"
    assert status["next"].state.value in ("pending", "cancelled")


def test_an_unknown_run_is_reported_at_once(client: Client) -> None:
    handle = client.pipeline_run("f" * 32)
    with pytest.raises(JobTimeout, match="no pipeline run"):
        handle.result()
    with pytest.raises(JobTimeout, match="no pipeline run"):
        handle.status()


def test_the_pipeline_deadline_ends_a_slow_run(client: Client) -> None:
    pipeline = Pipeline(
        [
            Native("tests.sleep", name="long", outputs=["a"], seconds=10.0),
            Native("tests.constant", name="next", outputs=["b"], value=2),
        ],
        timeout_s=0.5,
    )
    started = time.perf_counter()
    with pytest.raises(PipelineDeadlineExceeded):
        client.run(pipeline).result(timeout=10)
    assert time.perf_counter() - started < 2.0


def test_a_step_timeout_fails_the_step(client: Client) -> None:
    pipeline = Pipeline(
        [Native("tests.sleep", name="long", outputs=["a"], seconds=10.0, timeout_s=0.3)]
    )
    handle = client.run(pipeline)
    with pytest.raises(PipelineStepFailed) as caught:
        handle.result(timeout=10)
    assert caught.value.cause["code"] == "step_timeout"
    assert handle.status()["long"].state.value == "failed"


# -- Map and When -----------------------------------------------------------------------------


def test_map_runs_a_step_per_item_and_when_picks_a_branch(client: Client) -> None:
    pipeline = Pipeline(
        [
            Native("search", index="docs", k=2),
            Map("passages", Dspy("Predict", signature="passage -> gist"), name="gists"),
            When(
                "len(passages) > 5",
                Native("tests.constant", name="many", outputs=["verdict"], value="many"),
                Native("tests.constant", name="few", outputs=["verdict"], value="few"),
            ),
        ]
    )
    handle = client.run(pipeline, question="What runs background jobs?")
    result = handle.result(timeout=30)
    # Expect one gist per passage, in order, and the else branch taken
    assert result["passages"][0] == DOCS[1]
    assert len(result["gist"]) == 2 and all(isinstance(g, str) for g in result["gist"])
    assert result["verdict"] == "few"
    status = handle.status()
    assert status["many"].state.value == "skipped" and status["few"].state.value == "done"
    assert status["gists"].state.value == "done" and status["gists"].queue == "general"


# -- the command line ------------------------------------------------------------------------


def test_cli_runs_a_pipeline_document(client: Client, app: Celery, tmp_path: Path) -> None:
    document = tmp_path / "pipeline.yaml"
    document.write_text(
        "name: cli\n"
        "steps:\n"
        "  - native: signature.validate\n"
        "    signature: 'question: str -> answer: str'\n"
        "  - parallel:\n"
        "      - native: search\n"
        "        index: docs\n"
        "        k: 1\n"
        "      - dspy: Predict\n"
        "        signature: 'question -> keywords: list[str]'\n"
    )
    env = {"DSPEX_REDIS_URL": app.dspex_settings.redis_url}  # type: ignore[attr-defined]
    runner = CliRunner()
    ok = runner.invoke(
        main, ["run", str(document), "--input", "question=What is Redis?", "--status"], env=env
    )
    assert ok.exit_code == 0, ok.output
    assert '"passages"' in ok.output and DOCS[2] in ok.output
    missing = runner.invoke(main, ["run", str(document)], env=env)
    assert missing.exit_code == 1 and "question" in missing.output


def test_a_steps_log_lines_carry_the_runs_trace(client: Client) -> None:
    # Given a step that reads the trace context its log lines would carry
    pipeline = Pipeline([Native("tests.trace_context", name="probe", outputs=["seen"], value=1)])
    handle = client.run(pipeline)
    seen = handle.result(timeout=30)["seen"]
    # Expect the run, the step, the queue and the run's trace id, as in its events
    assert seen["run_id"] == handle.id and seen["step"] == "probe"
    assert seen["queue"] == "general"
    assert seen["trace_id"] and seen["trace_id"] == handle.status().trace_id
