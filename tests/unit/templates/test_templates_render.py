"""Rendering: what templates can do, how values are converted, the cache, the convenience call."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import uuid
from typing import Any

import pydantic
import pytest
from jinja2.exceptions import SecurityError

from dspex_jobs.errors import TemplateError, TemplateRenderError
from dspex_jobs.signature import Signature
from dspex_jobs.templates import (
    TEMPLATE_CACHE_SIZE,
    Template,
    clear_template_cache,
    render_template,
    template_cache_info,
)
from dspex_jobs.templates.sandbox import sandbox
from dspex_jobs.templates.values import plain_value


def render(source: str, **values: Any) -> str:
    return Template.compile(source).render(values)


@pytest.mark.parametrize(
    ("source", "values", "expected"),
    [
        ("Answer in {{ language }}.", {"language": "French"}, "Answer in French."),
        (
            "{% for p in passages %}[{{ loop.index }}] {{ p }}\n{% endfor %}Q: {{ q }}",
            {"passages": ["a", "b"], "q": "why"},
            "[1] a\n[2] b\nQ: why",
        ),
        (
            "{% if style %}Style: {{ style | upper }}{% else %}plain{% endif %}",
            {"style": "terse"},
            "Style: TERSE",
        ),
        (
            "{{ doc.title }} by {{ doc['author'] }}",
            {"doc": {"title": "T", "author": "A"}},
            "T by A",
        ),
        ("{{ items | join(', ') }} ({{ items | length }})", {"items": ["x", "y"]}, "x, y (2)"),
        (
            "{{ score | round(2) }} {{ '%.1f' | format(score) }} {{ score * 2 }}",
            {"score": 0.456},
            "0.46 0.5 0.912",
        ),
        (
            "{{ name ~ '!' }} {{ 'ab' * 2 }} {{ 2 ** 10 }} {{ 7 % 3 }} {{ '%s-%s' % (1, 2) }}",
            {"name": "Ada"},
            "Ada! abab 1024 1 1-2",
        ),
        (
            "{{ text | truncate(5, leeway=0) }}|{{ text | wordcount }}|"
            "{{ text | replace('a', 'o') }}",
            {"text": "a banana split"},
            "a...|3|o bonono split",
        ),
        (
            "{% for row in rows | batch(2, '-') %}{{ row | join }};{% endfor %}",
            {"rows": ["a", "b", "c"]},
            "ab;c-;",
        ),
        (
            "{{ rows | slice(2) | list | length }} {{ rows | sum }} {{ rows | max }}",
            {"rows": [1, 2, 3]},
            "2 6 3",
        ),
        ("{{ data | tojson(indent=2) }}", {"data": {"a": [1]}}, '{\n  "a": [\n    1\n  ]\n}'),
        (
            "{{ 'x' | center(5) }}|{{ 'a\nb' | indent(2) }}|{{ 'aaa bbb' | wordwrap(3) }}",
            {},
            "  x  |a\n  b|aaa\nbbb",
        ),
        (
            "{% for k, v in d | dictsort %}{{ k }}={{ v }} {% endfor %}",
            {"d": {"b": 2, "a": 1}},
            "a=1 b=2 ",
        ),
        (
            "{% for g in people | groupby('team') %}{{ g.grouper }}:{{ g.list | length }} "
            "{% endfor %}",
            {"people": [{"team": "x"}, {"team": "x"}, {"team": "y"}]},
            "x:2 y:1 ",
        ),
        (
            "{{ people | map(attribute='name') | join(',') }}|"
            "{{ people | selectattr('age', 'gt', 30) | map(attribute='name') | first }}",
            {"people": [{"name": "a", "age": 20}, {"name": "b", "age": 40}]},
            "a,b|b",
        ),
        ("{% for i in range(3) %}{{ loop.cycle('x', 'y') }}{{ i }}{% endfor %}", {}, "x0y1x2"),
        ("{% set greeting = 'Hi ' ~ name %}{{ greeting }}", {"name": "Bo"}, "Hi Bo"),
        (
            "{{ items[0] }}{{ items[-1] }}{{ items[1:] | join }}{{ word[0] }}",
            {"items": ["a", "b", "c"], "word": "zed"},
            "acbcz",
        ),
        ("{{ missing | default('none') }} {{ maybe is defined }}", {}, "none False"),
        ("{% with x = 1 %}{{ x }}{% endwith %}{% block b %}B{% endblock %}", {}, "1B"),
        ("line\n{% if true %}\n  kept\n{% endif %}\nend", {}, "line\n  kept\nend"),
        ("{{ range(3) | list }}", {}, "[0, 1, 2]"),
        ("{{ range }}", {"range": "shadowed"}, "shadowed"),
    ],
)
def test_prompt_templates_render(source: str, values: dict[str, Any], expected: str) -> None:
    assert Template.compile(source).render(values) == expected


def test_a_missing_value_is_an_error_at_its_position() -> None:
    template = Template.compile("Hello\n  {{ name }} and {{ other }}")
    with pytest.raises(TemplateRenderError) as caught:
        template.render({"name": "x"})
    error = caught.value
    assert (error.line, error.column) == (2, 21)
    assert error.message.startswith("'other' is undefined (line 2, column 21)")
    assert error.message.endswith("\n    {{ name }} and {{ other }}\n" + " " * 22 + "^")
    assert error.details["reason"] == "'other' is undefined"


def test_undefined_values_stay_undefined_through_attributes_and_indexes() -> None:
    assert render("{{ maybe.x is defined }} {{ maybe[0] is defined }}") == "False False"
    with pytest.raises(TemplateRenderError, match="'missing' is undefined") as caught:
        render("{{ a }}\n{{ missing.x }}", a=1)
    assert (caught.value.line, caught.value.column) == (2, 4)
    with pytest.raises(TemplateRenderError, match="'missing' is undefined"):
        render("{{ missing[0] }}")


def test_errors_raised_by_python_inside_a_template_become_render_errors() -> None:
    with pytest.raises(TemplateRenderError, match="ZeroDivisionError") as caught:
        render("ok\n{{ 1 / zero }}", zero=0)
    assert caught.value.line == 2
    with pytest.raises(TemplateRenderError, match="cannot be indexed"):
        render("{{ n[0] }}", n=5)
    with pytest.raises(TemplateRenderError, match="cannot call a str value"):
        render("{{ x() }}", x="text")
    # Nothing else callable is reachable from a template, so ask the sandbox directly.
    assert not sandbox().is_safe_callable(print)
    with pytest.raises(SecurityError, match="cannot call 'print'"):
        sandbox().call(None, print)  # type: ignore[arg-type]


def test_values_are_converted_to_plain_data() -> None:
    class Color(enum.Enum):
        RED = "red"

    class Level(enum.IntEnum):
        HIGH = 3

    class Ratio(float):
        pass

    class Person(pydantic.BaseModel):
        name: str
        born: datetime.date

    @dataclasses.dataclass
    class Point:
        x: float
        y: float

    values = {
        "person": Person(name="Ada", born=datetime.date(1815, 12, 10)),
        "point": Point(1.0, 2.5),
        "color": Color.RED,
        "level": Level.HIGH,
        "tags": {"b", "a", "c"},
        "pair": ("x", 1),
        "id": uuid.UUID(int=1),
        "mixed": {1, "a"},
        "raw": b"bytes",
        "big": Ratio(2.5),
    }
    rendered = Template.compile(
        "{{ person.name }} {{ person.born }} {{ point.y }} {{ color }} {{ level + 1 }} "
        "{{ tags | join }} {{ pair[1] }} {{ id }} {{ mixed | length }} {{ raw }} {{ big }}"
    ).render(values)
    assert rendered == (
        "Ada 1815-12-10 2.5 red 4 abc 1 00000000-0000-0000-0000-000000000001 2 bytes 2.5"
    )
    assert plain_value({"k": (1, [2, {3}])}) == {"k": [1, [2, [3]]]}
    assert plain_value({1: "one", None: "none"}) == {"1": "one", "None": "none"}


@pytest.mark.parametrize(
    ("values", "message"),
    [(["not", "a", "mapping"], "must be a mapping"), ({1: "x"}, "names must be strings")],
)
def test_values_must_be_a_mapping_of_names(values: Any, message: str) -> None:
    with pytest.raises(TemplateRenderError, match=message):
        Template.compile("x").render(values)


def test_compiled_templates_are_cached_by_source_and_extras() -> None:
    clear_template_cache()
    first = Template.compile("Hi {{ name }}")
    assert Template.compile("Hi {{ name }}") is first
    assert Template.compile("Hi {{ name }}", extras=["name"]) is not first
    assert Template.compile("Hi {{ name }}", extras=frozenset({"name"})) is (
        Template.compile("Hi {{ name }}", extras=("name",))
    )
    info = template_cache_info()
    assert info.maxsize == TEMPLATE_CACHE_SIZE and info.hits >= 2 and info.currsize == 2
    clear_template_cache()
    assert template_cache_info().currsize == 0
    assert Template.compile("Hi {{ name }}") == first  # equal, though rebuilt
    assert hash(Template.compile("Hi {{ name }}")) == hash(first)
    assert first != "Hi {{ name }}"


def test_templates_describe_themselves() -> None:
    template = Template.compile("{{ b }} {{ a }} {% set c = 1 %}{{ c }}", extras=["a"])
    assert template.variables == {"a", "b"}
    assert template.extras == {"a"}
    assert repr(template) == (
        "Template('{{ b }} {{ a }} {% set c = 1 %}{{ c }}', variables=['a', 'b'])"
    )
    assert repr(Template.compile("x" * 100)).startswith("Template('xxx")
    assert "..." in repr(Template.compile("x" * 100))


def test_render_template_compiles_validates_and_renders() -> None:
    sig = Signature.parse("question, language -> answer")
    assert (
        render_template(
            "In {{ language }}: {{ question }}", {"question": "Why?", "language": "French"}, sig
        )
        == "In French: Why?"
    )
    assert render_template("{{ today }}", {"today": "Monday"}, sig, extras=["today"]) == "Monday"
    with pytest.raises(TemplateError, match="unknown variable 'today'"):
        render_template("{{ today }}", {"today": "Monday"}, sig)
    with pytest.raises(TemplateRenderError, match="over the limit of 3"):
        render_template("{{ question }}", {"question": "long"}, max_chars=3)


def test_the_rendered_size_limit_counts_every_chunk() -> None:
    template = Template.compile("{% for i in items %}{{ i }}{% endfor %}")
    assert template.render({"items": ["ab"] * 5}, max_chars=10) == "ab" * 5
    with pytest.raises(TemplateRenderError, match="would be 12 characters") as caught:
        template.render({"items": ["ab"] * 6}, max_chars=10)
    assert caught.value.details["limit"] == "max_chars" and caught.value.line == 1


def test_a_render_can_be_given_a_tighter_time_budget() -> None:
    template = Template.compile(
        "{% for i in range(10000) %}{% for j in items|select('in', items) %}{% endfor %}"
        "{% endfor %}"
    )
    with pytest.raises(TemplateRenderError, match=r"longer than its budget of 0\.001 s") as caught:
        template.render({"items": list(range(300))}, time_budget_s=0.001)
    assert caught.value.details["limit"] == "time_budget_s"


def test_compiling_rejects_non_strings_and_bad_extras() -> None:
    with pytest.raises(TypeError, match="must be a str"):
        Template.compile(b"{{ x }}")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="identifiers"):
        Template.compile("{{ x }}", extras=["not valid"])
