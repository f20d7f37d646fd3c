"""Every event the project emits: its name, measurements, metadata and who emits it.

Emitters import their event's name from here (``from dspex_jobs.telemetry.catalogue import
JOB_START``) so that a typo is an import error, not an event nobody hears. Exporters
(:mod:`.prometheus`, :mod:`.logs`, :mod:`.sentry`, :mod:`.alerts`) read :data:`CATALOGUE` to
know what exists; ``tests/unit/telemetry`` checks that every constant is catalogued and that
``docs/observability.md`` lists every event.

Conventions: names are ``dspex.<component>.<event>``; measurements are numbers with the unit
in the key (``duration_s``, ``prompt_tokens``); metadata are JSON-able labels. Every job event
carries ``job_id``, ``kind``, ``queue`` and ``trace_id``; every pipeline event ``run_id`` and
``trace_id``. Metadata never carry inputs, outputs or credentials.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    # jobs
    "JOB_SUBMIT",
    "JOB_START",
    "JOB_STOP",
    "JOB_FAIL",
    "JOB_RETRY",
    # router
    "ROUTER_ROUTE",
    "ROUTER_FALLBACK",
    # pipelines
    "PIPELINE_START",
    "PIPELINE_STEP",
    "PIPELINE_STOP",
    # LM, caches, breakers, sessions
    "LM_CALL",
    "CACHE_HIT",
    "CACHE_MISS",
    "BREAKER_STATE",
    "SESSION_BIND",
    "SESSION_REBIND",
    # optimizer
    "OPTIMIZER_START",
    "OPTIMIZER_PROGRESS",
    "OPTIMIZER_STOP",
    # telemetry itself
    "ALERT_FIRED",
    "ANOMALY_DETECTED",
    # the catalogue
    "CATALOGUE",
    "EventSpec",
]


@dataclass(frozen=True)
class EventSpec:
    """What one event carries and where it comes from."""

    name: str
    measurements: tuple[str, ...]
    metadata: tuple[str, ...]
    emitted_by: str
    description: str


_JOB = ("job_id", "kind", "queue", "trace_id")

JOB_SUBMIT: Final = "dspex.job.submit"
JOB_START: Final = "dspex.job.start"
JOB_STOP: Final = "dspex.job.stop"
JOB_FAIL: Final = "dspex.job.fail"
JOB_RETRY: Final = "dspex.job.retry"
ROUTER_ROUTE: Final = "dspex.router.route"
ROUTER_FALLBACK: Final = "dspex.router.fallback"
PIPELINE_START: Final = "dspex.pipeline.start"
PIPELINE_STEP: Final = "dspex.pipeline.step"
PIPELINE_STOP: Final = "dspex.pipeline.stop"
LM_CALL: Final = "dspex.lm.call"
CACHE_HIT: Final = "dspex.cache.hit"
CACHE_MISS: Final = "dspex.cache.miss"
BREAKER_STATE: Final = "dspex.breaker.state"
SESSION_BIND: Final = "dspex.session.bind"
SESSION_REBIND: Final = "dspex.session.rebind"
OPTIMIZER_START: Final = "dspex.optimizer.start"
OPTIMIZER_PROGRESS: Final = "dspex.optimizer.progress"
OPTIMIZER_STOP: Final = "dspex.optimizer.stop"
ALERT_FIRED: Final = "dspex.alert.fired"
ANOMALY_DETECTED: Final = "dspex.anomaly.detected"

_SPECS = (
    EventSpec(
        JOB_SUBMIT,
        ("size_bytes",),
        (*_JOB, "session_id", "correlation_id"),
        "producer (Client.submit)",
        "A job was validated and enqueued.",
    ),
    EventSpec(
        JOB_START,
        ("queue_wait_s",),
        (*_JOB, "attempt", "worker"),
        "worker (dspex_jobs.tasks)",
        "A worker began running a job (after its lease).",
    ),
    EventSpec(
        JOB_STOP,
        ("duration_s", "queue_wait_s"),
        (*_JOB, "attempt", "worker", "status", "error_code", "model"),
        "worker (dspex_jobs.tasks)",
        "A job ended and its result was stored: status is succeeded, failed or cancelled.",
    ),
    EventSpec(
        JOB_FAIL,
        ("duration_s",),
        (*_JOB, "attempt", "worker", "error_code", "error_message", "retryable"),
        "worker (dspex_jobs.tasks)",
        "A job ended failed (emitted right after its dspex.job.stop).",
    ),
    EventSpec(
        JOB_RETRY,
        ("delay_s",),
        (*_JOB, "attempt", "worker", "error_code"),
        "worker (dspex_jobs.tasks)",
        "A retryable failure: the job runs again later.",
    ),
    EventSpec(
        ROUTER_ROUTE,
        ("duration_s", "total_s"),
        (
            "operation",
            "implementation",
            "chosen",
            "kind",
            "queue",
            "fell_back",
            "fallback_reasons",
            "call",
            "ok",
            "error_code",
        ),
        "router (dspex_jobs.router)",
        "A routing decision (total_s only for calls).",
    ),
    EventSpec(
        ROUTER_FALLBACK,
        ("duration_s",),
        ("operation", "implementation", "next", "reason", "error_code"),
        "router (dspex_jobs.router)",
        "A failed implementation, followed by the next.",
    ),
    EventSpec(
        PIPELINE_START,
        ("steps",),
        ("run_id", "pipeline", "trace_id"),
        "producer (dspex_jobs.pipeline)",
        "A pipeline run was submitted.",
    ),
    EventSpec(
        PIPELINE_STEP,
        ("duration_s", "attempt"),
        (
            "run_id",
            "pipeline",
            "trace_id",
            "step",
            "kind",
            "queue",
            "state",
            "worker",
            "error_code",
        ),
        "worker (dspex_jobs.pipeline)",
        "A pipeline step ended.",
    ),
    EventSpec(
        PIPELINE_STOP,
        ("duration_s",),
        ("run_id", "pipeline", "trace_id", "status", "failed_step", "error_code"),
        "worker or producer (dspex_jobs.pipeline)",
        "A pipeline run ended.",
    ),
    EventSpec(
        LM_CALL,
        ("duration_s", "prompt_tokens", "completion_tokens", "total_tokens"),
        (*_JOB, "model", "endpoint", "ok", "error_code", "fallback"),
        "worker (dspex_jobs.runtime)",
        "One LM attempt of a job (the module call under one candidate model).",
    ),
    EventSpec(
        CACHE_HIT,
        (),
        ("cache",),
        "worker (dspex_jobs.runtime)",
        "A lookup found its entry (cache=module: built DSPy modules).",
    ),
    EventSpec(
        CACHE_MISS, (), ("cache",), "worker (dspex_jobs.runtime)", "A lookup built its entry."
    ),
    EventSpec(
        BREAKER_STATE,
        (),
        ("endpoint", "state", "previous"),
        "worker (dspex_jobs.resilience.breaker)",
        "A circuit breaker changed state (closed, open, half_open).",
    ),
    EventSpec(
        SESSION_BIND,
        (),
        ("session_id", "worker", "trace_id"),
        "worker (dspex_jobs.worker)",
        "A session was bound to a worker for the first time.",
    ),
    EventSpec(
        SESSION_REBIND,
        (),
        ("session_id", "worker", "previous", "trace_id"),
        "worker (dspex_jobs.worker)",
        "A session moved to another worker.",
    ),
    EventSpec(
        OPTIMIZER_START,
        ("trials",),
        ("run_id", "program", "optimizer", "trace_id"),
        "worker (optimizer queue)",
        "An optimization run started.",
    ),
    EventSpec(
        OPTIMIZER_PROGRESS,
        ("trial", "trials", "score", "best_score"),
        ("run_id", "program", "optimizer", "trace_id"),
        "worker (optimizer queue)",
        "An optimization trial ended.",
    ),
    EventSpec(
        OPTIMIZER_STOP,
        ("duration_s", "best_score"),
        ("run_id", "program", "optimizer", "trace_id", "status", "error_code"),
        "worker (optimizer queue)",
        "An optimization run ended: status is succeeded or failed.",
    ),
    EventSpec(
        ALERT_FIRED,
        ("value", "threshold"),
        ("rule", "window_s", "message"),
        "any process (dspex_jobs.telemetry.alerts)",
        "An alert rule from the settings fired (and was POSTed to the webhook).",
    ),
    EventSpec(
        ANOMALY_DETECTED,
        ("value", "baseline", "ratio"),
        ("signal", "kind", "queue"),
        "any process (dspex_jobs.telemetry.alerts)",
        "Error rate or latency jumped against its rolling baseline.",
    ),
)

CATALOGUE: Final[dict[str, EventSpec]] = {spec.name: spec for spec in _SPECS}
"""Every event name the project emits, with its spec."""
