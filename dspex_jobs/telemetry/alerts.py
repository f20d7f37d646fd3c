"""Alerting hooks: error-rate rules and anomaly detection over job events, and a webhook.

:class:`JobWindows` listens to ``dspex.job.stop`` and closes a window every ``alert_window_s``.
At each close it checks:

* the **error-rate rule**: at least ``alert_min_jobs`` jobs and a failed fraction of at least
  ``alert_error_rate`` fire ``dspex.alert.fired`` (rule ``error_rate``);
* **anomalies**: the window's error rate or median job duration is ``anomaly_factor`` times its
  rolling baseline (an exponentially weighted mean of earlier windows, once
  :data:`BASELINE_WINDOWS` windows were seen) emits ``dspex.anomaly.detected``.

:class:`Webhook` POSTs each fired alert and anomaly as one JSON object to
``DSPEX_ALERT_WEBHOOK_URL`` from a background thread, so a slow receiver never slows a job.

Each process judges the jobs it ran; fleet-wide rules belong in Prometheus
(``ops/prometheus/alerts.yml``), which sees every worker.
"""

from __future__ import annotations

import json
import logging
import queue
import statistics
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from dspex_jobs.errors import ConfigurationError
from dspex_jobs.telemetry.catalogue import ALERT_FIRED, ANOMALY_DETECTED, JOB_STOP
from dspex_jobs.telemetry.events import attach, detach, emit

__all__ = ["BASELINE_WINDOWS", "JobWindows", "Webhook", "install_alerts", "uninstall_alerts"]

logger = logging.getLogger("dspex_jobs.telemetry.alerts")

BASELINE_WINDOWS = 3
"""Windows seen before anomalies are judged (a baseline of one window is noise)."""

BASELINE_WEIGHT = 0.3
"""Weight of the newest window in the rolling baseline (exponentially weighted mean)."""

WINDOWS_ID = "dspex-alert-windows"
WEBHOOK_ID = "dspex-alert-webhook"


class JobWindows:
    """Counts job outcomes per window and fires rules and anomalies when a window closes.

    Args:
        window_s: Window length.
        error_rate: Failed fraction that fires the ``error_rate`` rule.
        min_jobs: Jobs a window needs before its rates mean anything.
        factor: Ratio against the baseline that is an anomaly.
        clock: Seconds since some epoch (tests pass their own).
    """

    def __init__(
        self,
        window_s: float,
        error_rate: float,
        min_jobs: int,
        factor: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_s = window_s
        self.error_rate = error_rate
        self.min_jobs = min_jobs
        self.factor = factor
        self.clock = clock
        self._lock = threading.Lock()
        self._start = clock()
        self._durations: list[float] = []
        self._failed = 0
        self._windows = 0
        self._baseline: dict[str, float] = {}

    def __call__(
        self, name: str, measurements: Mapping[str, float], metadata: Mapping[str, Any]
    ) -> None:
        """The ``dspex.job.stop`` handler."""
        closed = None
        with self._lock:
            now = self.clock()
            if now - self._start >= self.window_s:
                closed = self._close(now)
            self._durations.append(float(measurements.get("duration_s", 0.0)))
            self._failed += metadata.get("status") == "failed"
        if closed is not None:
            self._judge(*closed)

    def close(self) -> None:
        """Close the current window now (tests, shutdown)."""
        with self._lock:
            closed = self._close(self.clock())
        self._judge(*closed)

    def _close(self, now: float) -> tuple[list[float], int]:
        closed = (self._durations, self._failed)
        self._durations, self._failed, self._start = [], 0, now
        return closed

    def _judge(self, durations: list[float], failed: int) -> None:
        jobs = len(durations)
        if jobs < self.min_jobs:
            return
        rate = failed / jobs
        if rate >= self.error_rate:
            emit(
                ALERT_FIRED,
                {"value": rate, "threshold": self.error_rate},
                {
                    "rule": "error_rate",
                    "window_s": self.window_s,
                    "message": f"{failed} of {jobs} jobs failed in the last "
                    f"{self.window_s:g} s ({rate:.0%})",
                },
            )
        signals = {"error_rate": rate, "latency_p50_s": statistics.median(durations)}
        self._windows += 1
        for signal, value in signals.items():
            baseline = self._baseline.get(signal)
            if baseline is not None and self._windows > BASELINE_WINDOWS:
                floor = 0.01 if signal == "error_rate" else 1e-3  # 0 -> tiny is no spike
                if value > self.factor * max(baseline, floor):
                    emit(
                        ANOMALY_DETECTED,
                        {
                            "value": value,
                            "baseline": baseline,
                            "ratio": value / max(baseline, floor),
                        },
                        {"signal": signal, "kind": None, "queue": None},
                    )
            self._baseline[signal] = (
                value
                if baseline is None
                else (BASELINE_WEIGHT * value + (1 - BASELINE_WEIGHT) * baseline)
            )


class Webhook:
    """POSTs alerts and anomalies as JSON to ``url`` from one background thread."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        # urllib also opens file:// and ftp:// URLs: refuse them here, at start-up.
        scheme = urlsplit(url).scheme.lower()
        if scheme not in ("http", "https"):  # (the URL may hold a token: not echoed)
            raise ConfigurationError(
                "DSPEX_ALERT_WEBHOOK_URL must be an http(s) URL, not "
                f"{scheme or 'one without a scheme'!r}"
            )
        self.url = url
        self.timeout_s = timeout_s
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=1000)
        self._thread = threading.Thread(target=self._run, name="dspex-alert-webhook", daemon=True)
        self._thread.start()

    def __call__(
        self, name: str, measurements: Mapping[str, float], metadata: Mapping[str, Any]
    ) -> None:
        """The handler: queue the alert (dropped, with a warning, if 1000 are waiting)."""
        body = {"event": name, "at": time.time(), **dict(metadata), **dict(measurements)}
        try:
            self._queue.put_nowait(body)
        except queue.Full:
            logger.warning("alert webhook backlog full; dropped %s", name)

    def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until every queued alert was sent (or failed)."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        """Send what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout=self.timeout_s + 1)

    def _run(self) -> None:
        while True:
            body = self._queue.get()
            try:
                if body is None:
                    return
                self._post(body)
            except Exception as exc:  # the receiver is down: log, keep going
                logger.warning("alert webhook %s failed: %s", self.url, exc)
            finally:
                self._queue.task_done()

    def _post(self, body: dict[str, Any]) -> None:
        request = urllib.request.Request(
            self.url,
            data=json.dumps(body, default=str).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "dspex-jobs-alerts"},
        )
        # http(s) only, checked in __init__
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # nosec B310
            response.read()


def install_alerts(
    settings: Any,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[JobWindows, Webhook | None]:
    """Attach the rule windows, and the webhook if ``alert_webhook_url`` is set."""
    uninstall_alerts()
    windows = JobWindows(
        settings.alert_window_s,
        settings.alert_error_rate,
        settings.alert_min_jobs,
        settings.anomaly_factor,
        clock,
    )
    attach(WINDOWS_ID, JOB_STOP, windows)
    webhook = None
    if settings.alert_webhook_url:
        webhook = Webhook(settings.alert_webhook_url)
        attach(WEBHOOK_ID, [ALERT_FIRED, ANOMALY_DETECTED], webhook)
    return windows, webhook


def uninstall_alerts() -> None:
    """Detach both handlers."""
    detach(WINDOWS_ID)
    detach(WEBHOOK_ID)
