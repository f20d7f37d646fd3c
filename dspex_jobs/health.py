"""Is the system able to run jobs? Redis answers, queues are known, workers are alive.

Live workers are read from their heartbeat keys (see :mod:`dspex_jobs.worker`), which makes
the check one Redis round trip instead of a Celery broadcast that waits for replies.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from dspex_jobs.connections import describe_redis_error, redis_client
from dspex_jobs.keys import Keys
from dspex_jobs.settings import QUEUES, Settings

__all__ = ["HealthReport", "QueueHealth", "check_health", "queue_depth"]

_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)
"""kombu's Redis transport keeps priorities > 0 in sibling lists ``<queue>\\x06\\x16<n>``."""


@dataclass
class QueueHealth:
    """One queue: jobs waiting and the workers consuming it.

    ``devices`` maps a worker to the device its model runs on, for workers that report one
    (neural workers: ``cpu``, ``cuda``, or ``unavailable: <why>``).
    """

    name: str
    depth: int
    workers: list[str] = field(default_factory=list)
    devices: dict[str, str] = field(default_factory=dict)
    in_flight: int = 0
    """Jobs live workers of this queue hold now (running or prefetched, unacknowledged),
    from their heartbeats: what an autoscaler must not scale away (see ops/k8s/)."""
    running: int = 0
    """Of those, jobs running now."""

    @property
    def ok(self) -> bool:
        """A queue is healthy when at least one live worker consumes it."""
        return bool(self.workers)


@dataclass
class HealthReport:
    """The outcome of :func:`check_health`."""

    redis_url: str
    redis_ok: bool
    redis_latency_ms: float | None
    queues: list[QueueHealth]
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Redis answers and every checked queue has a live worker."""
        return self.redis_ok and all(q.ok for q in self.queues)

    def metrics(self) -> dict[str, Any]:
        """Per-queue numbers for autoscalers (KEDA's metrics-api trigger reads
        ``queues.<name>.in_flight``; its redis trigger reads the queue list itself)."""
        return {
            "ok": self.redis_ok,
            "queues": {
                q.name: {
                    "depth": q.depth,
                    "in_flight": q.in_flight,
                    "running": q.running,
                    "workers": len(q.workers),
                    "demand": q.depth + q.in_flight,
                }
                for q in self.queues
            },
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form, for ``dspex-jobs health --json``."""
        data = asdict(self)
        data["ok"] = self.ok
        for queue in data["queues"]:
            queue["ok"] = bool(queue["workers"])
        return data

    def render(self) -> str:
        """A readable table."""
        if not self.redis_ok:
            return f"FAIL redis {self.redis_url}: {self.error}"
        lines = [f"ok   redis {self.redis_url} ({self.redis_latency_ms:.2f} ms)"]
        lines += [f"     {'queue':<10}{'depth':>7}{'in flight':>10}  workers"]
        for q in self.queues:
            mark = "ok  " if q.ok else "FAIL"
            alive = (
                ", ".join(f"{w} ({q.devices[w]})" if w in q.devices else w for w in q.workers)
                or "none alive"
            )
            lines.append(f"{mark} {q.name:<10}{q.depth:>7}{q.in_flight:>10}  {alive}")
        return "\n".join(lines)


def queue_depth(client: Any, queue: str) -> int:
    """Messages waiting in a queue, all priority levels together."""
    pipe = client.pipeline(transaction=False)
    pipe.llen(queue)
    for step in _PRIORITY_STEPS:
        pipe.llen(f"{queue}{_PRIORITY_SEP}{step}")
    return int(sum(pipe.execute()))


def check_health(settings: Settings, queues: tuple[str, ...] = QUEUES) -> HealthReport:
    """Check Redis, the depth of ``queues`` and which live workers consume each."""
    client = redis_client(settings)
    url = settings.redacted_redis_url()
    try:
        started = time.perf_counter()
        client.ping()
        latency_ms = (time.perf_counter() - started) * 1000
        workers = _live_workers(client, Keys(settings.key_prefix))
        report = []
        for name in queues:
            mine = [w for w in workers if name in w.get("queues", [])]
            report.append(
                QueueHealth(
                    name,
                    queue_depth(client, name),
                    sorted(w["name"] for w in mine),
                    {w["name"]: str(w["device"]) for w in mine if "device" in w},
                    in_flight=sum(int(w.get("reserved", 0)) for w in mine),
                    running=sum(int(w.get("active", 0)) for w in mine),
                )
            )
        return HealthReport(url, True, latency_ms, report)
    except Exception as exc:  # the reason, never the password (describe_redis_error)
        return HealthReport(url, False, None, [], error=describe_redis_error(exc, settings))
    finally:
        client.close()


def _live_workers(client: Any, keys: Keys) -> list[dict[str, Any]]:
    names = list(client.scan_iter(match=keys.worker_pattern(), count=500))
    if not names:
        return []
    return [json.loads(raw) for raw in client.mget(names) if raw is not None]
