"""The Jinja environment prompt templates run in: data in, text out, nothing else reachable.

Jinja's :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` already refuses underscore
attributes and mutation. Prompt templates need far less than it allows, so this one allows
far less, and every known server-side template injection route is closed at its root:

* **No attributes but fields.** ``x.y`` and ``x["y"]`` read keys of mappings and nothing else;
  lists and strings take integer indexes and slices. Strings, numbers and lists have no methods
  (use filters). The only exceptions are ``loop.index`` and its siblings, and the fields of a
  ``groupby`` group. ``''.__class__.__mro__`` fails at its first step.
* **No callables but two.** ``range()`` (bounded) and ``loop.cycle()``/``loop.changed()``. The
  usual ``cycler``, ``joiner``, ``namespace``, ``lipsum`` and ``dict`` globals are gone, and
  with them ``cycler.__init__.__globals__``.
* **Bounded arithmetic.** ``*``, ``**``, ``+`` and ``%`` go through :meth:`call_binop`, which
  refuses results over the render's limits *before* computing them; ``~`` and loops are routed
  through the ``_dspex_concat`` and ``_dspex_loop`` filters by :mod:`.compiler`.
* **StrictUndefined**, autoescape off (these are prompts, not HTML), no extensions, blocks
  trimmed (``trim_blocks``, ``lstrip_blocks``: a ``{% for %}`` line leaves no blank line).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator
from typing import Any, Final, cast

from jinja2 import StrictUndefined, Undefined
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from dspex_jobs.errors import TemplateRenderError
from dspex_jobs.templates.filters import check_printf, safe_filters, safe_tests
from dspex_jobs.templates.limits import MAX_INT_BITS, MAX_RANGE_ITEMS, check_int, current_budget

__all__ = ["CONCAT_FILTER", "LOOP_FILTER", "PromptSandbox", "bounded_range", "sandbox"]

LOOP_FILTER: Final = "_dspex_loop"
"""Wraps every ``{% for %}`` iterable: counts iterations against the render's budget."""

CONCAT_FILTER: Final = "_dspex_concat"
"""Replaces ``~``: joins its operands only if the result fits the render's limit."""

LOOP_ATTRIBUTES: Final = frozenset(
    {
        "index",
        "index0",
        "revindex",
        "revindex0",
        "first",
        "last",
        "length",
        "depth",
        "depth0",
        "previtem",
        "nextitem",
        "cycle",
        "changed",
    }
)
"""What a template may read from ``loop``."""

_LOOP_METHODS: Final = frozenset({"cycle", "changed"})


def bounded_range(*args: int) -> range:
    """``range()`` for templates: at most :data:`MAX_RANGE_ITEMS` numbers.

    Raises:
        TemplateRenderError: The range is longer.
    """
    numbers = range(*args)
    try:
        size = len(numbers)
    except OverflowError:
        size = MAX_RANGE_ITEMS + 1
    if size > MAX_RANGE_ITEMS:
        raise TemplateRenderError(
            f"range() of more than {MAX_RANGE_ITEMS} numbers is not allowed",
            limit="range",
            max_items=MAX_RANGE_ITEMS,
        )
    return numbers


def _loop(iterable: Iterable[Any]) -> Iterator[Any]:
    budget = current_budget()
    for item in iterable:
        budget.iterate()
        yield item


def _concat(items: list[Any]) -> str:
    budget = current_budget()
    parts = [str(item) for item in items]
    size = sum(map(len, parts))
    if size > budget.max_chars:
        raise budget.too_large(size, "the result of ~")
    return "".join(parts)


