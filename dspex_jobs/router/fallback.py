"""Fallback: when an implementation fails, whether to try the next one, and the record of it.

The rule is narrow on purpose. The next implementation is tried only when the failure says
that *this implementation* could not do it, not that the request is wrong:

* ``unsupported``: :class:`~dspex_jobs.errors.UnsupportedOperation` (or ``NotImplementedError``):
  this implementation cannot handle these arguments; another may;
* ``retryable``: a transient failure (an error whose ``retryable`` flag is set: rate limit,
  timeout, provider down; or Python's ``TimeoutError``/``ConnectionError``).

A :class:`~dspex_jobs.errors.ValidationError` never falls back (the request is wrong, and
every implementation would say so), and neither does anything else: a bug in an
implementation should be seen, not papered over. Every fallback is recorded as an
:class:`Attempt`; when the last candidate fails too, its error is raised with the earlier
attempts attached (``details["attempts"]`` and an exception note).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from dspex_jobs.errors import DSPexError, UnsupportedOperation, ValidationError
from dspex_jobs.router.registry import Implementation, ImplementationKind
from dspex_jobs.router.strategy import Route

__all__ = ["Attempt", "FallbackPolicy", "FallbackReason", "fallback_reason", "run_with_fallback"]


class FallbackReason(StrEnum):
    """Why the router moved on to the next implementation."""

    UNSUPPORTED = "unsupported"
    RETRYABLE = "retryable"


FallbackPolicy = Callable[[BaseException], FallbackReason | None]
"""Decides whether a failure falls back (and why); :func:`fallback_reason` is the default."""


def fallback_reason(error: BaseException) -> FallbackReason | None:
    """The default policy (see the module docstring): the reason to fall back, or ``None``."""
    if isinstance(error, ValidationError):
        return None
    if isinstance(error, UnsupportedOperation | NotImplementedError):
        return FallbackReason.UNSUPPORTED
    if isinstance(error, DSPexError):
        return FallbackReason.RETRYABLE if error.retryable else None
    if isinstance(error, TimeoutError | ConnectionError):
        return FallbackReason.RETRYABLE
    return None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One implementation that failed.

    Attributes:
        implementation: Its name.
        kind: Its kind.
        error_code: The error's stable ``code``, or the exception class name.
        message: The error message.
        reason: Why the router went on to the next one; ``None`` if it did not.
        duration_s: How long the attempt took.
    """

    implementation: str
    kind: ImplementationKind
    error_code: str
    message: str
    reason: FallbackReason | None
    duration_s: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, for error details and logs."""
        return {
            "implementation": self.implementation,
            "kind": self.kind.value,
            "error_code": self.error_code,
            "message": self.message,
            "reason": None if self.reason is None else self.reason.value,
            "duration_s": self.duration_s,
        }


def run_with_fallback(
    route: Route,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    *,
    policy: FallbackPolicy = fallback_reason,
    on_fallback: Callable[[Attempt, Implementation], None] | None = None,
    attempts: list[Attempt] | None = None,
) -> tuple[Any, Implementation]:
    """Call the route's implementations in turn until one succeeds or one must not fall back.

    Args:
        route: The decision; its candidates are tried in order.
        args: Positional arguments for the implementation.
        kwargs: Keyword arguments for the implementation.
        policy: Decides whether a failure falls back.
        on_fallback: Called with the failed attempt and the implementation tried next.
        attempts: Receives one :class:`Attempt` per failure, the final one included, so the
            caller has the record whether this returns or raises.

    Returns:
        The value and the implementation that produced it.

    Raises:
        Exception: The last failure, with ``details["attempts"]`` (for dspex errors) and a
            note listing the attempts that came before it.
    """
    attempts = [] if attempts is None else attempts
    candidates = route.candidates
    for position, implementation in enumerate(candidates):
        started = time.perf_counter()
        try:
            return implementation.resolve()(*args, **kwargs), implementation
        except Exception as error:
            reason = policy(error)
            is_last = position == len(candidates) - 1
            attempt = Attempt(
                implementation.name,
                implementation.kind,
                error.code if isinstance(error, DSPexError) else type(error).__name__,
                str(error),
                None if is_last else reason,
                time.perf_counter() - started,
            )
            attempts.append(attempt)
            if reason is None or is_last:
                _annotate(error, route, attempts)
                raise
            if on_fallback is not None:
                on_fallback(attempt, candidates[position + 1])
    raise AssertionError("unreachable: a route always has a candidate")  # pragma: no cover


def _annotate(error: Exception, route: Route, attempts: list[Attempt]) -> None:
    if len(attempts) < 2:
        return
    tried = ", ".join(f"{a.implementation} ({a.error_code})" for a in attempts)
    error.add_note(f"router: every implementation of {route.operation!r} failed: {tried}")
    if isinstance(error, DSPexError):
        error.details.setdefault("attempts", [attempt.to_dict() for attempt in attempts])
