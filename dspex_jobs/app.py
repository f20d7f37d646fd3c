"""The Celery app: queues by workload, routing by job kind, defaults that lose nothing.

``make_app(settings)`` builds a fresh app and does nothing at import time. Producers and
workers build the same app; producers only ever ``send_task`` by name, so importing this
module (and ``dspex_jobs.tasks``, which registers the task bodies) never imports DSPy.

Reliability choices, and why (DESIGN.md, "Celery-on-Redis facts"):

- ``task_acks_late`` + ``task_reject_on_worker_lost``: a job is acknowledged only after it
  ran; if the pool child running it dies, the message goes back to the queue instead of
  being marked failed (default Celery acks early and would lose it).
- ``worker_prefetch_multiplier = 1``: a worker reserves one job per free slot, so a long job
  never sits behind another in a busy worker's buffer while an idle worker waits.
- Bodies are written by our ``dspex`` serializer (:mod:`dspex_jobs.protocol`: one
  self-describing frame, MessagePack/Arrow/JSON, compressed above a threshold); JSON and
  MessagePack are still accepted (the plain ``celery`` CLI, other producers); pickle is
  never decoded from the wire.
- Broker and result connections time out and keep alive, and the worker retries the broker
  connection at startup instead of exiting when Redis is a few seconds late.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Queue

from dspex_jobs.connections import celery_redis_config
from dspex_jobs.jobs import JobKind
from dspex_jobs.kombu_redis import install as install_kombu_redis
from dspex_jobs.protocol import EncodeOptions, install_message_guard, register_serializer
from dspex_jobs.settings import QUEUES, Settings

__all__ = ["ACCEPTED_CONTENT", "SESSION_CLEANUP_INTERVAL_S", "make_app", "settings_of"]

SESSION_CLEANUP_INTERVAL_S = 60.0
"""How often celery beat removes stale session bindings."""

ACCEPTED_CONTENT = ("dspex", "json", "msgpack")
"""Serializers a worker decodes. Pickle is deliberately absent."""


def make_app(settings: Settings, *, name: str = "dspex_jobs") -> Celery:
    """Build the Celery app for ``settings``.

    Example:
        >>> from dspex_jobs.settings import Settings
        >>> app = make_app(Settings(redis_url="redis://127.0.0.1:6379/0"))
        >>> app.conf.task_routes["dspex.predict"]
        {'queue': 'general'}
    """
    # Broker and backend URLs, TLS and Sentinel options come from the one connection factory.
    redis_config = celery_redis_config(settings)
    app = Celery(
        name,
        broker=redis_config["broker_url"],
        backend=redis_config["result_backend"],
        set_as_current=False,
    )
    app.conf.update(_config(settings))
    # kombu's Redis channels share one client each instead of building one per command
    # (dspex_jobs.kombu_redis): CPU off every submit, ack and event flush.
    install_kombu_redis()
    app.dspex_settings = settings  # type: ignore[attr-defined]
    install_message_guard(app)  # a malformed task message is rejected, never fatal

    from dspex_jobs.tasks import register_tasks  # light: task bodies import DSPy lazily

    register_tasks(app)
    return app


def settings_of(app: Celery) -> Settings:
    """The settings an app was built with."""
    settings: Settings = app.dspex_settings  # type: ignore[attr-defined]
    return settings


def _config(settings: Settings) -> dict[str, Any]:
    # Here, not at the top: importing the optimizer package is not part of importing the
    # producer's Client (bench/imports.py).
    from dspex_jobs.optimize.schedule import beat_entries as nightly_beat_entries

    serializer = register_serializer(
        EncodeOptions.from_settings(settings),
        max_decompressed_bytes=settings.max_decompressed_bytes,
    )
    redis_config = celery_redis_config(settings)
    return {
        **redis_config,
        # Wire format: dspex frames, JSON and MessagePack accepted, never pickle.
        "task_serializer": serializer,
        "result_serializer": serializer,
        "accept_content": list(ACCEPTED_CONTENT),
        "result_accept_content": list(ACCEPTED_CONTENT),
        # Lose nothing.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout_s,
            # Sweep for a dead worker's unacknowledged messages every few seconds, so they
            # come back about visibility_timeout_s after it died, not minutes later.
            "unacked_restore_interval": max(1, min(10, settings.visibility_timeout_s // 6)),
            "unacked_restore_throttle": 1,
            **redis_config["broker_transport_options"],  # sockets, Sentinel
        },
        "result_expires": settings.result_ttl_s,
        # Queues by workload, routes by job kind.
        "task_queues": [Queue(name, routing_key=name) for name in QUEUES],
        "task_default_queue": "general",
        "task_routes": {kind.task_name: {"queue": kind.queue} for kind in JobKind},
        "task_create_missing_queues": True,
        # Every worker also consumes its own queue (<name>.dq2): sessions bound to it.
        "worker_direct": True,
        # Periodic maintenance (run `celery -A dspex_jobs.celery_app beat`).
        "beat_schedule": {
            "dspex-session-cleanup": {
                "task": "dspex.sessions.cleanup",
                "schedule": SESSION_CLEANUP_INTERVAL_S,
            },
            # Named nightly optimizations (DSPEX_NIGHTLY_OPTIMIZATIONS; none when unset).
            **nightly_beat_entries(settings),
        },
        # Flower and monitoring see every task; the worker publishes task events in
        # batches (dspex_jobs.worker_consumer) instead of one PUBLISH per job.
        "worker_send_task_events": True,
        "worker_consumer": "dspex_jobs.worker_consumer:BatchingConsumer",
        # No task-sent event: it is one more publish on every submit (the producer's hot
        # path) and Flower still sees each task from the moment a worker receives it.
        "task_send_sent_event": False,
        "timezone": "UTC",
        "enable_utc": True,
    }
