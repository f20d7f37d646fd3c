"""The filters and tests a template may use: Jinja's own, minus a few, each under the budget.

Strings have no methods in our sandbox (no attribute access at all), so filters are how a
prompt template transforms text: ``{{ question | trim | upper }}``,
``{{ passages | join("\\n") }}``, ``{{ score | round(2) }}``. Every filter and test call first
checks the render's deadline, and every string or list a filter returns is held to
``max_chars``. Filters whose *arguments* could build a huge value in one step (``center(10**9)``,
``join`` with a long separator over many items, ``replace`` with a long replacement,
``batch``/``slice`` padding, ``tojson``/``indent`` widths, ``%`` widths in ``format``) are checked
before they run.

Left out: ``attr`` (attribute access), ``pprint`` (reprs of objects), ``random`` (prompts should
be deterministic, and cacheable), ``safe``/``forceescape`` (HTML escaping, meaningless in a
prompt and ``forceescape`` grows text fivefold per use), ``urlize`` and ``xmlattr`` (HTML).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Collection, Iterable
from typing import Any, Final, cast

from jinja2 import filters as jinja_filters
from jinja2 import pass_environment, pass_eval_context
from jinja2 import tests as jinja_tests

from dspex_jobs.errors import TemplateRenderError
from dspex_jobs.templates.limits import (
    MAX_RANGE_ITEMS,
    check_width,
    current_budget,
)

__all__ = ["LEFT_OUT_FILTERS", "check_printf", "safe_filters", "safe_tests"]

LEFT_OUT_FILTERS: Final = frozenset(
    {"attr", "forceescape", "pprint", "random", "safe", "urlize", "xmlattr"}
)
"""Jinja filters a template may not use (see the module docstring for why)."""

_MAX_JSON_INDENT: Final = 16

_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")


def check_printf(template: str) -> None:
    """Refuse a ``%``-format string with ``*`` or a width/precision over :data:`MAX_WIDTH`.

    Raises:
        TemplateRenderError: ``"%999999999d"`` and the like.
    """
    for match in _PRINTF_SPEC.finditer(template):
        for number in match.groups():
            if number == "*":
                raise TemplateRenderError("'*' widths in % formats are not allowed", limit="width")
            if number is not None:
                check_width(int(number), "a % format width")


def _guarded(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` with the deadline checked before and the result's size after each call."""

    @functools.wraps(function)  # keeps jinja_pass_arg, so Jinja passes context/env as before
    def guarded(*args: Any, **kwargs: Any) -> Any:
        budget = current_budget()
        budget.tick()
        return budget.check_size(function(*args, **kwargs), "a filter's result")

    return guarded


def _ticking(test: Callable[..., Any]) -> Callable[..., Any]:
    """``test`` with the deadline checked before each call (``select('in', big)`` loops)."""

    @functools.wraps(test)
    def ticking(*args: Any, **kwargs: Any) -> Any:
        current_budget().tick()
        return test(*args, **kwargs)

    return ticking


def _batch(value: Iterable[Any], linecount: int, fill_with: Any = None) -> Any:
    _check_count(linecount, "batch size")
    return jinja_filters.do_batch(value, linecount, fill_with)


def _slice(value: Iterable[Any], slices: int, fill_with: Any = None) -> Any:
    _check_count(slices, "slice count")
    items = value if isinstance(value, Collection) else list(value)
    return jinja_filters.sync_do_slice(items, slices, fill_with)


def _center(value: str, width: int = 80) -> str:
    check_width(width, "center width")
    return jinja_filters.do_center(value, width)


def _format(value: str, *args: Any, **kwargs: Any) -> str:
    check_printf(str(value))
    return jinja_filters.do_format(value, *args, **kwargs)


