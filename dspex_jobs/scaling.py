"""Queue demand for autoscalers: depth and in-flight jobs per queue, over HTTP or once.

KEDA (``ops/k8s/``) scales each queue's Deployment on two numbers:

- the queue's Redis list length (its ``redis`` trigger reads ``LLEN <queue>`` directly), and
- the jobs live workers of that queue hold right now (``in_flight``), read from this
  module's endpoint by a ``metrics-api`` trigger. Without it, an optimizer queue whose one
  job is running has an empty list, and KEDA would scale its only worker to zero mid-run.

``dspex-jobs scaling-metrics`` prints the numbers once as JSON; with ``--serve`` it serves
``/metrics.json`` (the same JSON) and ``/metrics`` (Prometheus text) until stopped.
``dspex-jobs health --json`` carries the same per-queue ``depth`` and ``in_flight``. Every
request is one Redis round trip per queue plus one heartbeat scan (see :mod:`dspex_jobs.health`).
"""

from __future__ import annotations

import json
import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from dspex_jobs.health import check_health
from dspex_jobs.pools import WORKER_QUEUES
from dspex_jobs.settings import Settings

__all__ = ["METRICS_PORT", "MetricsServer", "queue_metrics", "render_prometheus"]

METRICS_PORT = 9809
"""Default port of ``dspex-jobs scaling-metrics --serve`` (the k8s Service uses it too);
9808 is the Prometheus exporter's (``dspex-jobs metrics``)."""

logger = logging.getLogger("dspex_jobs.scaling")


def queue_metrics(settings: Settings, queues: tuple[str, ...] = WORKER_QUEUES) -> dict[str, Any]:
    """``{"ok": bool, "queues": {name: {"depth", "in_flight", "running", "workers",
    "demand"}}}``; ``demand`` (depth + in flight) is what a queue needs workers for."""
    report = check_health(settings, queues)
    data = report.metrics()
    if not report.redis_ok:
        data["error"] = report.error
    return data


def render_prometheus(data: dict[str, Any]) -> str:
    """The same numbers as Prometheus gauges (``dspex_queue_depth{queue="general"} 3``)."""
    lines = [f"dspex_redis_up {1 if data.get('ok') else 0}"]
    for metric in ("depth", "in_flight", "running", "workers", "demand"):
        lines.append(f"# TYPE dspex_queue_{metric} gauge")
        for name, numbers in data.get("queues", {}).items():
            lines.append(f'dspex_queue_{metric}{{queue="{name}"}} {numbers[metric]}')
    return "\n".join(lines) + "\n"


class MetricsServer:
    """A small threaded HTTP server for :func:`queue_metrics`.

    Args:
        settings: Where Redis is.
        host: Interface to listen on (``0.0.0.0`` in a pod).
        port: TCP port (0 picks a free one; read :attr:`port` after :meth:`start`).
    """

    def __init__(
        self, settings: Settings, host: str = "127.0.0.1", port: int = METRICS_PORT
    ) -> None:
        settings_ = settings

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path not in ("/metrics", "/metrics.json", "/healthz"):
                    self.send_error(404)
                    return
                data = queue_metrics(settings_)
                if path == "/metrics":
                    body, kind = render_prometheus(data).encode(), "text/plain; version=0.0.4"
                else:
                    body, kind = json.dumps(data).encode(), "application/json"
                status = 200 if data["ok"] or path == "/metrics" else 503
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                logger.debug(format, *args)

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._server.server_address[1])

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown` (from another thread) or Ctrl-C."""
        self._server.serve_forever(poll_interval=0.5)

    def shutdown(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
