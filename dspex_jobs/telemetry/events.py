"""Named events with pluggable handlers: the seam every metric, log and trace goes through.

A component reports something by emitting a named event (``dspex.router.route``) with numeric
*measurements* (durations in seconds, sizes, counts) and descriptive *metadata* (operation,
implementation, outcome). Exporters (Prometheus, structured logs, Sentry: issue #11) attach
handlers; components never know who listens. The model is Erlang's ``:telemetry``:

* handlers run synchronously, in the emitting thread, in the order they were attached;
* a handler that raises is logged and detached, so a broken exporter can never break (or slow
  down, raise after raise) the code that emits;
* emitting an event nobody listens to costs one dict lookup, so hot paths emit unconditionally.
  When building the measurements themselves costs something, check :func:`has_handlers` first.

Example::

    def log_route(name, measurements, metadata):
        print(name, measurements["duration_s"], metadata["implementation"])

    attach("print-routes", "dspex.router.route", log_route)
    attach("everything", "dspex.*", log_route)  # a prefix: every event whose name starts so
    detach("print-routes")
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeAlias

__all__ = ["Handler", "attach", "attached", "detach", "emit", "has_handlers"]

logger = logging.getLogger("dspex_jobs.telemetry")

Handler: TypeAlias = Callable[[str, Mapping[str, float], Mapping[str, Any]], None]
"""``handler(name, measurements, metadata)``; its return value is ignored."""

_lock = threading.Lock()
_attached: dict[str, tuple[tuple[str, ...], Handler]] = {}  # handler id -> (patterns, handler)
_resolved: dict[str, tuple[tuple[str, Handler], ...]] = {}  # event name -> its handlers


def attach(handler_id: str, events: str | Iterable[str], handler: Handler) -> None:
    """Call ``handler`` for every event matching ``events``.

    Args:
        handler_id: A unique name for this attachment, used to :func:`detach` it.
        events: Event names, or prefixes ending in ``*`` (``"dspex.router.*"``; ``"*"`` is all).
        handler: Called as ``handler(name, measurements, metadata)`` in the emitting thread.

    Raises:
        ValueError: If ``handler_id`` is already attached or no event pattern is given.
    """
    patterns = (events,) if isinstance(events, str) else tuple(events)
    if not patterns:
        raise ValueError(f"handler {handler_id!r} names no events")
    with _lock:
        if handler_id in _attached:
            raise ValueError(f"a handler with id {handler_id!r} is already attached")
        _attached[handler_id] = (patterns, handler)
        _resolved.clear()


def detach(handler_id: str) -> bool:
    """Stop calling the handler attached as ``handler_id``; returns whether one was attached."""
    with _lock:
        found = _attached.pop(handler_id, None) is not None
        _resolved.clear()
    return found


def attached() -> dict[str, tuple[str, ...]]:
    """The attached handler ids and the event patterns each listens to."""
    with _lock:
        return {handler_id: patterns for handler_id, (patterns, _) in _attached.items()}


def has_handlers(name: str) -> bool:
    """Whether emitting ``name`` would call anything (to skip building costly measurements)."""
    if not _attached:
        return False
    handlers = _resolved.get(name)
    return bool(handlers if handlers is not None else _resolve(name))


def emit(name: str, measurements: Mapping[str, float], metadata: Mapping[str, Any]) -> None:
    """Report event ``name`` to every handler attached to it; never raises.

    Args:
        name: Dotted event name, ``dspex.<component>.<event>``.
        measurements: Numbers, with the unit in the key (``duration_s``, ``size_bytes``).
        metadata: What the numbers describe (labels such as ``operation``), JSON-able.
    """
    handlers = _resolved.get(name)
    if handlers is None:
        if not _attached:
            return
        handlers = _resolve(name)
    for handler_id, handler in handlers:
        try:
            handler(name, measurements, metadata)
        except Exception:
            logger.exception("telemetry handler %r failed on %s; detaching it", handler_id, name)
            detach(handler_id)


def _resolve(name: str) -> tuple[tuple[str, Handler], ...]:
    """The handlers for one event name, computed once and kept until the next (de)attach."""
    with _lock:
        handlers = tuple(
            (handler_id, handler)
            for handler_id, (patterns, handler) in _attached.items()
            if any(_matches(pattern, name) for pattern in patterns)
        )
        _resolved[name] = handlers
    return handlers


def _matches(pattern: str, name: str) -> bool:
    if pattern.endswith("*"):
        return name.startswith(pattern[:-1])
    return pattern == name
