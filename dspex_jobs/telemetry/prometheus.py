"""Prometheus metrics: a telemetry handler that keeps them, and the HTTP endpoints that serve them.

Two sources, one vocabulary (:data:`METRICS`, which the Grafana dashboard and the alert rules
are checked against):

* **Events** (:func:`handle`): counters and histograms kept by the process where the event
  happened: jobs by kind/queue/status, job duration and queue wait, LM latency and tokens by
  model, cache lookups, router decisions, breaker transitions, session binds, pipeline and
  optimizer runs, alerts.
* **Redis** (:class:`RedisCollector`), read at scrape time: queue depth, live workers per
  queue, breaker state per endpoint. Shared state, so any process can report it; workers do,
  and so does ``dspex-jobs metrics`` (an exporter that runs no jobs).

Prefork workers run jobs in child processes, so counters live in ``prometheus_client``'s
*multiprocess mode*: each child writes its values to memory-mapped files in one folder
(``DSPEX_METRICS_DIR``, default a fresh temporary folder), and the worker's main process serves
their sum (``MultiProcessCollector``). :func:`use_multiprocess_dir` switches the mode on before
any metric exists, whatever imported ``prometheus_client`` first.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dspex_jobs.telemetry import catalogue as ev
from dspex_jobs.telemetry.events import attach, detach

__all__ = [
    "HANDLER_ID",
    "METRICS",
    "MetricSpec",
    "Metrics",
    "RedisCollector",
    "exported_names",
    "handle",
    "install",
    "serve",
    "uninstall",
    "use_multiprocess_dir",
]

logger = logging.getLogger("dspex_jobs.telemetry.prometheus")

HANDLER_ID = "dspex-prometheus"
"""The id :func:`install` attaches its handler under."""

DURATION_BUCKETS_S = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1800,
)
"""Job, LM and pipeline latencies: from a ping (milliseconds) to an optimization (minutes)."""


@dataclass(frozen=True)
class MetricSpec:
    """One metric family: how it is exposed (the name as PromQL sees it), its labels."""

    name: str
    kind: str  # counter | histogram | gauge
    labels: tuple[str, ...]
    doc: str
    source: str = "events"  # events | redis


_SPECS = (
    MetricSpec("dspex_jobs_submitted_total", "counter", ("kind", "queue"), "Jobs enqueued."),
    MetricSpec("dspex_jobs_started_total", "counter", ("kind", "queue"), "Jobs a worker began."),
    MetricSpec(
        "dspex_jobs_finished_total",
        "counter",
        ("kind", "queue", "status"),
        "Jobs ended, by status (succeeded, failed, cancelled).",
    ),
    MetricSpec(
        "dspex_jobs_failed_total",
        "counter",
        ("kind", "queue", "error_code"),
        "Failed jobs by error code.",
    ),
    MetricSpec(
        "dspex_jobs_retried_total", "counter", ("kind", "queue", "error_code"), "Retries scheduled."
    ),
    MetricSpec(
        "dspex_job_duration_seconds",
        "histogram",
        ("kind", "queue", "status"),
        "Run time of a job on its worker.",
    ),
    MetricSpec(
        "dspex_job_queue_wait_seconds",
        "histogram",
        ("kind", "queue"),
        "From submit to a worker starting the job.",
    ),
    MetricSpec("dspex_lm_calls_total", "counter", ("model", "outcome"), "LM attempts (ok, error)."),
    MetricSpec("dspex_lm_latency_seconds", "histogram", ("model",), "LM attempt latency."),
    MetricSpec(
        "dspex_lm_tokens_total",
        "counter",
        ("model", "type"),
        "LM tokens by type (prompt, completion).",
    ),
    MetricSpec(
        "dspex_cache_lookups_total", "counter", ("cache", "result"), "Cache lookups (hit, miss)."
    ),
    MetricSpec(
        "dspex_router_decisions_total",
        "counter",
        ("operation", "implementation", "fell_back"),
        "Router decisions.",
    ),
    MetricSpec(
        "dspex_router_fallbacks_total",
        "counter",
        ("operation", "implementation", "reason"),
        "Router fallbacks away from an implementation.",
    ),
    MetricSpec(
        "dspex_breaker_transitions_total",
        "counter",
        ("endpoint", "state"),
        "Circuit breaker state changes, by the state entered.",
    ),
    MetricSpec(
        "dspex_session_binds_total",
        "counter",
        ("outcome",),
        "Session jobs that bound (bind) or moved (rebind) a session.",
    ),
    MetricSpec(
        "dspex_pipeline_runs_total", "counter", ("pipeline", "status"), "Pipeline runs ended."
    ),
    MetricSpec(
        "dspex_pipeline_duration_seconds", "histogram", ("pipeline", "status"), "Pipeline run time."
    ),
    MetricSpec(
        "dspex_pipeline_steps_total", "counter", ("pipeline", "state"), "Pipeline steps ended."
    ),
    MetricSpec(
        "dspex_optimizer_runs_total", "counter", ("optimizer", "status"), "Optimization runs ended."
    ),
    MetricSpec(
        "dspex_optimizer_best_score",
        "gauge",
        ("optimizer", "program"),
        "Best score of the latest optimization progress.",
    ),
    MetricSpec("dspex_alerts_fired_total", "counter", ("rule",), "Alert rules that fired."),
    MetricSpec("dspex_anomalies_total", "counter", ("signal",), "Anomalies detected."),
    MetricSpec("dspex_queue_depth", "gauge", ("queue",), "Jobs waiting in a queue.", "redis"),
    MetricSpec(
        "dspex_workers_alive",
        "gauge",
        ("queue",),
        "Workers with a live heartbeat consuming a queue.",
        "redis",
    ),
    MetricSpec(
        "dspex_breaker_state",
        "gauge",
        ("endpoint",),
        "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
        "redis",
    ),
)

METRICS: Final[dict[str, MetricSpec]] = {spec.name: spec for spec in _SPECS}
"""Every metric family we export, by its exposed name."""

BREAKER_STATE_VALUES: Final = {"closed": 0.0, "half_open": 1.0, "open": 2.0}


def exported_names() -> set[str]:
    """Every series name a query may use (histograms' ``_bucket``/``_sum``/``_count`` too)."""
    names: set[str] = set()
    for spec in _SPECS:
        names.add(spec.name)
        if spec.kind == "histogram":
            names.update(spec.name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


def use_multiprocess_dir(path: str) -> None:
    """Keep metrics in ``path`` (prometheus_client multiprocess mode) from now on, in this
    process and the processes it forks. Call before the first :class:`Metrics` is built."""
    os.makedirs(path, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    if values.ValueClass is values.MutexValue:  # prometheus_client was imported before
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


def multiprocess_dir() -> str | None:
    """The multiprocess folder in use, if any."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


class Metrics:
    """The event-fed metric objects of one process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.families: dict[str, Any] = {}
        for spec in _SPECS:
            if spec.source != "events":
                continue
            if spec.kind == "counter":
                family: Any = Counter(spec.name, spec.doc, spec.labels, registry=self.registry)
            elif spec.kind == "histogram":
                family = Histogram(
                    spec.name,
                    spec.doc,
                    spec.labels,
                    registry=self.registry,
                    buckets=DURATION_BUCKETS_S,
                )
            else:
                family = Gauge(
                    spec.name,
                    spec.doc,
                    spec.labels,
                    registry=self.registry,
                    multiprocess_mode="mostrecent",
                )
            self.families[spec.name] = family

    def inc(self, name: str, *labels: Any, amount: float = 1.0) -> None:
        """Add ``amount`` to a counter."""
        self.families[name].labels(*(_label(v) for v in labels)).inc(amount)

    def observe(self, name: str, value: float, *labels: Any) -> None:
        """Record one observation in a histogram."""
        self.families[name].labels(*(_label(v) for v in labels)).observe(value)

    def set(self, name: str, value: float, *labels: Any) -> None:
        """Set a gauge."""
        self.families[name].labels(*(_label(v) for v in labels)).set(value)


def _label(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_warned: set[str] = set()


def handle(metrics: Metrics, name: str, m: Mapping[str, float], d: Mapping[str, Any]) -> None:
    """Update ``metrics`` for one event (the body of the attached handler).

    An event missing a field is skipped with one warning per event name, rather than raised:
    :func:`~dspex_jobs.telemetry.emit` detaches a handler that raises, and one malformed
    event must not switch every metric off for the life of the process.
    """
    update = _UPDATES.get(name)
    if update is None:
        return
    try:
        update(metrics, m, d)
    except (KeyError, TypeError, ValueError) as exc:
        if name not in _warned:
            _warned.add(name)
            logger.warning(
                "metrics: skipped a malformed %s event (%s: %s)", name, type(exc).__name__, exc
            )


def _job_stop(x: Metrics, m: Mapping[str, float], d: Mapping[str, Any]) -> None:
    x.inc("dspex_jobs_finished_total", d["kind"], d["queue"], d["status"])
    x.observe("dspex_job_duration_seconds", m["duration_s"], d["kind"], d["queue"], d["status"])


def _lm_call(x: Metrics, m: Mapping[str, float], d: Mapping[str, Any]) -> None:
    model = d["model"]
    x.inc("dspex_lm_calls_total", model, "ok" if d["ok"] else "error")
    x.observe("dspex_lm_latency_seconds", m["duration_s"], model)
    if m.get("prompt_tokens"):
        x.inc("dspex_lm_tokens_total", model, "prompt", amount=m["prompt_tokens"])
    if m.get("completion_tokens"):
        x.inc("dspex_lm_tokens_total", model, "completion", amount=m["completion_tokens"])


def _pipeline_stop(x: Metrics, m: Mapping[str, float], d: Mapping[str, Any]) -> None:
    x.inc("dspex_pipeline_runs_total", d["pipeline"], d["status"])
    x.observe("dspex_pipeline_duration_seconds", m["duration_s"], d["pipeline"], d["status"])


def _optimizer_progress(x: Metrics, m: Mapping[str, float], d: Mapping[str, Any]) -> None:
    if "best_score" in m:
        x.set("dspex_optimizer_best_score", m["best_score"], d.get("optimizer"), d.get("program"))


_UPDATES: dict[str, Any] = {
    ev.JOB_SUBMIT: lambda x, m, d: x.inc("dspex_jobs_submitted_total", d["kind"], d["queue"]),
    ev.JOB_START: lambda x, m, d: (
        x.inc("dspex_jobs_started_total", d["kind"], d["queue"]),
        x.observe("dspex_job_queue_wait_seconds", m["queue_wait_s"], d["kind"], d["queue"]),
    ),
    ev.JOB_STOP: _job_stop,
    ev.JOB_FAIL: lambda x, m, d: x.inc(
        "dspex_jobs_failed_total", d["kind"], d["queue"], d["error_code"]
    ),
    ev.JOB_RETRY: lambda x, m, d: x.inc(
        "dspex_jobs_retried_total", d["kind"], d["queue"], d["error_code"]
    ),
    ev.LM_CALL: _lm_call,
    ev.CACHE_HIT: lambda x, m, d: x.inc("dspex_cache_lookups_total", d["cache"], "hit"),
    ev.CACHE_MISS: lambda x, m, d: x.inc("dspex_cache_lookups_total", d["cache"], "miss"),
    ev.ROUTER_ROUTE: lambda x, m, d: x.inc(
        "dspex_router_decisions_total",
        d.get("operation"),
        d.get("implementation"),
        bool(d.get("fell_back")),
    ),
    ev.ROUTER_FALLBACK: lambda x, m, d: x.inc(
        "dspex_router_fallbacks_total", d.get("operation"), d.get("implementation"), d.get("reason")
    ),
    ev.BREAKER_STATE: lambda x, m, d: x.inc(
        "dspex_breaker_transitions_total", d["endpoint"], d["state"]
    ),
    ev.SESSION_BIND: lambda x, m, d: x.inc("dspex_session_binds_total", "bind"),
    ev.SESSION_REBIND: lambda x, m, d: x.inc("dspex_session_binds_total", "rebind"),
    ev.PIPELINE_STEP: lambda x, m, d: x.inc(
        "dspex_pipeline_steps_total", d.get("pipeline"), d.get("state")
    ),
    ev.PIPELINE_STOP: _pipeline_stop,
    ev.OPTIMIZER_PROGRESS: _optimizer_progress,
    ev.OPTIMIZER_STOP: lambda x, m, d: x.inc(
        "dspex_optimizer_runs_total", d.get("optimizer"), d.get("status")
    ),
    ev.ALERT_FIRED: lambda x, m, d: x.inc("dspex_alerts_fired_total", d["rule"]),
    ev.ANOMALY_DETECTED: lambda x, m, d: x.inc("dspex_anomalies_total", d["signal"]),
}

_installed: dict[int, Metrics] = {}
_install_lock = threading.Lock()


def install(registry: CollectorRegistry | None = None) -> Metrics:
    """Attach the metrics handler in this process (once per process: a forked child that
    inherited its parent's attachment gets its own metrics) and return its metrics."""
    pid = os.getpid()
    with _install_lock:
        metrics = _installed.get(pid)
        if metrics is None:
            _installed.clear()
            metrics = _installed[pid] = Metrics(registry)
            detach(HANDLER_ID)
            attach(HANDLER_ID, list(_UPDATES), lambda name, m, d: handle(metrics, name, m, d))
    return metrics


def uninstall() -> None:
    """Detach the handler (tests, benchmarks); metric values are kept."""
    with _install_lock:
        _installed.clear()
        detach(HANDLER_ID)


class RedisCollector(Collector):
    """Queue depth, live workers and breaker states, read from Redis at each scrape."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        from dspex_jobs.connections import redis_client
        from dspex_jobs.health import _live_workers, queue_depth
        from dspex_jobs.keys import Keys
        from dspex_jobs.settings import QUEUES

        depth = GaugeMetricFamily(
            "dspex_queue_depth", METRICS["dspex_queue_depth"].doc, labels=["queue"]
        )
        alive = GaugeMetricFamily(
            "dspex_workers_alive", METRICS["dspex_workers_alive"].doc, labels=["queue"]
        )
        breakers = GaugeMetricFamily(
            "dspex_breaker_state", METRICS["dspex_breaker_state"].doc, labels=["endpoint"]
        )
        client = redis_client(self.settings)
        try:
            keys = Keys(self.settings.key_prefix)
            workers = _live_workers(client, keys)
            for queue in QUEUES:
                depth.add_metric([queue], float(queue_depth(client, queue)))
                alive.add_metric([queue], float(sum(queue in w.get("queues", ()) for w in workers)))
            for key in client.scan_iter(match=keys.breaker("*"), count=500):
                raw = {_text(k): _text(v) for k, v in client.hgetall(key).items()}
                breakers.add_metric(
                    [raw.get("endpoint", "?")],
                    BREAKER_STATE_VALUES.get(raw.get("state", "closed"), 0.0),
                )
        except Exception as exc:  # a scrape must answer even when Redis does not
            logger.warning("metrics: cannot read Redis: %s", exc)
        finally:
            client.close()
        yield depth
        yield alive
        yield breakers


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def serve(
    settings: Any,
    port: int,
    *,
    redis: bool = True,
    registry: CollectorRegistry | None = None,
    # All interfaces: Prometheus scrapes from other hosts (docs/security.md).
    addr: str = "0.0.0.0",  # nosec B104
) -> tuple[Any, int]:
    """Serve ``/metrics`` on ``port`` from a daemon thread; returns (server, bound port).

    In multiprocess mode the page sums every process's files; otherwise it shows ``registry``
    (this process's :class:`Metrics`). With ``redis``, Redis-backed gauges are added.
    """
    from prometheus_client import start_wsgi_server
    from prometheus_client.multiprocess import MultiProcessCollector

    page = CollectorRegistry()
    path = multiprocess_dir()
    if path:
        MultiProcessCollector(page, path=path)  # type: ignore[no-untyped-call]
    elif registry is not None:
        page.register(_Forward(registry))
    if redis:
        page.register(RedisCollector(settings))
    server, _ = start_wsgi_server(port, addr=addr, registry=page)
    bound = int(server.server_port)
    logger.info("Prometheus metrics on http://%s:%d/metrics", addr, bound)
    return server, bound


class _Forward(Collector):
    """Exposes another registry's metrics on a page."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()
