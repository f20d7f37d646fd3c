"""Optimization jobs, the program registry and predict(program=) through a real worker.

One in-process worker (threads) consumes the general and optimizer queues of database 20;
the LM is the local extractive-minilm server. Every optimizer runs end to end on a tiny
dataset, so each finishes in seconds.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from conftest import make_settings, redis_db_url

from dspex_jobs.client import Client
from dspex_jobs.errors import (
    JobCancelled,
    OptimizeRequestError,
    OptimizeTimeLimit,
    ProgramNotFound,
)
from dspex_jobs.results import JobStatus

pytestmark = pytest.mark.integration

DB = 20

TRAIN = [
    {
        "question": "Paris is the capital of France. What is the capital of France?",
        "answer": "Paris is the capital of France.",
    },
    {
        "question": "Water boils at 100 degrees. At what temperature does water boil?",
        "answer": "Water boils at 100 degrees.",
    },
    {"question": "The sky is blue. What colour is the sky?", "answer": "The sky is blue."},
    {
        "question": "Cats purr when happy. What do cats do when happy?",
        "answer": "Cats purr when happy.",
    },
]
VAL = [
    {"question": "Rome is in Italy. Where is Rome?", "answer": "Rome is in Italy."},
    {"question": "Ice is cold. What is ice like?", "answer": "Ice is cold."},
]
SIGNATURE = "question -> answer"


@pytest.fixture(scope="module")
def nightly_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A schedule with one good and one broken entry, both for program qa-night."""
    import json

    folder = tmp_path_factory.mktemp("nightly")
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in TRAIN))
    (folder / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in VAL))
    common = {
        "program": "qa-night",
        "signature": SIGNATURE,
        "optimizer": "LabeledFewShot",
        "trainset": str(folder / "train.jsonl"),
        "valset": str(folder / "val.jsonl"),
        "metric": "token_f1",
        "args": {"k": 2},
        "promote_to": "production",
        "cron": "0 2 * * *",
    }
    schedule = {
        "optimizations": [
            {"name": "qa-night", **common},
            {
                "name": "qa-night-broken",
                **common,
                "metric": "no_such_metric",
                "cron": None,
                "every_s": 86400,
            },
        ]
    }
    (folder / "nightly.json").write_text(json.dumps(schedule))
    return str(folder / "nightly.json")


@pytest.fixture(scope="module")
def client(redis_server: Any, lm_server: Any, nightly_file: str) -> Iterator[Client]:
    from celery.contrib.testing.worker import start_worker

    from dspex_jobs.app import make_app
    from dspex_jobs.worker import install_worker_hooks

    settings = make_settings(
        redis_db_url(redis_server, DB),
        lm_server.url,
        optimizer_progress_interval_s=0.05,
        optimizer_num_threads=2,
        nightly_optimizations=nightly_file,
    )
    redis.Redis.from_url(settings.redis_url).flushdb()
    app = make_app(settings)
    install_worker_hooks(app)
    with (
        start_worker(
            app,
            pool="threads",
            concurrency=2,
            perform_ping_check=False,
            queues=["general", "optimizer"],
            shutdown_timeout=30,
        ),
        Client(settings, app=app) as producer,
    ):
        yield producer
    redis.Redis.from_url(settings.redis_url).flushdb()


def _optimize(client: Client, name: str, optimizer: str, **args: Any) -> dict[str, Any]:
    handle = client.optimize(
        program=name,
        signature=SIGNATURE,
        optimizer=optimizer,
        trainset=TRAIN,
        valset=VAL,
        metric="token_f1",
        **args,
    )
    seen: list[Any] = []
    result = handle.follow(interval_s=0.05, timeout=110, on_progress=seen.append)
    assert result.status is JobStatus.SUCCEEDED
    assert seen and seen[-1].phase == "done"
    return dict(result.outputs or {})


