"""The injection corpus: every payload is refused with a clear error, or rendered inert.

A template is compiled, validated against the job's signature and rendered, the way a producer
does it before enqueueing. Template-side payloads come from public SSTI cheat sheets (Jinja2
``__class__``/``__mro__``/``__subclasses__`` chains, ``cycler``/``joiner``/``lipsum``/
``namespace`` ``__globals__`` escapes, ``config``/``request``/``self`` objects, ``attr`` and
``|format`` bypasses) plus resource bombs (recursion, huge loops, huge strings and integers).
Input-side payloads check that values are data: never compiled, never objects.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from markupsafe import Markup

from dspex_jobs.errors import TemplateError, TemplateRenderError
from dspex_jobs.signature import Signature
from dspex_jobs.templates import Template

SIGNATURE = Signature.parse("question: str, items: list[str], big: str -> answer")
VALUES: dict[str, Any] = {"question": "q" * 100, "items": ["a", "b", "c"], "big": "x" * 50_000}

TEMPLATE_PAYLOADS: list[tuple[str, str]] = [
    # (template, a fragment of the error it must produce)
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "cannot read '__class__'"),
    ("{{ question.__class__.__base__.__subclasses__() }}", "cannot read '__class__'"),
    ("{{ ().__class__.__bases__[0].__subclasses__() }}", "cannot read '__class__'"),
    ("{{ [].__class__ }}", "cannot read '__class__'"),
    ("{{ {}.__class__ }}", "has no attribute '__class__'"),
    ("{{ question['__class__'] }}", "cannot read '__class__'"),
    ("{{ question['\\x5f\\x5fclass\\x5f\\x5f'] }}", "cannot read '__class__'"),
    ("{{ items.__len__() }}", "cannot read '__len__'"),
    ("{{ question.format }}", "cannot read 'format'"),
    ("{{ '{0.__class__}'.format(question) }}", "cannot read 'format'"),
    ("{{ question.upper() }}", "cannot read 'upper'"),
    (
        "{% for c in ().__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
        "cannot read '__class__'",
    ),
    ("{{ cycler.__init__.__globals__.os.popen('id').read() }}", "unknown variable 'cycler'"),
    ("{{ joiner.__init__.__globals__ }}", "unknown variable 'joiner'"),
    ("{{ namespace.__init__.__globals__ }}", "unknown variable 'namespace'"),
    ("{{ lipsum.__globals__['os'].popen('id').read() }}", "unknown variable 'lipsum'"),
    ("{{ dict(a=1) }}", "unknown variable 'dict'"),
    ("{{ config.items() }}", "unknown variable 'config'"),
    ("{{ request.application.__globals__ }}", "unknown variable 'request'"),
    ("{{ self.__init__.__globals__ }}", "cannot read '__init__'"),
    ("{{ range.__globals__ }}", "cannot read '__globals__'"),
    ("{% for x in items %}{{ loop.__class__ }}{% endfor %}", "cannot read '__class__'"),
    ("{{ question|attr('__class__') }}", "No filter named 'attr'"),
    ("{{ items|map(attribute='__class__')|list }}", "cannot read '__class__'"),
    ("{{ question|pprint }}", "No filter named 'pprint'"),
    ("{{ '%s' % question.__class__ }}", "cannot read '__class__'"),
    ("{% import 'os' as os %}", "import is not allowed"),
    ("{% from 'os' import system %}", "import is not allowed"),
    ("{% include '/etc/passwd' %}", "include is not allowed"),
    ("{% extends 'base.html' %}", "extends is not allowed"),
    ("{% macro boom() %}{{ boom() }}{% endmacro %}{{ boom() }}", "macros are not allowed"),
    ("{% call range(3) %}x{% endcall %}", "call blocks are not allowed"),
    ("{% for x in items recursive %}{{ loop(items) }}{% endfor %}", "recursive loops"),
    (
        "{% set s %}{% for i in range(9999) %}{{ big }}{% endfor %}{% endset %}{{ s }}",
        "{% set name %}...{% endset %} blocks are not allowed",
    ),
    (
        "{% filter upper %}{% for i in range(9999) %}{{ big }}{% endfor %}{% endfilter %}",
        "{% filter %} blocks are not allowed",
    ),
    ("{% for i in range(100000000) %}x{% endfor %}", "range() of more than 10000"),
    (
        "{% for a in range(10000) %}{% for b in range(10000) %}{% endfor %}{% endfor %}",
        "loops ran more than 100000 iterations",
    ),
    ("{% for i in range(9999) %}{{ big }}{% endfor %}", "the rendered text would be"),
    ("{{ 'A' * 1000000000 }}", "the result of * would be 1000000000"),
    ("{{ items * 100000000 }}", "the result of * would be"),
    ("{{ 9 ** 999999 }}", "would be over 4096 bits"),
    (
        "{{ (10 ** 1000) * (10 ** 1000) * (10 ** 1000) * (10 ** 1000) * (10 ** 1000) }}",
        "over 4096 bits",
    ),
    ("{{ '%999999999d' % 1 }}", "a % format width of 999999999"),
    ("{{ '%*d' % (999999999, 1) }}", "'*' widths"),
    ("{{ '%0999999999d'|format(1) }}", "a % format width"),
    ("{{ question|center(1000000000) }}", "center width of 1000000000"),
    ("{{ ('\\n' * 90000)|indent(900) }}", "the indented text would be"),
    ("{{ range(9999)|join(big) }}", "the separators of join"),
    ("{{ question|replace('', big) }}", "the replaced text would be"),
    ("{{ big|replace('x', big, -1) }}", "the replaced text would be"),
    ("{{ items|map('attr', '__class__')|list }}", "No filter named 'attr'"),
    ("{{ items|sort(attribute='__class__') }}", "cannot read '__class__'"),
    ("{% for x in items if x.__class__ %}{% endfor %}", "cannot read '__class__'"),
    ("{% block a %}{{ super() }}{{ self.a() }}{% endblock %}", "a template cannot"),
    ("{{ items|batch(100000000, 'x')|list }}", "batch size must be"),
    ("{{ items|slice(100000000, 'x')|list }}", "slice count must be"),
    ("{{ items|tojson(indent=100000) }}", "tojson indent must be at most 16"),
    ("{{ big|wordwrap(1, wrapstring=big) }}", "the wrapped text would be"),
    ("{{ [items, items]|sum(start=[]) }}", "sum() takes numbers only"),
    (
        "{% for a in [big ~ big] %}{% for b in [a ~ a] %}{% for c in [b ~ b] %}{{ c }}"
        "{% endfor %}{% endfor %}{% endfor %}",
        "the result of ~ would be",
    ),
    ("{% set a = big + big %}{% set b = a + a %}{{ b }}", "the result of + would be"),
]


@pytest.mark.parametrize(("source", "fragment"), TEMPLATE_PAYLOADS)
def test_template_payloads_are_refused_with_a_clear_error(source: str, fragment: str) -> None:
    with pytest.raises(TemplateError) as caught:
        template = Template.compile(source)
        template.validate_against(SIGNATURE)
        template.render(VALUES)
    error = caught.value
    assert fragment in error.message, error.message
    assert error.line == 1 and error.column is not None and error.column >= 1
    assert error.retryable is False
    assert "Traceback" not in error.message


def test_the_corpus_is_large_enough() -> None:
    assert len(TEMPLATE_PAYLOADS) + len(INPUT_PAYLOADS) + len(OBJECT_VALUES) >= 20


INPUT_PAYLOADS = [
    "{{ config }}",
    "{% for x in range(10**9) %}{% endfor %}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{% include '/etc/passwd' %}",
    "{# unclosed comment",
    "{% raw %}{{ 7*7 }}{% endraw %}",
    "}}{{",
    "{{ 7*7 }}",
]


@pytest.mark.parametrize("payload", INPUT_PAYLOADS)
def test_input_values_are_data_and_render_literally(payload: str) -> None:
    template = Template.compile("Q: {{ question }} | {% for i in items %}[{{ i }}]{% endfor %}")
    rendered = template.render({"question": payload, "items": [payload]})
    assert rendered == f"Q: {payload} | [{payload}]"


class Sneaky:
    def __str__(self) -> str:  # pragma: no cover - must never be called
        raise AssertionError("a template reached a Python object")


def _self_referencing() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


OBJECT_VALUES: list[tuple[Any, str]] = [
    (Sneaky(), "is a Sneaky, which a template cannot use"),
    (os, "is a module"),
    (lambda: None, "is a function"),
    (object, "is a type"),
    ({"nested": [Sneaky()]}, "value 'question.nested[0]' is a Sneaky"),
    ({1.5j: "x"}, "mapping keys in template values must be strings"),
    (_self_referencing(), "nests deeper than 32 levels"),
]


@pytest.mark.parametrize(("value", "fragment"), OBJECT_VALUES)
def test_inputs_cannot_smuggle_python_objects(value: Any, fragment: str) -> None:
    with pytest.raises(TemplateRenderError) as caught:
        Template.compile("{{ question }}").render({"question": value})
    assert fragment in caught.value.message
    assert caught.value.details["variable"] == "question"


def test_markup_values_lose_their_markup_type() -> None:
    rendered = Template.compile("{{ question }}").render({"question": Markup("<b>hi</b>")})
    assert rendered == "<b>hi</b>" and type(rendered) is str


def test_a_huge_input_is_stopped_by_the_output_limit() -> None:
    with pytest.raises(TemplateRenderError, match="the rendered text would be"):
        Template.compile("{{ question }}").render({"question": "x" * 200_001})
