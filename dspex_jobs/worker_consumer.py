"""Celery's worker consumer, with task events flushed at most every few tens of milliseconds.

Flower and every monitor watch the Celery events a worker sends (``task-received``,
``task-started``, ``task-succeeded``, ...). Celery buffers task events and flushes them on
the next turn of the worker's event loop, which under load is one Redis ``PUBLISH`` per job:
the largest single cost of the worker's main process after taking and acknowledging the
message (measured with py-spy on a prefork worker: about a fifth of its samples). Flushing
at most every :data:`EVENT_FLUSH_INTERVAL_S` sends the same events, in order, in one
``task.multi`` message per interval, and a monitor sees them that much later. Celery still
flushes at once when the buffer holds ``buffer_limit`` (24) events, and this consumer
flushes what is left when the worker shuts down, so no event is dropped.

Selected by the app's ``worker_consumer`` setting (:mod:`dspex_jobs.app`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery.worker.consumer import Consumer

__all__ = ["EVENT_FLUSH_INTERVAL_S", "BatchingConsumer"]

logger = logging.getLogger("dspex_jobs.worker")

EVENT_FLUSH_INTERVAL_S = 0.05
"""Longest a task event waits in the worker before it is published."""


class BatchingConsumer(Consumer):
    """A :class:`celery.worker.consumer.Consumer` whose task events leave in batches."""

    hub: Any  # Celery's event loop (kombu's Hub), or None; not in celery-types' stubs

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._last_flush = 0.0
        self._flush_timer_pending = False
        super().__init__(*args, **kwargs)

    def _flush_events(self) -> None:
        # Celery schedules this on the event loop (hub.call_soon) whenever a task event is
        # buffered, possibly from a pool thread; it always runs on the loop's own thread,
        # which is the only place the hub's timer may be touched.
        wait_s = self._last_flush + EVENT_FLUSH_INTERVAL_S - time.monotonic()
        if wait_s > 0 and self.hub is not None:
            if not self._flush_timer_pending:
                self._flush_timer_pending = True
                self.hub.call_later(wait_s, self._timed_flush)
            return
        self._last_flush = time.monotonic()
        super()._flush_events()  # type: ignore[misc]  # not in celery-types' stubs

    def _timed_flush(self) -> None:
        self._flush_timer_pending = False
        self._last_flush = time.monotonic()
        super()._flush_events()  # type: ignore[misc]

    def shutdown(self) -> None:
        """Publish the events still buffered, then shut down as Celery does."""
        try:
            self._timed_flush()
        except Exception as exc:  # the broker is gone: nothing to publish to, shut down anyway
            logger.warning("could not publish the last task events: %s", exc)
        super().shutdown()
