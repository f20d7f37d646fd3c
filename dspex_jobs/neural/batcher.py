"""Dynamic micro-batching: concurrent small jobs share one model call, big jobs are split.

A transformer costs nearly as much for one sentence as for a dozen (on this project's 2-core
CPU, one-at-a-time encoding does about a quarter of the sentences per second that batches of
32 do), so an inference server gathers requests into batches. A :class:`Batcher` does the
same inside one worker process: one background thread owns the model; every job hands its
texts over and waits on a future. The thread takes the first request waiting, adds the
requests queued behind it up to ``max_batch`` texts, runs **one** ``encode`` and gives each
caller its rows.

How long it waits for company is the usual trade of latency for throughput, bounded by
``max_wait_ms``, and adaptive: it waits only when company is likely, that is while a job
running in this process (:meth:`Batcher.job`) has not handed its texts over yet, or when the
previous batch was shared (the worker is busy: the jobs that just got their vectors are
being followed by new ones, which need a few milliseconds of task overhead to get here). A
lone job on an idle worker is therefore never delayed; under load, the queue also fills
while the model runs, so most batches form without waiting at all.

A job with more texts than ``max_batch`` is split into model-sized chunks. Its texts are sorted
by length first (as ``SentenceTransformer.encode`` does), so each chunk pads to similar
lengths, and the rows are put back in the caller's order at the end.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Batcher", "BatcherStats"]

logger = logging.getLogger("dspex_jobs.neural")

EncodeFn = Callable[[list[str]], Any]
"""Runs the model: a list of texts in, a ``(len(texts), dim)`` numpy array out."""


@dataclass
class _Request:
    texts: list[str]
    caller: int
    future: Future[Any] = field(default_factory=Future)


_STOP = _Request([], -1)


@dataclass(frozen=True, slots=True)
class BatcherStats:
    """Counters since the batcher started.

    Attributes:
        batches: Model calls made.
        texts: Texts encoded.
        requests: Requests (chunks of jobs) served.
        largest_batch: Most texts in one model call.
        multi_request_batches: Model calls that served more than one request.
    """

    batches: int = 0
    texts: int = 0
    requests: int = 0
    largest_batch: int = 0
    multi_request_batches: int = 0

    @property
    def mean_batch(self) -> float:
        """Texts per model call, on average."""
        return self.texts / self.batches if self.batches else 0.0


class Batcher:
    """Gathers texts from concurrent callers into model-sized batches on one thread.

    Args:
        encode: Runs the model on a list of texts (only ever called from the batcher's thread).
        max_batch: Most texts per model call.
        max_wait_ms: Longest a batch waits for running jobs to add their texts (0: never).
        name: The thread's name.

    Example:
        >>> import numpy as np
        >>> batcher = Batcher(lambda texts: np.ones((len(texts), 2)), max_batch=8,
        ...                   max_wait_ms=2)
        >>> batcher.encode(["a", "b", "c"]).shape
        (3, 2)
        >>> batcher.close()
    """

    def __init__(
        self,
        encode: EncodeFn,
        *,
        max_batch: int,
        max_wait_ms: float,
        name: str = "dspex-neural-batcher",
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self.max_batch = max_batch
        self.max_wait_s = max(0.0, max_wait_ms / 1000)
        self._encode = encode
        self._queue: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._active_jobs = 0
        self._busy = False  # the last batch served more than one caller
        self._closed = False
        self._stats = BatcherStats()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- callers ---------------------------------------------------------------------------

    @contextmanager
    def job(self) -> Iterator[None]:
        """Mark one job as running in this process while the block lasts.

        The batcher waits (up to ``max_wait_ms``) for running jobs that have not handed their
        texts over yet; jobs that never say they run are batched only with what is queued.
        """
        with self._lock:
            self._active_jobs += 1
        try:
            yield
        finally:
            with self._lock:
                self._active_jobs -= 1

    def encode(self, texts: Sequence[str]) -> Any:
        """Encode ``texts`` with whatever other callers are sending; rows in the given order.

        Raises:
            RuntimeError: The batcher is closed.
            Exception: Whatever the model raised for the batch these texts were in.
        """
        items = list(texts)
        if len(items) <= self.max_batch:
            return self._submit([items])[0].result()
        import numpy as np

        order = sorted(range(len(items)), key=lambda i: -len(items[i]))
        chunks = [
            [items[i] for i in order[start : start + self.max_batch]]
            for start in range(0, len(items), self.max_batch)
        ]
        stacked = np.concatenate([future.result() for future in self._submit(chunks)])
        rows = np.empty_like(stacked)
        rows[order] = stacked
        return rows

    def stats(self) -> BatcherStats:
        """A snapshot of the counters."""
        with self._lock:
            return self._stats

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the thread; requests still queued fail with ``RuntimeError``."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout_s)

    # -- the batcher thread ----------------------------------------------------------------

    def _submit(self, chunks: list[list[str]]) -> list[Future[Any]]:
        caller = threading.get_ident()
        requests = [_Request(chunk, caller) for chunk in chunks]
        with self._lock:
            if self._closed:
                raise RuntimeError("the embedding batcher is closed")
            for request in requests:
                self._queue.put(request)
        return [request.future for request in requests]

    def _run(self) -> None:
        held: _Request | None = None
        while True:
            first = held if held is not None else self._queue.get()
            held = None
            if first is _STOP:
                break
            batch, held = self._gather(first)
            self._serve(batch)
        self._fail_queued()

    def _gather(self, first: _Request) -> tuple[list[_Request], _Request | None]:
        """The requests that make this batch, and one taken off the queue that did not fit."""
        batch, size = [first], len(first.texts)
        deadline = time.monotonic() + self.max_wait_s
        while size < self.max_batch:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                remaining_s = deadline - time.monotonic()
                if remaining_s <= 0 or not self._company_likely(batch):
                    break
                try:
                    request = self._queue.get(timeout=remaining_s)
                except queue.Empty:
                    break
            if request is _STOP or size + len(request.texts) > self.max_batch:
                return batch, request
            batch.append(request)
            size += len(request.texts)
        return batch, None

    def _company_likely(self, batch: list[_Request]) -> bool:
        """Whether more texts are likely to arrive soon (see the module docstring)."""
        if self._busy:
            return True
        with self._lock:
            active = self._active_jobs
        return active > len({request.caller for request in batch})

    def _serve(self, batch: list[_Request]) -> None:
        texts = [text for request in batch for text in request.texts]
        self._busy = len({request.caller for request in batch}) > 1
        try:
            vectors = self._encode(texts)
        except Exception as exc:  # every caller in the batch gets the model's error
            logger.warning("embedding batch of %d texts failed: %s", len(texts), exc)
            for request in batch:
                request.future.set_exception(exc)
            return
        start = 0
        for request in batch:
            end = start + len(request.texts)
            request.future.set_result(vectors[start:end])
            start = end
        with self._lock:
            s = self._stats
            self._stats = BatcherStats(
                s.batches + 1,
                s.texts + len(texts),
                s.requests + len(batch),
                max(s.largest_batch, len(texts)),
                s.multi_request_batches + (len(batch) > 1),
            )

    def _fail_queued(self) -> None:
        while True:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                return
            if request is not _STOP:
                request.future.set_exception(RuntimeError("the embedding batcher is closed"))
