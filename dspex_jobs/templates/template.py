"""The :class:`Template` class: compile once (cached), validate against a signature, render.

A job may carry a prompt template: custom instructions such as
``"Answer in {{ language }}, for a {{ audience }} reader."`` or a whole prompt format that lays
out the signature's fields. The producer compiles it, checks that every variable it reads is an
input of the job's signature (or a declared extra) and renders it with the job's inputs before
anything is enqueued; the rendered text becomes the job's instructions.

Compiling costs a millisecond or so (Jinja generates and compiles Python), rendering a few
microseconds, so compiled templates are kept in a bounded LRU keyed by the source text
(Python's string hash, with an exact comparison behind it) and the declared extras.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, final

from jinja2 import TemplateError as JinjaTemplateError
from jinja2 import UndefinedError
from jinja2.environment import Template as JinjaTemplate
from jinja2.exceptions import SecurityError

from dspex_jobs.errors import TemplateError, TemplateRenderError
from dspex_jobs.templates import limits
from dspex_jobs.templates.compiler import compile_source
from dspex_jobs.templates.limits import DEFAULT_MAX_CHARS, DEFAULT_TIME_BUDGET_S, Budget
from dspex_jobs.templates.locate import Position, pointer, token_position
from dspex_jobs.templates.values import plain_values

if TYPE_CHECKING:
    from dspex_jobs.signature import Signature

__all__ = [
    "TEMPLATE_CACHE_SIZE",
    "Template",
    "clear_template_cache",
    "render_template",
    "template_cache_info",
]

TEMPLATE_CACHE_SIZE: Final = 1024
"""How many compiled templates are kept (least recently used go first)."""


@final
class Template:
    """A compiled, sandboxed prompt template, immutable (the cache shares it). Build one with
    :meth:`compile`.

    Example::

        sig = Signature.parse("question, language -> answer")
        template = Template.compile("Answer in {{ language }}. Be brief.")
        template.validate_against(sig)            # every variable is an input of sig
        template.render({"question": "Why?", "language": "French"})
        # -> 'Answer in French. Be brief.'
    """

    __slots__ = ("_compiled", "_extras", "_positions", "_source", "_variables")

    def __init__(
        self,
        source: str,
        compiled: JinjaTemplate,
        positions: dict[str, Position],
        extras: frozenset[str],
    ) -> None:
        self._source = source
        self._extras = extras
        self._variables = frozenset(positions)
        self._compiled = compiled
        self._positions = positions

    @property
    def source(self) -> str:
        """The template text."""
        return self._source

    @property
    def variables(self) -> frozenset[str]:
        """Every variable the template reads (not those it sets, not ``range`` or ``loop``)."""
        return self._variables

    @property
    def extras(self) -> frozenset[str]:
        """Variables declared allowed besides the signature's inputs."""
        return self._extras

    @staticmethod
    def compile(source: str, *, extras: Iterable[str] = ()) -> Template:
        """Compile ``source`` (or return the cached compilation of the same source and extras).

        Args:
            source: Jinja template text (see ``docs/routing_and_templates.md`` for what it may
                use).
            extras: Variables the template may read besides the signature's inputs; their
                values are passed to :meth:`render` along with the inputs.

        Returns:
            The compiled template.

        Raises:
            TemplateError: A syntax error, an unclosed block, a refused construct (macros,
                includes, ...), an unknown filter; with its line and column.
            TypeError: ``source`` is not a string.
            ValueError: An extra is not an identifier.
        """
        if not isinstance(source, str):
            raise TypeError(f"template source must be a str, not {type(source).__name__}")
        names = extras if isinstance(extras, frozenset) else frozenset(extras)
        return _compile_cached(source, names)

    def validate_against(self, signature: Signature) -> None:
        """Check that every variable is an input field of ``signature`` or a declared extra.

        Outputs do not count: a template is rendered before the LM runs, so they have no value.

        Raises:
            TemplateError: Naming the first unknown variable (line, column, a close match if
                there is one); ``details["unknown"]`` lists all of them.
        """
        inputs = [field.name for field in signature.inputs]
        allowed = set(inputs) | self.extras
        unknown = [name for name in self._positions if name not in allowed]
        if not unknown:
            return
        name, where = unknown[0], self._positions[unknown[0]]
        outputs = {field.name for field in signature.outputs}
        if name in outputs:
            reason = (
                f"{name!r} is an output of the signature; a template is rendered before "
                f"the LM runs, so it can only use inputs ({', '.join(inputs) or 'none'})"
            )
        else:
            reason = (
                f"unknown variable {name!r}: not an input of the signature "
                f"({', '.join(inputs) or 'none'}) nor a declared extra"
            )
            close = difflib.get_close_matches(name, sorted(allowed), n=1)
            if close:
                reason += f"; did you mean {close[0]!r}?"
        raise TemplateError(
            f"{reason}{pointer(self.source, where)}",
            line=where.line,
            column=where.column,
            reason=reason,
            variable=name,
            unknown=unknown,
            allowed=sorted(allowed),
        )

    def render(
        self,
        values: Mapping[str, Any],
        *,
        max_chars: int = DEFAULT_MAX_CHARS,
        time_budget_s: float = DEFAULT_TIME_BUDGET_S,
    ) -> str:
        """Render with ``values`` (converted to plain data first: see :mod:`.values`).

        Args:
            values: The variables, usually the job's inputs (plus any extras).
            max_chars: Limit on the rendered text and on any string or list built on the way.
            time_budget_s: Wall-clock limit of this render.

        Returns:
            The rendered text.

        Raises:
            TemplateRenderError: A variable has no value, a limit was reached, or the template
                tried something the sandbox refuses; with the template line where it happened.
        """
        # One fresh dict holding the globals and the values, so the context can use it as is
        # (``shared=True``) instead of merging them again.
        data = plain_values(values, self._compiled.globals)
        budget = Budget(max_chars, time_budget_s)
        token = limits.enter(budget)
        try:
            chunks: list[str] = []
            size = 0
            output = self._compiled.root_render_func(self._compiled.new_context(data, shared=True))
            for chunk in output:
                size += len(chunk)
                if size > max_chars:
                    frame = getattr(output, "gi_frame", None)  # paused at the yield that went over
                    line = (
                        None
                        if frame is None
                        else (self._compiled.get_corresponding_lineno(frame.f_lineno))
                    )
                    raise self._render_error(budget.too_large(size, "the rendered text"), line)
                chunks.append(chunk)
            return "".join(chunks)
        except TemplateRenderError as exc:
            if exc.line is not None:  # already located
                raise
            raise self._render_error(exc) from exc
        except Exception as exc:  # any failure inside user template code is a template error
            raise self._render_error(exc) from exc
        finally:
            limits.leave(token)

    def _render_error(self, exc: Exception, line: int | None = None) -> TemplateRenderError:
        line = line or self._template_line(exc.__traceback__)
        if isinstance(exc, TemplateRenderError):
            reason, details = exc.message, dict(exc.details)
        elif isinstance(exc, JinjaTemplateError):
            reason, details = exc.message or str(exc), {}
        else:
            reason, details = f"{type(exc).__name__}: {exc}", {}
        where: Position | None = None
        if line is not None:
            where = self._position_in_line(line, exc)
        details.update(
            line=None if where is None else where.line,
            column=None if where is None else where.column,
            reason=reason,
        )
        return TemplateRenderError(f"{reason}{pointer(self.source, where)}", **details)

    def _template_line(self, tb: TracebackType | None) -> int | None:
        """The template line the failing generated code came from (the innermost frame)."""
        line: int | None = None
        while tb is not None:
            if tb.tb_frame.f_globals.get("__jinja_template__") is self._compiled:
                line = self._compiled.get_corresponding_lineno(tb.tb_lineno)
            tb = tb.tb_next
        return line

    def _position_in_line(self, line: int, exc: Exception) -> Position:
        hint = _token_hint(exc)
        return token_position(self.source, line, hint or "{{")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Template):
            return NotImplemented
        return self.source == other.source and self.extras == other.extras

    def __hash__(self) -> int:
        return hash((self.source, self.extras))

    def __repr__(self) -> str:
        shown = self.source if len(self.source) <= 60 else self.source[:57] + "..."
        return f"Template({shown!r}, variables={sorted(self.variables)})"


