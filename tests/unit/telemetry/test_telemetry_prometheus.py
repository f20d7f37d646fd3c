"""The Prometheus handler: events move the metrics they name; a broken metric never raises."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from dspex_jobs import telemetry
from dspex_jobs.telemetry import catalogue as ev
from dspex_jobs.telemetry import prometheus


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    registry = CollectorRegistry()
    prometheus.uninstall()
    prometheus.install(registry)
    yield registry
    prometheus.uninstall()


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


JOB = {"job_id": "j", "kind": "predict", "queue": "general", "trace_id": "t"}


def test_job_events_move_job_metrics(registry: CollectorRegistry) -> None:
    # When a job is submitted, started, and ends failed
    telemetry.emit(ev.JOB_SUBMIT, {"size_bytes": 10.0}, JOB)
    telemetry.emit(ev.JOB_START, {"queue_wait_s": 0.2}, {**JOB, "attempt": 1, "worker": "w"})
    telemetry.emit(
        ev.JOB_STOP,
        {"duration_s": 1.5, "queue_wait_s": 0.2},
        {**JOB, "status": "failed", "error_code": "lm_timeout", "model": None},
    )
    telemetry.emit(ev.JOB_FAIL, {"duration_s": 1.5}, {**JOB, "error_code": "lm_timeout"})
    telemetry.emit(ev.JOB_RETRY, {"delay_s": 1.0}, {**JOB, "error_code": "lm_timeout"})
    # Expect counters by kind/queue/status and the histograms
    kq = {"kind": "predict", "queue": "general"}
    assert _value(registry, "dspex_jobs_submitted_total", **kq) == 1
    assert _value(registry, "dspex_jobs_started_total", **kq) == 1
    assert _value(registry, "dspex_jobs_finished_total", **kq, status="failed") == 1
    assert _value(registry, "dspex_jobs_failed_total", **kq, error_code="lm_timeout") == 1
    assert _value(registry, "dspex_jobs_retried_total", **kq, error_code="lm_timeout") == 1
    assert _value(registry, "dspex_job_duration_seconds_count", **kq, status="failed") == 1
    assert _value(registry, "dspex_job_duration_seconds_sum", **kq, status="failed") == 1.5
    assert _value(registry, "dspex_job_queue_wait_seconds_bucket", **kq, le="0.25") == 1


def test_lm_cache_breaker_session_events(registry: CollectorRegistry) -> None:
    telemetry.emit(
        ev.LM_CALL,
        {"duration_s": 0.3, "prompt_tokens": 12.0, "completion_tokens": 5.0, "total_tokens": 17.0},
        {**JOB, "model": "m", "endpoint": "m@x", "ok": True, "error_code": None},
    )
    telemetry.emit(ev.CACHE_HIT, {}, {"cache": "module"})
    telemetry.emit(ev.CACHE_MISS, {}, {"cache": "module"})
    telemetry.emit(ev.BREAKER_STATE, {}, {"endpoint": "m@x", "state": "open", "previous": "closed"})
    telemetry.emit(ev.SESSION_REBIND, {}, {"session_id": "s", "worker": "b", "previous": "a"})
    telemetry.emit(
        ev.ROUTER_ROUTE,
        {"duration_s": 0.0},
        {"operation": "op", "implementation": "native", "fell_back": False},
    )
    assert _value(registry, "dspex_lm_tokens_total", model="m", type="prompt") == 12
    assert _value(registry, "dspex_lm_tokens_total", model="m", type="completion") == 5
    assert _value(registry, "dspex_lm_calls_total", model="m", outcome="ok") == 1
    assert _value(registry, "dspex_lm_latency_seconds_count", model="m") == 1
    assert _value(registry, "dspex_cache_lookups_total", cache="module", result="hit") == 1
    assert _value(registry, "dspex_breaker_transitions_total", endpoint="m@x", state="open") == 1
    assert _value(registry, "dspex_session_binds_total", outcome="rebind") == 1
    assert (
        _value(
            registry,
            "dspex_router_decisions_total",
            operation="op",
            implementation="native",
            fell_back="false",
        )
        == 1
    )


def test_every_event_metric_is_registered() -> None:
    registry = CollectorRegistry()
    prometheus.Metrics(registry)
    families = {f.name + ("_total" if f.type == "counter" else "") for f in registry.collect()}
    expected = {spec.name for spec in prometheus.METRICS.values() if spec.source == "events"}
    assert expected == families


def test_a_malformed_event_is_skipped_and_metrics_keep_working(
    registry: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given an event missing the labels the handler needs
    with caplog.at_level("WARNING", logger="dspex_jobs.telemetry.prometheus"):
        telemetry.emit(ev.JOB_STOP, {}, {})  # does not raise
    # Expect a warning, the handler still attached, and later events counted
    assert "malformed dspex.job.stop" in caplog.text
    assert prometheus.HANDLER_ID in telemetry.attached()
    telemetry.emit(ev.JOB_SUBMIT, {}, JOB)
    assert _value(registry, "dspex_jobs_submitted_total", kind="predict", queue="general") == 1
