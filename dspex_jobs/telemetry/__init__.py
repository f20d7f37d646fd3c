"""Telemetry: named events (``dspex.router.route``, ...) and the handlers that export them.

:mod:`.events` is the API emitters use: :func:`emit`, :func:`attach`, :func:`detach`;
:mod:`.catalogue` names every event the project emits. Exporters, each off until a setting
turns it on (:mod:`.setup`): :mod:`.prometheus` (metrics), :mod:`.context` (trace context and
JSON logs), :mod:`.sentry`, :mod:`.alerts` (rules, anomalies, webhook), :mod:`.otel` (spans).
Only :mod:`.events`, :mod:`.catalogue`, :mod:`.jobs` and :mod:`.summary` are imported by
producers. See ``docs/observability.md``.
"""

from dspex_jobs.telemetry.events import Handler, attach, attached, detach, emit, has_handlers

__all__ = ["Handler", "attach", "attached", "detach", "emit", "has_handlers"]