_QUOTED: Final = re.compile(r"'([^']+)'")
_RESULT_OF: Final = re.compile(r"the result of (\S+)")
_LIMIT_TOKENS: Final = {"range": "range", "loop_iterations": "for"}


def _token_hint(exc: Exception) -> str | None:
    """The name or operator an error message points at, to find its column."""
    message = str(getattr(exc, "message", None) or exc)
    names: list[str] = [name for name in _QUOTED.findall(message) if name.isidentifier()]
    if names:
        return names[0] if isinstance(exc, UndefinedError | SecurityError) else names[-1]
    result_of = _RESULT_OF.search(message)
    if result_of:
        return str(result_of.group(1))
    if isinstance(exc, TemplateRenderError):
        return _LIMIT_TOKENS.get(str(exc.details.get("limit")))
    return None


@functools.lru_cache(maxsize=TEMPLATE_CACHE_SIZE)
def _compile_cached(source: str, extras: frozenset[str]) -> Template:
    bad = sorted(name for name in extras if not isinstance(name, str) or not name.isidentifier())
    if bad:
        raise ValueError(f"template extras must be identifiers, not {bad!r}")
    compiled = compile_source(source)
    return Template(source, compiled.template, compiled.variables, extras)


def render_template(
    source: str,
    values: Mapping[str, Any],
    signature: Signature | None = None,
    *,
    extras: Iterable[str] = (),
    max_chars: int = DEFAULT_MAX_CHARS,
) -> str:
    """Compile (cached), validate against ``signature`` when given, and render, in one call.

    Raises:
        TemplateError: The template does not compile or reads a variable ``signature`` lacks.
        TemplateRenderError: Rendering failed (see :meth:`Template.render`).
    """
    template = Template.compile(source, extras=extras)
    if signature is not None:
        template.validate_against(signature)
    return template.render(values, max_chars=max_chars)


def clear_template_cache() -> None:
    """Forget every compiled template."""
    _compile_cached.cache_clear()


def template_cache_info() -> functools._CacheInfo:
    """Hits, misses and size of the compiled-template cache."""
    return _compile_cached.cache_info()
