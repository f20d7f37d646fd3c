"""Alert rules and anomalies over job events, POSTed to a local webhook server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from dspex_jobs import telemetry
from dspex_jobs.settings import Settings
from dspex_jobs.telemetry.alerts import BASELINE_WINDOWS, install_alerts, uninstall_alerts
from dspex_jobs.telemetry.catalogue import ANOMALY_DETECTED, JOB_STOP


class Receiver:
    """A local HTTP server that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    uninstall_alerts()
    server.close()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _jobs(count: int, failed: int, duration_s: float = 0.1) -> None:
    for i in range(count):
        telemetry.emit(
            JOB_STOP,
            {"duration_s": duration_s},
            {
                "status": "failed" if i < failed else "succeeded",
                "kind": "predict",
                "queue": "general",
            },
        )


def test_error_rate_rule_posts_an_alert(receiver: Receiver) -> None:
    clock = Clock()
    settings = Settings.from_env(
        environ={},
        alert_webhook_url=receiver.url,
        alert_window_s=60,
        alert_error_rate=0.5,
        alert_min_jobs=10,
    )
    windows, webhook = install_alerts(settings, clock)
    assert webhook is not None
    # Given a window where 6 of 10 jobs failed, then one where 1 of 10 did
    _jobs(10, failed=6)
    clock.now = 61
    _jobs(10, failed=1)
    windows.close()
    webhook.flush()
    # Expect exactly one alert, for the first window
    alerts = [b for b in receiver.bodies if b["event"] == "dspex.alert.fired"]
    assert len(alerts) == 1
    assert alerts[0]["rule"] == "error_rate" and alerts[0]["value"] == pytest.approx(0.6)
    assert "6 of 10 jobs failed" in alerts[0]["message"]


def test_latency_spike_against_the_rolling_baseline(receiver: Receiver) -> None:
    clock = Clock()
    settings = Settings.from_env(
        environ={},
        alert_webhook_url=receiver.url,
        alert_window_s=10,
        alert_min_jobs=5,
        anomaly_factor=3.0,
    )
    seen: list[dict[str, Any]] = []
    telemetry.attach("test-anomalies", ANOMALY_DETECTED, lambda n, m, d: seen.append({**m, **d}))
    try:
        windows, webhook = install_alerts(settings, clock)
        assert webhook is not None
        # Given steady windows of 100 ms jobs, then one of 1 s jobs
        for _ in range(BASELINE_WINDOWS + 1):
            _jobs(5, failed=0, duration_s=0.1)
            clock.now += 10
        _jobs(5, failed=0, duration_s=1.0)
        windows.close()
        webhook.flush()
    finally:
        telemetry.detach("test-anomalies")
    # Expect one latency anomaly, as an event and on the webhook
    assert [s["signal"] for s in seen] == ["latency_p50_s"]
    assert seen[0]["ratio"] == pytest.approx(10.0)
    assert [b["signal"] for b in receiver.bodies if b["event"] == ANOMALY_DETECTED] == [
        "latency_p50_s"
    ]


def test_a_dead_webhook_never_raises_into_the_emitter(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings.from_env(
        environ={}, alert_webhook_url="http://127.0.0.1:9/none", alert_min_jobs=1, alert_window_s=1
    )
    windows, webhook = install_alerts(settings)
    try:
        with caplog.at_level("WARNING", logger="dspex_jobs.telemetry.alerts"):
            _jobs(2, failed=2)
            windows.close()  # fires; the POST fails in the background
            assert webhook is not None
            webhook.flush()
        # Expect the failure logged and both handlers still attached
        assert "alert webhook http://127.0.0.1:9/none failed" in caplog.text
        assert {"dspex-alert-windows", "dspex-alert-webhook"} <= set(telemetry.attached())
    finally:
        uninstall_alerts()
