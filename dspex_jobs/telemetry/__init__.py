"""Telemetry: named events (``dspex.router.route``, ...) and the handlers that export them.

:mod:`.events` is the whole API today: :func:`emit`, :func:`attach`, :func:`detach`. Issue #11
adds handlers that export events to Prometheus, structured logs and Sentry; emitters do not
change. Every event this package emits is listed in ``docs/routing_and_templates.md`` (router)
and the telemetry guide.
"""

from dspex_jobs.telemetry.events import Handler, attach, attached, detach, emit, has_handlers

__all__ = ["Handler", "attach", "attached", "detach", "emit", "has_handlers"]
