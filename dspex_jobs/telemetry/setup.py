"""Turn the exporters on in a worker, from its settings; each is off unless configured.

====================== ======================== =====================================
setting                turns on                 where
====================== ======================== =====================================
``DSPEX_LOG_FORMAT``   JSON log lines           every worker process
``DSPEX_METRICS_PORT`` Prometheus ``/metrics``  served by the main process, kept by
                                                every process (multiprocess mode)
``DSPEX_SENTRY_DSN``   Sentry                   every worker process (and producers)
``DSPEX_ALERT_*``      rule windows, webhook    every process that runs jobs
====================== ======================== =====================================

:func:`install_worker_telemetry` is called by :func:`dspex_jobs.worker.install_worker_hooks`
in the worker's main process, before the pool forks. The metrics folder is chosen there, so
that every child writes its values where the main process reads them.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from typing import Any

from celery import Celery
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_shutdown,
)

__all__ = ["install_worker_telemetry"]

logger = logging.getLogger("dspex_jobs.telemetry")


def install_worker_telemetry(app: Celery) -> None:
    """Connect the exporters the app's settings ask for to the worker's signals."""
    from dspex_jobs.app import settings_of

    settings = settings_of(app)
    uid = id(app)
    if settings.log_format == "json":
        after_setup_logger.connect(_json_logs, weak=False, dispatch_uid=f"dspex-json-{uid}")
        after_setup_task_logger.connect(
            _json_logs, weak=False, dispatch_uid=f"dspex-json-task-{uid}"
        )
    if settings.metrics_port is not None:
        created = _prepare_metrics_dir(settings.metrics_dir)
        if created is not None:  # our temporary folder goes when the worker does

            def remove_dir(**_: Any) -> None:
                shutil.rmtree(created, ignore_errors=True)

            worker_shutdown.connect(remove_dir, weak=False, dispatch_uid=f"dspex-metrics-dir-{uid}")

    def in_process(**_: Any) -> None:
        _install_in_process(settings)

    def main_process(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is not app:
            return
        _install_in_process(settings)
        if settings.metrics_port is not None:
            try:
                from dspex_jobs.telemetry.prometheus import serve

                serve(settings, settings.metrics_port)
            except Exception:
                logger.exception("could not serve metrics on port %s", settings.metrics_port)

    def child_exit(pid: int | None = None, **_: Any) -> None:
        if settings.metrics_port is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid or os.getpid())  # type: ignore[no-untyped-call]

    worker_init.connect(main_process, weak=False, dispatch_uid=f"dspex-telemetry-main-{uid}")
    worker_process_init.connect(in_process, weak=False, dispatch_uid=f"dspex-telemetry-child-{uid}")
    worker_process_shutdown.connect(
        child_exit, weak=False, dispatch_uid=f"dspex-telemetry-exit-{uid}"
    )


def _json_logs(logger: logging.Logger | None = None, **_: Any) -> None:
    from dspex_jobs.telemetry.context import install_json_logs

    install_json_logs(logger)
    install_json_logs()


def _install_in_process(settings: Any) -> None:
    """What every process that runs jobs needs (prefork children, or the main process)."""
    try:
        if settings.metrics_port is not None:
            from dspex_jobs.telemetry import prometheus

            prometheus.install()
        if settings.sentry_dsn is not None:
            from dspex_jobs.telemetry.sentry import init_sentry

            init_sentry(settings)
        if settings.alert_webhook_url:
            from dspex_jobs.telemetry.alerts import install_alerts

            install_alerts(settings)
    except Exception:  # telemetry must never stop a worker from running jobs
        logger.exception("could not set up telemetry in process %d", os.getpid())


def _prepare_metrics_dir(configured: str | None) -> str | None:
    """An empty multiprocess folder (files left by an earlier run would be summed in); the
    temporary folder's path if one was created."""
    from dspex_jobs.telemetry.prometheus import use_multiprocess_dir

    if configured:
        shutil.rmtree(configured, ignore_errors=True)
        use_multiprocess_dir(configured)
        return None
    path = tempfile.mkdtemp(prefix="dspex-metrics-")
    use_multiprocess_dir(path)
    return path
