"""Validation before anything is enqueued: syntax errors, unclosed blocks, unknown variables,
refused constructs; each with its line and column."""

from __future__ import annotations

import pytest

from dspex_jobs.errors import TemplateError, ValidationError, error_from_payload
from dspex_jobs.signature import Signature
from dspex_jobs.templates import MAX_SOURCE_CHARS, Template

SIG = Signature.parse("question: str, context: list[str], language -> answer, confidence: float")


@pytest.mark.parametrize(
    ("source", "line", "column", "fragment"),
    [
        ("Hi {{ name ", 1, 4, "unexpected end of template"),
        ("intro\n{% for c in context %}\n- {{ c }}\n", 2, 1, "unclosed {% for %} block"),
        ("a\n{% if x %}\n  {% for c in context %}\n{% endif %}", 4, 4, "unknown tag 'endif'"),
        ("{% if a %}\n{% if b %}\n{% endif %}", 1, 1, "unclosed {% if %} block"),
        ("{{ a b }}", 1, 6, "got 'b'"),
        ("ok\n\n  {% frobnicate %}", 3, 6, "unknown tag 'frobnicate'"),
        ("{# never closed", 1, 1, "Missing end of comment tag"),
        ("{{ a $ b }}", 1, 6, "unexpected char '$'"),
        ("{% raw %} x", 1, 1, "Missing end of raw directive"),
        ("x\n  {{ 'abc }}", 2, 6, "unexpected char"),
        ("line1\n  {{ x | }}", 2, 10, "expected token 'name'"),
        ("{% endfor %}", 1, 4, "unknown tag 'endfor'"),
        ("{{ x | nofilter }}", 1, 8, "No filter named 'nofilter'"),
        ("{% for %}{% endfor %}", 1, 8, "Expected an expression"),
        ("{{ (((( }}", 1, 9, "unexpected '}'"),
        ("{{ a.}}", 1, 1, "expected name or number"),
        ("{{ }}", 1, 4, "Expected an expression"),
        ("{% set x %}", 1, 1, "unclosed {% set %} block"),
    ],
)
def test_syntax_errors_say_where(source: str, line: int, column: int, fragment: str) -> None:
    with pytest.raises(TemplateError) as caught:
        Template.compile(source)
    error = caught.value
    assert fragment in error.message
    assert (error.line, error.column) == (line, column), error.message
    assert error.details["line"] == line and error.details["column"] == column
    shown = error.message.splitlines()
    assert shown[-1].index("^") - 2 == column - 1  # the caret sits under the column
    assert isinstance(error, ValidationError) and error.code == "template_error"


@pytest.mark.parametrize(
    ("source", "column", "fragment"),
    [
        ("{% macro m() %}x{% endmacro %}", 4, "macros are not allowed"),
        ("  {% call m() %}x{% endcall %}", 6, "call blocks"),
        ("{% include 'x' %}", 4, "include is not allowed"),
        ("{% import 'x' as y %}", 4, "import is not allowed"),
        ("{% from 'x' import y %}", 4, "import is not allowed"),
        ("{% extends 'x' %}", 4, "extends is not allowed"),
        ("{% set x %}y{% endset %}", 4, "{% set name %}"),
        ("{% filter upper %}y{% endfilter %}", 4, "{% filter %} blocks"),
        ("{% for x in y recursive %}{% endfor %}", 15, "recursive loops"),
    ],
)
def test_refused_constructs_say_where(source: str, column: int, fragment: str) -> None:
    with pytest.raises(TemplateError) as caught:
        Template.compile(source)
    assert fragment in caught.value.message
    assert (caught.value.line, caught.value.column) == (1, column)


def test_unknown_variables_are_reported_at_their_first_use_with_a_suggestion() -> None:
    template = Template.compile("Use {{ context | join }}.\n\nAsk: {{ qestion }} {{ other }}")
    with pytest.raises(TemplateError) as caught:
        template.validate_against(SIG)
    error = caught.value
    assert (error.line, error.column) == (3, 9)
    assert error.message.startswith(
        "unknown variable 'qestion': not an input of the signature (question, context, "
        "language) nor a declared extra; did you mean 'question'?"
    )
    assert error.details["unknown"] == ["qestion", "other"]
    assert error.details["variable"] == "qestion"
    assert error.details["allowed"] == ["context", "language", "question"]


def test_output_fields_are_not_values_at_render_time() -> None:
    with pytest.raises(TemplateError, match="'answer' is an output of the signature"):
        Template.compile("Give {{ answer }}").validate_against(SIG)


def test_declared_extras_and_local_names_are_allowed() -> None:
    template = Template.compile(
        "{{ today }}: {% set n = context | length %}{{ n }} {% for c in context %}{{ c }}"
        "{{ loop.index }}{% endfor %}{{ range(2) | list }}",
        extras=["today"],
    )
    template.validate_against(SIG)  # no error
    assert template.variables == {"today", "context"}


def test_a_template_with_no_variables_fits_any_signature() -> None:
    Template.compile("Be brief.").validate_against(Signature.parse("-> answer"))
    with pytest.raises(TemplateError, match=r"\(none\)"):
        Template.compile("{{ q }}").validate_against(Signature.parse("-> answer"))


def test_names_in_strings_and_after_dots_do_not_confuse_the_column() -> None:
    template = Template.compile("{{ 'nope' ~ doc.nope }} {{ nope }}")
    with pytest.raises(TemplateError) as caught:
        template.validate_against(Signature.parse("doc: dict -> answer"))
    assert (caught.value.details["variable"], caught.value.column) == ("nope", 28)


def test_too_long_and_too_deep_sources_are_refused() -> None:
    with pytest.raises(TemplateError, match="over the limit of") as caught:
        Template.compile("x" * (MAX_SOURCE_CHARS + 1))
    assert caught.value.details["size"] == MAX_SOURCE_CHARS + 1
    with pytest.raises(TemplateError, match="nests too deeply"):
        Template.compile("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}")
    nested = "".join(f"{{% for x{i} in y %}}" for i in range(25)) + "{% endfor %}" * 25
    with pytest.raises(TemplateError, match="nests too deeply"):
        Template.compile(nested)


def test_template_errors_survive_the_result_store() -> None:
    with pytest.raises(TemplateError) as caught:
        Template.compile("{{ a b }}")
    rebuilt = error_from_payload(caught.value.to_payload())
    assert type(rebuilt) is TemplateError
    assert (rebuilt.line, rebuilt.column) == (1, 6)  # type: ignore[attr-defined]
    assert rebuilt.message == caught.value.message