class PromptSandbox(ImmutableSandboxedEnvironment):
    """The sandbox for prompt templates; build it with :func:`sandbox` (one per process)."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self) -> None:
        super().__init__(
            autoescape=False,
            undefined=StrictUndefined,
            extensions=(),
            trim_blocks=True,
            lstrip_blocks=True,
            cache_size=0,
            auto_reload=False,
        )
        self.globals.clear()
        self.globals["range"] = bounded_range
        self.filters = {**safe_filters(), LOOP_FILTER: _loop, CONCAT_FILTER: _concat}
        self.tests = cast("dict[str, Any]", safe_tests())

    def getattr(self, obj: Any, attribute: str) -> Any:
        """``obj.attribute``: a mapping's key, a ``loop`` variable or a group's field."""
        if isinstance(obj, dict):
            return obj[attribute] if attribute in obj else self.undefined(obj=obj, name=attribute)
        if isinstance(obj, Undefined):
            return obj
        if isinstance(obj, LoopContext) and attribute in LOOP_ATTRIBUTES:
            return getattr(obj, attribute)
        if isinstance(obj, tuple) and attribute in getattr(type(obj), "_fields", ()):
            return getattr(obj, attribute)  # groupby's (grouper, list) named tuples
        raise SecurityError(
            f"a template cannot read {attribute!r} from a value of type {type(obj).__name__}: only "
            "mappings have fields (use filters to transform strings and lists)"
        )

    def getitem(self, obj: Any, argument: Any) -> Any:
        """``obj[argument]``: a mapping's key, or an integer index or slice of a sequence."""
        if isinstance(obj, dict):
            try:
                return obj[argument]
            except (KeyError, TypeError):
                return self.undefined(obj=obj, name=argument)
        if isinstance(obj, list | tuple | str | range) and type(argument) in (int, slice):
            try:
                return obj[argument]
            except IndexError:
                return self.undefined(obj=obj, name=argument)
        if isinstance(argument, str):
            return self.getattr(obj, argument)
        if isinstance(obj, Undefined):
            return obj
        raise SecurityError(f"a {type(obj).__name__} value cannot be indexed by {argument!r}")

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        """Only ``loop`` variables (what Jinja's own helpers may ask about)."""
        return isinstance(obj, LoopContext) and attr in LOOP_ATTRIBUTES

    def is_safe_callable(self, obj: Any) -> bool:
        """``range`` and ``loop.cycle``/``loop.changed``, nothing else."""
        if obj is bounded_range:
            return True
        return (
            inspect.ismethod(obj)
            and isinstance(obj.__self__, LoopContext)
            and (obj.__name__ in _LOOP_METHODS)
        )

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """Call ``__obj`` if it is one of the allowed callables."""
        if not __self.is_safe_callable(__obj):
            name = getattr(__obj, "__name__", None)
            what = repr(name) if isinstance(name, str) else f"a {type(__obj).__name__} value"
            raise SecurityError(f"a template cannot call {what}: only range() and loop helpers")
        return __context.call(__obj, *args, **kwargs)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        """``*``, ``**``, ``+``, ``%``, refused before they could build something too large."""
        budget = current_budget()
        if operator == "*":
            _check_repeat(left, right, budget.max_chars)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "%" and isinstance(left, str):
            check_printf(left)
        result = self.binop_table[operator](left, right)
        return budget.check_size(check_int(result), f"the result of {operator}")


def _check_repeat(left: Any, right: Any, max_chars: int) -> None:
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > MAX_INT_BITS + 1:
            raise TemplateRenderError(
                f"{left} * {right} would be over {MAX_INT_BITS} bits", limit="int_bits"
            )
        return
    sequence, count = (left, right) if isinstance(right, int) else (right, left)
    if isinstance(sequence, str | list | tuple) and isinstance(count, int):
        size = len(sequence) * count
        if size > max_chars:
            raise current_budget().too_large(size, "the result of *")


def _check_power(base: Any, exponent: Any) -> None:
    if (
        type(base) is int
        and type(exponent) is int
        and exponent > 0
        and abs(base) > 1
        and (abs(base).bit_length() - 1) * exponent > MAX_INT_BITS
    ):
        raise TemplateRenderError(
            f"{base} ** {exponent} would be over {MAX_INT_BITS} bits", limit="int_bits"
        )


_sandbox: PromptSandbox | None = None


def sandbox() -> PromptSandbox:
    """The process-wide sandbox (built on first use; it holds no per-template state)."""
    global _sandbox
    if _sandbox is None:
        _sandbox = PromptSandbox()
    return _sandbox
