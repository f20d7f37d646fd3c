"""The baseline: a bare Celery app with one no-op task, at Celery's defaults."""

import os

from celery import Celery

app = Celery("bare", broker=os.environ["BENCH_REDIS_URL"], backend=os.environ["BENCH_REDIS_URL"])
app.conf.task_default_queue = "bare"


@app.task(name="bare.noop")
def noop() -> None:
    """Does nothing: its round trip is pure Celery + Redis overhead."""
