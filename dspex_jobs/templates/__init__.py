"""Prompt templates: Jinja2, sandboxed, bounded, validated against a signature, cached.

A job may carry a template for its instructions (or a whole prompt format). Users write Jinja
(``{{ field }}``, ``{% for %}``, ``{% if %}``, filters) over the signature's input fields; the
producer compiles it once (:meth:`Template.compile`, cached), checks it against the signature
(:meth:`Template.validate_against`) and renders it with the inputs (:meth:`Template.render`)
before anything is enqueued. Inputs are data, never template source, and a template reaches
nothing but that data; every render is held to size, loop and time limits.

Layout: :mod:`.template` (the public class and cache), :mod:`.compiler` (parse, refuse,
bound), :mod:`.sandbox` (the Jinja environment), :mod:`.filters` (guarded filters and tests),
:mod:`.limits` (the per-render budget), :mod:`.values` (plain-data conversion) and
:mod:`.locate` (line and column of a fault).

Example::

    from dspex_jobs.templates import Template, render_template

    text = render_template(
        "Answer in {{ language }}.{% if style %} Style: {{ style }}.{% endif %}",
        {"language": "French", "style": "formal"},
        signature=Signature.parse("question, language, style -> answer"),
    )
"""

from dspex_jobs.errors import TemplateError, TemplateRenderError
from dspex_jobs.templates.limits import (
    DEFAULT_MAX_CHARS,
    DEFAULT_TIME_BUDGET_S,
    MAX_LOOP_ITERATIONS,
    MAX_RANGE_ITEMS,
    MAX_SOURCE_CHARS,
)
from dspex_jobs.templates.template import (
    TEMPLATE_CACHE_SIZE,
    Template,
    clear_template_cache,
    render_template,
    template_cache_info,
)

__all__ = [
    # Templates
    "Template",
    "render_template",
    # Errors
    "TemplateError",
    "TemplateRenderError",
    # Limits and cache
    "DEFAULT_MAX_CHARS",
    "DEFAULT_TIME_BUDGET_S",
    "MAX_LOOP_ITERATIONS",
    "MAX_RANGE_ITEMS",
    "MAX_SOURCE_CHARS",
    "TEMPLATE_CACHE_SIZE",
    "clear_template_cache",
    "template_cache_info",
]
