"""The limits every render runs under, and the per-render budget that enforces them.

A template is code written by a user, and its inputs are data sent by anyone; neither may make
a producer or a worker spend unbounded memory or time. The sandbox (:mod:`.sandbox`) cannot
reach Python objects, and these limits bound what is left:

* the rendered text, and every intermediate string or list, is at most ``max_chars`` long;
* all loops of one render together run at most :data:`MAX_LOOP_ITERATIONS` times, and
  ``range()`` yields at most :data:`MAX_RANGE_ITEMS` numbers;
* a render takes at most ``time_budget_s`` seconds, checked at every loop iteration, filter
  and test call (the only places where a template can repeat work);
* integers stay below :data:`MAX_INT_BITS` bits, paddings and widths below
  :data:`MAX_WIDTH`, so one operation cannot build a huge value before a check sees it.

The budget of the render in progress lives in a :class:`~contextvars.ContextVar`, so threads
and asyncio tasks each see their own. Outside a render there is no budget: that is how constant
folding at compile time is kept from running guarded operations (they raise, and Jinja then
leaves the expression to run time).
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import Any, Final

from dspex_jobs.errors import TemplateRenderError

__all__ = [
    "DEFAULT_MAX_CHARS",
    "DEFAULT_TIME_BUDGET_S",
    "MAX_INT_BITS",
    "MAX_LOOP_ITERATIONS",
    "MAX_RANGE_ITEMS",
    "MAX_SOURCE_CHARS",
    "MAX_VALUE_DEPTH",
    "MAX_WIDTH",
    "Budget",
    "current_budget",
]

DEFAULT_MAX_CHARS: Final = 100_000
"""Default limit on the rendered text (and on any string or list built while rendering)."""

DEFAULT_TIME_BUDGET_S: Final = 1.0
"""Default wall-clock limit of one render; a prompt renders in microseconds."""

MAX_LOOP_ITERATIONS: Final = 100_000
"""Iterations of all ``{% for %}`` loops of one render, together."""

MAX_RANGE_ITEMS: Final = 10_000
"""Most numbers one ``range()`` call may produce."""

MAX_INT_BITS: Final = 4096
"""Largest integer (in bits) arithmetic may produce: ``9 ** 9 ** 9`` is refused, not computed."""

MAX_WIDTH: Final = 1_000
"""Largest padding, indent or field width a filter or ``%`` format may ask for."""

MAX_SOURCE_CHARS: Final = 100_000
"""Longest template source accepted by ``Template.compile``."""

MAX_VALUE_DEPTH: Final = 32
"""Deepest nesting of lists and mappings accepted as a value (also catches cycles)."""

_current: ContextVar[Budget] = ContextVar("dspex_template_budget")


class Budget:
    """What one render may still spend. Created by ``Template.render``, one per call.

    Args:
        max_chars: Limit on the output and on every intermediate string or list.
        time_budget_s: Wall-clock seconds the render may take.
    """

    __slots__ = ("deadline", "iterations_left", "max_chars", "time_budget_s")

    def __init__(self, max_chars: int, time_budget_s: float) -> None:
        self.max_chars = max_chars
        self.time_budget_s = time_budget_s
        self.deadline = time.perf_counter() + time_budget_s
        self.iterations_left = MAX_LOOP_ITERATIONS

    def tick(self) -> None:
        """Fail if the render is past its deadline.

        Raises:
            TemplateRenderError: The render took longer than ``time_budget_s``.
        """
        if time.perf_counter() > self.deadline:
            raise TemplateRenderError(
                f"rendering took longer than its budget of {self.time_budget_s} s",
                limit="time_budget_s",
                budget_s=self.time_budget_s,
            )

    def iterate(self) -> None:
        """Count one loop iteration against the render's budget; check the time every 16.

        An iteration that does not call a filter or test (which check the time themselves)
        does work bounded by the template's length, so reading the clock on every 16th is
        enough and keeps loops cheap.

        Raises:
            TemplateRenderError: Over :data:`MAX_LOOP_ITERATIONS`, or past the deadline.
        """
        self.iterations_left -= 1
        if self.iterations_left < 0:
            raise TemplateRenderError(
                f"loops ran more than {MAX_LOOP_ITERATIONS} iterations in one render",
                limit="loop_iterations",
                max_iterations=MAX_LOOP_ITERATIONS,
            )
        if self.iterations_left & 15 == 0:
            self.tick()

    def check_size(self, value: Any, what: str = "a value") -> Any:
        """Return ``value`` if it is not a string, list or mapping longer than ``max_chars``.

        Raises:
            TemplateRenderError: ``value`` is over the limit.
        """
        if isinstance(value, str | list | tuple | dict) and len(value) > self.max_chars:
            raise self.too_large(len(value), what)
        return value

    def too_large(self, size: int, what: str) -> TemplateRenderError:
        """The error for ``what`` growing to ``size`` (characters or items)."""
        return TemplateRenderError(
            f"{what} would be {size} characters or items long, over the limit of "
            f"{self.max_chars} (max_chars)",
            limit="max_chars",
            max_chars=self.max_chars,
            size=size,
        )


def current_budget() -> Budget:
    """The budget of the render in progress.

    Raises:
        LookupError: No render is in progress (for example while a template is compiled).
    """
    return _current.get()


def enter(budget: Budget) -> Any:
    """Make ``budget`` current; returns the token :func:`leave` needs."""
    return _current.set(budget)


def leave(token: Any) -> None:
    """Restore the budget that was current before :func:`enter`."""
    _current.reset(token)


def check_int(value: Any) -> Any:
    """Return ``value`` unless it is an integer of more than :data:`MAX_INT_BITS` bits."""
    if type(value) is int and value.bit_length() > MAX_INT_BITS:
        raise TemplateRenderError(
            f"an integer of {value.bit_length()} bits is over the limit of {MAX_INT_BITS}",
            limit="int_bits",
            max_bits=MAX_INT_BITS,
        )
    return value


def check_width(width: Any, what: str) -> None:
    """Refuse a padding or width (a number, or a string used as one) over :data:`MAX_WIDTH`."""
    size = len(width) if isinstance(width, str) else width
    if isinstance(size, int) and size > MAX_WIDTH:
        raise TemplateRenderError(
            f"{what} of {size} is over the limit of {MAX_WIDTH}",
            limit="width",
            width=size,
            max_width=MAX_WIDTH,
        )
