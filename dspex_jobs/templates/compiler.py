"""From template source to a checked, bounded Jinja template.

Three passes over Jinja's syntax tree, between parsing and code generation:

1. **Refuse** constructs a prompt template has no use for and that would let it escape the
   render's limits: macros and call blocks (recursion), recursive loops, ``{% include %}``,
   ``{% import %}`` and ``{% extends %}`` (a template is one self-contained source), and
   ``{% set x %}...{% endset %}`` / ``{% filter %}`` blocks (they build text in a buffer the
   output limit never sees).
2. **Find the variables** the template reads, each with the position of its first use, so an
   unknown one is reported at its line and column.
3. **Route** every ``{% for %}`` iterable through the loop-budget filter and every ``~`` through
   the bounded concatenation filter (see :mod:`.sandbox`).
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

from jinja2 import TemplateSyntaxError, meta, nodes
from jinja2.environment import Template as JinjaTemplate
from jinja2.visitor import NodeTransformer

from dspex_jobs.errors import TemplateError
from dspex_jobs.templates.limits import MAX_SOURCE_CHARS
from dspex_jobs.templates.locate import (
    Position,
    name_position,
    pointer,
    syntax_error_position,
    token_position,
)
from dspex_jobs.templates.sandbox import CONCAT_FILTER, LOOP_FILTER, sandbox

__all__ = ["Compiled", "compile_source"]

_REFUSED: Final[dict[type[nodes.Node], tuple[str, str]]] = {
    nodes.Macro: ("macro", "macros are not allowed in prompt templates"),
    nodes.CallBlock: ("call", "call blocks are not allowed in prompt templates"),
    nodes.Include: ("include", "a prompt template is one source: include is not allowed"),
    nodes.Import: ("import", "a prompt template is one source: import is not allowed"),
    nodes.FromImport: ("from", "a prompt template is one source: import is not allowed"),
    nodes.Extends: ("extends", "a prompt template is one source: extends is not allowed"),
    nodes.AssignBlock: (
        "set",
        "{% set name %}...{% endset %} blocks are not allowed; use {% set name = ... %}",
    ),
    nodes.FilterBlock: (
        "filter",
        "{% filter %} blocks are not allowed; apply the filter to an expression",
    ),
}


_UNCLOSED: Final = re.compile(r"innermost block that needs to be closed is '(\w+)'")


class Compiled(NamedTuple):
    """A compiled template and what validation needs to know about it."""

    template: JinjaTemplate
    variables: dict[str, Position]
    """Every variable the template reads, with the position of its first use."""


def compile_source(source: str) -> Compiled:
    """Parse, check, bound and compile ``source``.

    Raises:
        TemplateError: A syntax error, a refused construct, an unknown filter or test, or a
            source too long or nested too deeply; with its line and column.
    """
    if len(source) > MAX_SOURCE_CHARS:
        raise TemplateError(
            f"template is {len(source)} characters long, over the limit of {MAX_SOURCE_CHARS}",
            size=len(source),
            limit=MAX_SOURCE_CHARS,
        )
    env = sandbox()
    try:
        tree = env.parse(source)
        _refuse(source, tree)
        variables = _variables(source, tree)
        _Bounder().visit(tree)
        code = env.compile(tree, filename="<template>")
    except TemplateSyntaxError as exc:
        where = syntax_error_position(source, exc.lineno, exc.message or "")
        reason = _friendlier(exc.message or "syntax error")
        raise TemplateError(
            f"{reason}{pointer(source, where)}",
            line=where.line,
            column=where.column,
            reason=reason,
        ) from None
    except (RecursionError, MemoryError, SyntaxError) as exc:  # nesting beyond Python's limits
        raise TemplateError(
            f"template nests too deeply to compile ({type(exc).__name__}: {exc})",
            reason="too deeply nested",
        ) from None
    # Plain-dict globals (Jinja's default is a ChainMap, slow to copy on every render).
    return Compiled(env.template_class.from_code(env, code, dict(env.globals)), variables)


def _refuse(source: str, tree: nodes.Template) -> None:
    refused: tuple[type[nodes.Node], ...] = (*_REFUSED, nodes.For)
    for node in tree.find_all(refused):
        if isinstance(node, nodes.For):
            if not node.recursive:
                continue
            keyword, reason = "recursive", "recursive loops are not allowed in prompt templates"
        else:
            keyword, reason = _REFUSED[type(node)]
        where = token_position(source, node.lineno, keyword)
        raise TemplateError(
            f"{reason}{pointer(source, where)}",
            line=where.line,
            column=where.column,
            reason=reason,
        )


def _variables(source: str, tree: nodes.Template) -> dict[str, Position]:
    globals_ = set(sandbox().globals)
    names = meta.find_undeclared_variables(tree) - globals_
    positions: dict[str, Position] = {}
    for node in tree.find_all(nodes.Name):
        if node.ctx == "load" and node.name in names and node.name not in positions:
            positions[node.name] = name_position(source, node.lineno, node.name)
    return dict(sorted(positions.items(), key=lambda item: item[1]))


class _Bounder(NodeTransformer):
    """Puts loops and ``~`` under the render's budget (see the module docstring)."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _filter(node.iter, LOOP_FILTER)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _filter(nodes.List(node.nodes, lineno=node.lineno), CONCAT_FILTER)


def _filter(node: nodes.Node, name: str) -> nodes.Filter:
    wrapped = nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)
    wrapped.set_environment(sandbox())
    return wrapped


def _friendlier(message: str) -> str:
    """Jinja's message, reworded where it names the wrong place or hides the cause."""
    unclosed = _UNCLOSED.search(message)
    if message.startswith("Unexpected end of template") and unclosed:
        expected = message.split("looking for the following tags: ", 1)[-1].split(".", 1)[0]
        return f"unclosed {{% {unclosed.group(1)} %}} block: the template ends before {expected}"
    if message.startswith("No filter named"):
        return f"{message} (see docs/routing_and_templates.md for the filters templates may use)"
    return message