def test_labeled_few_shot_then_predict_by_program(client: Client) -> None:
    # Given an optimized program
    out = _optimize(client, "qa-labeled", "LabeledFewShot", k=2)
    # Expect version 1, scored on the valset, stored with its metadata
    assert out["program"] == "qa-labeled@1" and 0.0 <= out["score"] <= 1.0
    stored = client.programs.get("qa-labeled@latest")
    assert len(stored.state["demos"]) == 2  # a Predict's own JSON state
    assert stored.metadata["optimizer"] == "LabeledFewShot"
    assert stored.metadata["trainset_hash"] and stored.metadata["dspy_version"]
    # When predicting through the program (latest, then a promoted alias)
    answer = client.predict(
        program="qa-labeled@latest", question="Berlin is in Germany. Where is Berlin?"
    ).result(timeout=30)
    assert "Berlin" in answer.outputs["answer"]
    with pytest.raises(ProgramNotFound):
        client.predict(program="qa-labeled@production", question="x").result(timeout=30)
    client.programs.promote("qa-labeled@1", "production")
    again = client.predict(
        program="qa-labeled@production", question="Berlin is in Germany. Where is Berlin?"
    ).result(timeout=30)
    assert again.outputs == answer.outputs
    # And a promote of a new version reaches the worker at its next job
    from dspex_jobs.programs.execute import program_cache
    from dspex_jobs.worker import worker_context

    cache = program_cache(worker_context(client.app))  # this in-process worker's own cache
    v2 = client.programs.save("qa-labeled", stored.spec, {**stored.state, "demos": []}, {})
    client.programs.promote(v2.ref, "production")
    client.predict(program="qa-labeled@production", question="Where?").result(timeout=30)
    assert ("qa-labeled", 2) in cache._modules and ("qa-labeled", 1) in cache._modules


def test_bootstrap_few_shot_reports_progress(client: Client) -> None:
    out = _optimize(
        client, "qa-boot", "BootstrapFewShot", max_bootstrapped_demos=2, max_labeled_demos=2
    )
    assert out["program"] == "qa-boot@1"
    assert out["metric_calls"] >= len(VAL)  # bootstrapping and the valset evaluation
    job_id = client.programs.get("qa-boot@1").metadata["job_id"]
    progress = client.optimization(job_id).progress()
    assert progress is not None and progress.phase == "done" and progress.elapsed_s > 0
    # The same record is the task's Celery state (what Flower shows)
    assert client.app.AsyncResult(job_id).info["phase"] == "done"


def test_random_search_scores_each_candidate(client: Client) -> None:
    out = _optimize(
        client,
        "qa-rs",
        "BootstrapFewShotWithRandomSearch",
        num_candidate_programs=1,
        max_bootstrapped_demos=1,
        max_labeled_demos=2,
    )
    meta = client.programs.get(out["program"]).metadata
    assert sorted(meta["candidates"]) == ["-1", "-2", "-3", "0"]
    assert meta["best_seed"] in (-3, -2, -1, 0)


def test_mipro_v2(client: Client) -> None:
    out = _optimize(
        client,
        "qa-mipro",
        "MIPROv2",
        auto=None,
        num_candidates=2,
        num_trials=2,
        minibatch=False,
        max_bootstrapped_demos=1,
        max_labeled_demos=1,
    )
    assert client.programs.get(out["program"]).metadata["optimizer"] == "MIPROv2"


def test_gepa(client: Client) -> None:
    out = _optimize(
        client, "qa-gepa", "GEPA", max_metric_calls=12, reflection_minibatch_size=1, use_merge=False
    )
    assert client.programs.get(out["program"]).metadata["optimizer"] == "GEPA"


def test_bad_requests_fail_on_the_producer(client: Client) -> None:
    with pytest.raises(OptimizeRequestError, match="did you mean max_bootstrapped_demos"):
        client.optimize(
            program="qa",
            signature=SIGNATURE,
            optimizer="BootstrapFewShot",
            trainset=TRAIN,
            max_bootstraped_demos=2,
        )
    with pytest.raises(OptimizeRequestError, match="row 1 lacks question"):
        client.optimize(
            program="qa",
            signature=SIGNATURE,
            optimizer="LabeledFewShot",
            trainset=[TRAIN[0], {"answer": "x"}],
        )
    with pytest.raises(OptimizeRequestError, match="unknown optimizer"):
        client.optimize(program="qa", signature=SIGNATURE, optimizer="Bootstrap", trainset=TRAIN)


