"""The trace context of the job this thread runs, and structured (JSON) logs that carry it.

A job's ``trace_id`` is minted by the producer (or continued from the caller's), travels in
the envelope, is stored in the result and in every event the job causes. While a worker runs
a job, :func:`job_context` puts the job id, kind, queue and trace id in a :mod:`contextvars`
variable, so that every log record written on that thread (ours, DSPy's, LiteLLM's) carries
them without any logger knowing about jobs: :class:`ContextFilter` copies them onto records
and :class:`JsonFormatter` writes one JSON object per line.

Example::

    with job_context(job_id="j1", trace_id="t1", kind="predict", queue="general"):
        logging.getLogger("x").info("hello")   # {"msg": "hello", "job_id": "j1", ...}
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import time
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

__all__ = ["ContextFilter", "JsonFormatter", "current", "install_json_logs", "job_context"]

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_CONTEXT: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "dspex_trace_context", default=_EMPTY
)

_FIELDS = ("job_id", "trace_id", "kind", "queue", "run_id", "step")
"""Context keys copied onto log records (absent ones are ``None``)."""


def current() -> Mapping[str, Any]:
    """The trace context of this thread (empty outside a job)."""
    return _CONTEXT.get()


@contextlib.contextmanager
def job_context(**values: Any) -> Iterator[Mapping[str, Any]]:
    """Run a block with ``values`` (job_id, trace_id, ...) added to the trace context."""
    merged = {**_CONTEXT.get(), **{k: v for k, v in values.items() if v is not None}}
    token = _CONTEXT.set(merged)
    try:
        yield merged
    finally:
        _CONTEXT.reset(token)


class ContextFilter(logging.Filter):
    """Copies the trace context onto every record (``record.job_id``, ``record.trace_id``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _CONTEXT.get()
        for name in _FIELDS:
            if not hasattr(record, name):
                setattr(record, name, context.get(name))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, trace context, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 6),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        context = _CONTEXT.get()
        for name in _FIELDS:
            value = getattr(record, name, None) or context.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def install_json_logs(logger: logging.Logger | None = None) -> None:
    """Make every handler of ``logger`` (the root logger by default) write JSON lines."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        handler.setFormatter(JsonFormatter())
        if not any(isinstance(f, ContextFilter) for f in handler.filters):
            handler.addFilter(ContextFilter())
