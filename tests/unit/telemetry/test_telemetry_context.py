"""Trace context in log records, and JSON log lines."""

from __future__ import annotations

import json
import logging

from dspex_jobs.telemetry.context import ContextFilter, JsonFormatter, current, job_context


def _record(message: str) -> logging.LogRecord:
    record = logging.LogRecord("dspex_jobs.test", logging.INFO, __file__, 1, message, (), None)
    ContextFilter().filter(record)
    return record


def test_json_line_carries_the_job_and_trace_ids() -> None:
    # Given a log record written while a job runs
    with job_context(job_id="j1", trace_id="t1", kind="predict", queue="general"):
        record = _record("hello %s")
        line = JsonFormatter().format(record)
    # Expect one JSON object with the message and the ids
    entry = json.loads(line)
    assert "\n" not in line
    assert entry["job_id"] == "j1" and entry["trace_id"] == "t1" and entry["queue"] == "general"
    assert entry["level"] == "INFO" and entry["logger"] == "dspex_jobs.test"


def test_context_nests_and_resets() -> None:
    assert dict(current()) == {}
    with job_context(run_id="r1", trace_id="t1"), job_context(job_id="j2", step="s"):
        assert dict(current()) == {"run_id": "r1", "trace_id": "t1", "job_id": "j2", "step": "s"}
    assert dict(current()) == {}
    entry = json.loads(JsonFormatter().format(_record("outside")))
    assert "job_id" not in entry and "trace_id" not in entry


def test_exceptions_are_one_line_too() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line and "ValueError: boom" in json.loads(line)["exc"]