def test_cancel_stops_at_the_next_metric_call(client: Client) -> None:
    many = TRAIN * 40
    handle = client.optimize(
        program="qa-cancel",
        signature=SIGNATURE,
        optimizer="BootstrapFewShotWithRandomSearch",
        trainset=many,
        valset=many,
        num_candidate_programs=4,
        max_bootstrapped_demos=1,
        metric="token_f1",
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        progress = handle.progress()
        if progress is not None and progress.metric_calls > 0:
            break
        time.sleep(0.05)
    handle.cancel()
    with pytest.raises(JobCancelled):
        handle.result(timeout=60)
    assert handle.progress().phase == "cancelled"
    assert "qa-cancel" not in client.programs.names() or not client.programs.versions("qa-cancel")


def _batch_rows(count: int) -> list[dict[str, Any]]:
    return [
        {"question": f"Item {i} is number {i}. Which item is number {i}?"} for i in range(count)
    ]


@pytest.mark.slow
def test_batch_over_many_rows_in_input_order(client: Client, tmp_path: Any) -> None:
    import json
    import os

    # Given a program and a JSONL file of rows, one of them invalid
    # CI runs it small; the 1,000+ rows: DSPEX_TEST_BATCH_ROWS=1000 (docs/optimizer.md)
    count = int(os.environ.get("DSPEX_TEST_BATCH_ROWS", "300"))
    client.programs.define("qa-batch", {"module": "predict", "signature": SIGNATURE})
    client.programs.save("qa-batch", client.programs.spec("qa-batch"), {}, {"made": "test"})
    rows = _batch_rows(count)
    rows[7] = {"query": "no question field"}
    source = tmp_path / "questions.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    seen: list[Any] = []
    # When it runs as a batch
    report = client.batch(
        "qa-batch@latest",
        source,
        tmp_path / "answers.jsonl",
        chunk_rows=50,
        timeout_s=110,
        on_progress=seen.append,
    )
    # Expect one answer per row, in input order, and the bad row's error recorded
    lines = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert [line["row"] for line in lines] == list(range(count))
    assert lines[7]["error"]["code"] == "input_validation_error"
    for i in (0, 1, count - 1):  # each answer is extracted from its own row's text
        assert re.search(rf"\b{i}\b", lines[i]["outputs"]["answer"]), lines[i]
    assert report.rows == count and report.errors == 1 and report.program == "qa-batch@1"
    assert seen[-1].rows_done == count and seen[-1].rows_per_s > 0
    assert not (tmp_path / "answers.jsonl.parts").exists()


def test_batch_resumes_without_redoing_finished_chunks(client: Client, tmp_path: Any) -> None:
    client.programs.define("qa-resume", {"module": "predict", "signature": SIGNATURE})
    client.programs.save("qa-resume", client.programs.spec("qa-resume"), {}, {})
    rows = _batch_rows(120)
    output = tmp_path / "answers.jsonl"

    class Interrupted(Exception):
        pass

    def interrupt(_: Any) -> None:
        raise Interrupted

    results = client._store.client
    already = len(results.keys("dspex:result:*"))
    # Given a run interrupted after its first finished chunk
    with pytest.raises(Interrupted):
        client.batch("qa-resume", rows, output, chunk_rows=20, on_progress=interrupt)
    deadline = time.monotonic() + 60
    while len(results.keys("dspex:result:*")) < already + 6 and time.monotonic() < deadline:
        time.sleep(0.05)  # the submitted chunks finish without the producer
    before = set(results.keys("dspex:result:*"))
    # When it runs again
    report = client.batch("qa-resume", rows, output, chunk_rows=20, timeout_s=60)
    # Expect the finished chunk skipped, the others' results reused, nothing run twice
    assert report.chunks_resumed == 1 and report.rows == 120
    assert set(results.keys("dspex:result:*")) == before
    assert len(output.read_text().splitlines()) == 120


def _nightly(client: Client, name: str) -> Any:
    """Send what celery beat sends, and return the optimization it submitted."""
    from dspex_jobs.keys import Keys
    from dspex_jobs.optimize.schedule import NIGHTLY_TASK

    client.app.send_task(NIGHTLY_TASK, args=(name,), queue="general")
    key = Keys(client.settings.key_prefix).idempotency(
        f"nightly:{name}:{time.strftime('%Y-%m-%d', time.gmtime())}"
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job_id = client._redis.get(key)
        if job_id:
            return client.optimization(job_id.decode())
        time.sleep(0.05)
    raise AssertionError(f"nightly {name} submitted nothing")


def test_nightly_schedule_promotes_and_a_failed_night_alerts(client: Client) -> None:
    from dspex_jobs import telemetry
    from dspex_jobs.errors import OptimizeRequestError
    from dspex_jobs.optimize.schedule import beat_entries

    # Given the beat entries of the schedule file
    entries = beat_entries(client.settings)
    assert sorted(entries) == ["dspex-nightly-qa-night", "dspex-nightly-qa-night-broken"]
    assert entries["dspex-nightly-qa-night"]["args"] == ("qa-night",)
    assert (
        client.app.conf.beat_schedule["dspex-nightly-qa-night"]["task"] == "dspex.optimize.nightly"
    )
    failures: list[Any] = []
    telemetry.attach(
        "test-nightly-failed",
        "dspex.optimizer.failed",
        lambda name, m, meta: failures.append(dict(meta)),
    )
    try:
        # When the good entry runs: a new version, promoted
        good = _nightly(client, "qa-night").result(timeout=60)
        assert good.outputs["promoted"] == "production"
        assert client.programs.resolve("qa-night@production") == good.outputs["version"]
        # When the broken one runs: it fails, alerts, and production is untouched
        with pytest.raises(OptimizeRequestError, match="unknown metric"):
            _nightly(client, "qa-night-broken").result(timeout=60)
    finally:
        telemetry.detach("test-nightly-failed")
    assert [f["schedule"] for f in failures] == ["qa-night-broken"]
    assert client.programs.resolve("qa-night@production") == good.outputs["version"]
    assert [v.version for v in client.programs.versions("qa-night")] == [good.outputs["version"]]


def test_time_limit_stops_a_long_optimization(client: Client) -> None:
    # Given an optimization far longer than its time limit
    handle = client.optimize(
        program="qa-slow",
        signature=SIGNATURE,
        optimizer="BootstrapFewShotWithRandomSearch",
        trainset=TRAIN * 40,
        valset=TRAIN * 40,
        num_candidate_programs=4,
        metric="token_f1",
        time_limit_s=0.5,
    )
    # Expect a typed failure at the next metric call after the limit, and nothing stored
    with pytest.raises(OptimizeTimeLimit, match=r"time limit of 0\.5 s"):
        handle.result(timeout=60)
    assert handle.progress().phase == "failed"
    assert not client.programs.exists("qa-slow") or not client.programs.versions("qa-slow")


def _register_hinted_class() -> None:
    import dspy

    from dspex_jobs import program_class, register_metric

    @program_class("hinted-qa", input_fields=("question",), code_version="hinted-1")
    class HintedQA(dspy.Module):
        def __init__(self) -> None:
            super().__init__()
            self.answer = dspy.Predict("question -> answer")

        def forward(self, question: str) -> Any:
            return self.answer(question=question)

    @register_metric("mentions_first_word")
    def mentions_first_word(example: Any, prediction: Any, trace: Any = None) -> float:
        return float(example.answer.split()[0] in prediction.answer)


def test_registered_class_and_registered_metric(client: Client) -> None:
    # Given a program class and a metric registered in the worker's process
    _register_hinted_class()
    # When it is optimized and then asked by name
    handle = client.optimize(
        program={"module": "hinted-qa", "input_fields": ["question"]},
        name="hinted",
        optimizer="LabeledFewShot",
        trainset=TRAIN,
        valset=VAL,
        metric="mentions_first_word",
        k=2,
    )
    out = handle.result(timeout=60).outputs
    stored = client.programs.get(out["program"])
    assert stored.metadata["code_version"] == "hinted-1" and out["score"] is not None
    assert len(stored.state["answer"]["demos"]) == 2
    answer = client.predict(
        program="hinted@latest", question="Berlin is in Germany. Where is Berlin?"
    ).result(timeout=30)
    assert "Berlin" in answer.outputs["answer"]
