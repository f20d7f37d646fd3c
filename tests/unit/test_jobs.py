from __future__ import annotations

import pytest
from pydantic import ValidationError

from dspex_jobs.jobs import PROTOCOL_VERSION, Job, JobKind, LMOptions
from dspex_jobs.results import JobErrorInfo, JobResult, JobStatus, Timings


def test_envelope_round_trips_through_json() -> None:
    job = Job(
        kind=JobKind.PREDICT,
        signature="q -> a",
        inputs={"q": "hi"},
        lm=LMOptions(temperature=0.5),
        correlation_id="req-1",
    )
    wire = job.to_wire()
    assert wire["version"] == PROTOCOL_VERSION
    assert wire["kind"] == "predict"
    assert Job.model_validate(wire) == job
    assert len(job.id) == 32 and job.trace_id != job.id


def test_kinds_route_to_their_workload_queue() -> None:
    assert JobKind.PREDICT.queue == "general"
    assert JobKind.CHAIN_OF_THOUGHT.task_name == "dspex.chain_of_thought"
    assert Job(kind=JobKind.PING, queue="neural").target_queue == "neural"
    assert Job(kind=JobKind.PING).target_queue == "general"


def test_newer_envelope_version_is_refused_with_advice() -> None:
    with pytest.raises(ValidationError, match="upgrade dspex-jobs"):
        Job.model_validate({"kind": "predict", "version": PROTOCOL_VERSION + 1})


def test_unknown_envelope_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="surprise"):
        Job.model_validate({"kind": "predict", "surprise": 1})


def test_lm_options_carry_no_credentials() -> None:
    with pytest.raises(ValidationError):
        LMOptions.model_validate({"api_key": "sk-x"})
    assert LMOptions(model="openai/x", cache=False).overrides() == {
        "model": "openai/x",
        "cache": False,
    }


def test_result_timings_and_tokens() -> None:
    result = JobResult(
        job_id="j",
        kind="predict",
        status=JobStatus.SUCCEEDED,
        outputs={"a": 1},
        usage={"m": {"total_tokens": 7}, "n": {"total_tokens": 3}},
        timings=Timings(created_at=10.0, started_at=10.5, finished_at=12.0),
        worker="w",
    )
    assert result.ok and result.total_tokens() == 10
    timings = result.timings
    assert (timings.queued_s, timings.run_s, timings.total_s) == (0.5, 1.5, 2.0)
    assert JobStatus.FAILED.finished and not JobStatus.RUNNING.finished
    info = JobErrorInfo(code="lm_timeout", message="slow", retryable=True)
    assert info.to_exception("j").code == "lm_timeout"
