"""OpenTelemetry spans for jobs, when ``opentelemetry`` is installed (the ``otel`` extra).

Our ``trace_id`` is a 32-hex-digit UUID, which is also a valid W3C trace id, so a job's span
is started under a remote parent carrying that id: every span of a job, of a pipeline's
steps and of whatever the producer traced with the same id lands in one OpenTelemetry trace,
with no extra header on the wire. A caller's own trace id that is not 32 hex digits is kept
as the ``dspex.trace_id`` attribute instead. Without ``opentelemetry``, or without a tracer
provider configured, :func:`job_span` costs one cached import check.
"""

from __future__ import annotations

import contextlib
import random
import re
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["available", "job_span"]

_HEX32 = re.compile(r"[0-9a-f]{32}")
_available: bool | None = None


def available() -> bool:
    """Whether ``opentelemetry`` can be imported (checked once)."""
    global _available
    if _available is None:
        try:
            import opentelemetry.trace  # noqa: F401
        except ImportError:
            _available = False
        else:
            _available = True
    return _available


@contextlib.contextmanager
def job_span(name: str, trace_id: str, attributes: Mapping[str, Any]) -> Iterator[None]:
    """Run a block inside a span named ``name``, in the trace ``trace_id`` when it can be."""
    if not available():
        yield
        return
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

    parent = None
    if _HEX32.fullmatch(trace_id) and int(trace_id, 16):
        remote = SpanContext(
            trace_id=int(trace_id, 16),
            span_id=random.getrandbits(63) + 1,
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
        parent = trace.set_span_in_context(NonRecordingSpan(remote))
    values = {f"dspex.{k}": v for k, v in attributes.items() if v is not None}
    values["dspex.trace_id"] = trace_id
    tracer = trace.get_tracer("dspex_jobs")
    with tracer.start_as_current_span(
        name, context=parent, kind=SpanKind.CONSUMER, attributes=values
    ):
        yield