def _indent(s: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    check_width(width, "indent width")
    text = str(s)
    size = len(text) + (text.count("\n") + 1) * (len(width) if isinstance(width, str) else width)
    if size > current_budget().max_chars:
        raise current_budget().too_large(size, "the indented text")
    return jinja_filters.do_indent(text, width, first, blank)


@pass_eval_context
def _join(eval_ctx: Any, value: Iterable[Any], d: str = "", attribute: Any = None) -> str:
    budget = current_budget()
    items = value if isinstance(value, list | tuple | str | dict) else list(value)
    budget.check_size(items, "the joined sequence")
    size = len(str(d)) * max(len(items) - 1, 0)
    if size > budget.max_chars:
        raise budget.too_large(size, "the separators of join")
    return jinja_filters.sync_do_join(eval_ctx, items, d, attribute)


@pass_eval_context
def _replace(eval_ctx: Any, s: str, old: str, new: str, count: int | None = None) -> str:
    text, old, new = str(s), str(old), str(new)
    occurrences = len(text) + 1 if old == "" else text.count(old)
    if count is not None and count >= 0:  # None or a negative count replaces them all
        occurrences = min(occurrences, count)
    size = len(text) + max(len(new) - len(old), 0) * occurrences
    if size > current_budget().max_chars:
        raise current_budget().too_large(size, "the replaced text")
    return jinja_filters.do_replace(eval_ctx, text, old, new, count)


@pass_environment
def _sum(environment: Any, iterable: Iterable[Any], attribute: Any = None, start: Any = 0) -> Any:
    if type(start) not in (int, float):  # summing lists copies them again and again
        raise TemplateRenderError("sum() takes numbers only (start must be a number)")
    return jinja_filters.sync_do_sum(environment, iterable, attribute, start)


@pass_eval_context
def _tojson(eval_ctx: Any, value: Any, indent: int | None = None) -> Any:
    size = len(indent) if isinstance(indent, str) else indent
    if size is not None and (not isinstance(size, int) or size > _MAX_JSON_INDENT):
        raise TemplateRenderError(
            f"tojson indent must be at most {_MAX_JSON_INDENT}, not {indent!r}", limit="width"
        )
    return jinja_filters.do_tojson(eval_ctx, value, indent)


@pass_environment
def _wordwrap(
    environment: Any,
    s: str,
    width: int = 79,
    break_long_words: bool = True,
    wrapstring: str | None = None,
    break_on_hyphens: bool = True,
) -> str:
    text = str(s)
    if wrapstring is not None:
        size = len(text) * (len(str(wrapstring)) + 1)
        if size > current_budget().max_chars:
            raise current_budget().too_large(size, "the wrapped text")
    return jinja_filters.do_wordwrap(
        environment, text, width, break_long_words, wrapstring, break_on_hyphens
    )


def _check_count(count: Any, what: str) -> None:
    if not isinstance(count, int) or not 0 < count <= MAX_RANGE_ITEMS:
        raise TemplateRenderError(
            f"{what} must be an integer from 1 to {MAX_RANGE_ITEMS}, not {count!r}",
            limit="count",
        )


_REPLACEMENTS: Final[dict[str, Callable[..., Any]]] = {
    "batch": _batch,
    "center": _center,
    "format": _format,
    "indent": _indent,
    "join": _join,
    "replace": _replace,
    "slice": _slice,
    "sum": _sum,
    "tojson": _tojson,
    "wordwrap": _wordwrap,
}


def safe_filters() -> dict[str, Callable[..., Any]]:
    """Every filter a template may use, by name, each guarded by the render's budget."""
    chosen: dict[str, Callable[..., Any]] = {}
    for name, function in jinja_filters.FILTERS.items():
        if name not in LEFT_OUT_FILTERS:
            chosen[name] = _guarded(_REPLACEMENTS.get(name, function))
    return chosen


def safe_tests() -> dict[str, Callable[..., Any]]:
    """Every Jinja test (``is defined``, ``is number``, ``in``, ...), deadline-checked."""
    return {
        name: _ticking(cast("Callable[..., Any]", test)) for name, test in jinja_tests.TESTS.items()
    }
