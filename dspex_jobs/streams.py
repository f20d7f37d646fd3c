"""Token streaming from a worker to producers through a Redis Stream per job.

The worker appends one entry per chunk (``XADD dspex:stream:<id>``, capped length, TTL) and
a last entry with the final outputs or the error. A producer reads with ``XREAD BLOCK`` from
the last entry id it saw, so a consumer that connects late or reconnects resumes exactly
where it stopped: it misses nothing and sees nothing twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aioredis

from dspex_jobs.errors import DSPexError, JobTimeout
from dspex_jobs.results import JobErrorInfo

__all__ = [
    "StreamChunk",
    "StreamEnd",
    "StreamEvent",
    "StreamWriter",
    "astream_events",
    "stream_events",
]

STREAM_MAXLEN = 10_000
"""Entries kept per job stream (approximate trimming); far more than any answer's chunks."""

_BLOCK_MS = 500
"""Longest single XREAD block, so a timeout is noticed promptly."""


@dataclass(frozen=True)
class StreamChunk:
    """A piece of one output field, as the LM produced it."""

    field: str
    text: str
    is_last: bool
    id: str


@dataclass(frozen=True)
class StreamEnd:
    """The job finished: its full outputs, or the error that ended it."""

    outputs: dict[str, Any] | None
    id: str
    error: JobErrorInfo | None = None

    def raise_for_error(self, job_id: str | None = None) -> None:
        """Raise the job's typed error, if it failed."""
        if self.error is not None:
            raise self.error.to_exception(job_id)


StreamEvent = StreamChunk | StreamEnd


@dataclass
class StreamWriter:
    """Appends a job's chunks and its end record to its stream (worker side)."""

    client: redis.Redis
    key: str
    ttl_s: int
    chunks_written: int = field(default=0, init=False)

    def chunk(self, field_name: str, text: str, is_last: bool) -> None:
        """Append one chunk; the stream's TTL is set with the first."""
        pipe = self.client.pipeline(transaction=False)
        pipe.xadd(
            self.key,
            {"type": "chunk", "field": field_name, "text": text, "last": "1" if is_last else "0"},
            maxlen=STREAM_MAXLEN,
            approximate=True,
        )
        if self.chunks_written == 0:
            pipe.expire(self.key, self.ttl_s)
        pipe.execute()
        self.chunks_written += 1

    def end(self, outputs: dict[str, Any] | None = None, error: DSPexError | None = None) -> None:
        """Append the end record: the outputs, or the error."""
        error_json = JobErrorInfo.from_error(error).model_dump_json() if error else ""
        pipe = self.client.pipeline(transaction=False)
        pipe.xadd(
            self.key,
            {"type": "end", "outputs": json.dumps(outputs), "error": error_json},
            maxlen=STREAM_MAXLEN,
            approximate=True,
        )
        pipe.expire(self.key, self.ttl_s)
        pipe.execute()


def _parse(entry_id: bytes | str, fields: dict[Any, Any]) -> StreamEvent:
    def get(name: str) -> str:
        value = fields.get(name.encode(), fields.get(name, b""))
        return value.decode() if isinstance(value, bytes) else str(value)

    eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    if get("type") == "chunk":
        return StreamChunk(get("field"), get("text"), get("last") == "1", eid)
    error_raw = get("error")
    error = JobErrorInfo.model_validate_json(error_raw) if error_raw else None
    return StreamEnd(json.loads(get("outputs") or "null"), eid, error)


class _Cursor:
    """Where a reader is in a stream, and whether it has been idle too long."""

    def __init__(self, key: str, after_id: str, timeout_s: float | None) -> None:
        self.key = key
        self.last = after_id
        self.timeout_s = timeout_s
        self.done = False
        self._idle_since = time.monotonic()

    def absorb(self, replies: Any) -> list[StreamEvent]:
        """The events in one XREAD reply (stopping at the end record)."""
        if not replies:
            idle_s = time.monotonic() - self._idle_since
            if self.timeout_s is not None and idle_s > self.timeout_s:
                raise JobTimeout(f"no stream data on {self.key} for {self.timeout_s} s")
            return []
        self._idle_since = time.monotonic()
        events: list[StreamEvent] = []
        for entry_id, fields in replies[0][1]:
            event = _parse(entry_id, fields)
            self.last = event.id
            events.append(event)
            if isinstance(event, StreamEnd):
                self.done = True
                break
        return events


def stream_events(
    client: redis.Redis, key: str, *, after_id: str = "0-0", timeout_s: float | None = None
) -> Iterator[StreamEvent]:
    """Yield a job's stream from just after ``after_id`` until its end record.

    Raises:
        JobTimeout: Nothing new arrived for ``timeout_s`` seconds.
    """
    cursor = _Cursor(key, after_id, timeout_s)
    while not cursor.done:
        yield from cursor.absorb(client.xread({key: cursor.last}, block=_BLOCK_MS, count=100))


async def astream_events(
    client: aioredis.Redis, key: str, *, after_id: str = "0-0", timeout_s: float | None = None
) -> AsyncIterator[StreamEvent]:
    """The async twin of :func:`stream_events`."""
    cursor = _Cursor(key, after_id, timeout_s)
    while not cursor.done:
        replies = await client.xread({key: cursor.last}, block=_BLOCK_MS, count=100)
        for event in cursor.absorb(replies):
            yield event
