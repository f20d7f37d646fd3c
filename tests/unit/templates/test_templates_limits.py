"""The guards keep legitimate uses working and refuse only what goes over a limit."""

from __future__ import annotations

import pytest

from dspex_jobs.errors import TemplateRenderError
from dspex_jobs.templates import MAX_RANGE_ITEMS, Template
from dspex_jobs.templates.filters import LEFT_OUT_FILTERS, check_printf, safe_filters
from dspex_jobs.templates.limits import (
    MAX_INT_BITS,
    MAX_WIDTH,
    Budget,
    check_int,
    check_width,
    current_budget,
)
from dspex_jobs.templates.locate import (
    Position,
    pointer,
    syntax_error_position,
    token_position,
    unclosed_block,
    unclosed_tag,
)
from dspex_jobs.templates.sandbox import bounded_range, sandbox


def render(source: str, max_chars: int = 1000, **values: object) -> str:
    return Template.compile(source).render(values, max_chars=max_chars)


@pytest.mark.parametrize(
    ("source", "ok"),
    [
        ("{{ 'ab' * 500 }}", True),
        ("{{ 'ab' * 501 }}", False),
        ("{{ 3 * 'ab' }}", True),
        ("{{ [1] * 1001 }}", False),
        ("{{ 2 ** 4000 > 0 }}", True),
        ("{{ 2 ** 4097 }}", False),
        ("{{ (-2) ** 5000 }}", False),
        ("{{ 1 ** 100000 }}", True),
        ("{{ 2 ** -3 }}", True),
        ("{{ (2 ** 3000) * (2 ** 1000) > 0 }}", True),
        ("{{ (2 ** 3000) * (2 ** 2000) }}", False),
        ("{{ 'a' * 400 + 'b' * 400 }}", True),
        ("{{ 'a' * 600 + 'b' * 600 }}", False),
        ("{{ 'a' * 600 ~ 'b' * 600 }}", False),
        ("{{ '%5d' % 3 }}", True),
        ("{{ '%1001d' % 3 }}", False),
        ("{{ '%.2f' % 3 }}", True),
        ("{{ 7 % 2 }}", True),
        ("{{ range(10000) | length }}", True),
        ("{{ range(10001) | length }}", False),
        ("{{ range(10 ** 30) | length }}", False),
        ("{{ 'x' | center(1000) | length }}", True),
        ("{{ 'x' | center(1001) }}", False),
        ("{{ 'x' | indent('  ') }}", True),
        ("{{ 'a\nb' | indent(999) }}", False),
        ("{{ range(5) | join(', ') }}", True),
        ("{{ range(500) | join('xxx') }}", False),
        ("{{ 'abc' | replace('b', 'xx') }}", True),
        ("{{ 'abc' | replace('', 'x' * 300) }}", False),
        ("{{ 'abc' | replace('', 'x' * 300, 1) }}", True),
        ("{{ [1, 2] | sum(start=0.5) }}", True),
        ("{{ [[1]] | sum(start=[]) }}", False),
        ("{{ {'a': 1} | tojson(indent='  ') }}", True),
        ("{{ {'a': 1} | tojson(indent=17) }}", False),
        ("{{ 'x y' | wordwrap(1, wrapstring='--') }}", True),
        ("{{ ('x' * 100) | wordwrap(1, wrapstring='-' * 20) }}", False),
        ("{{ [1, 2, 3] | batch(2) | list }}", True),
        ("{{ [1] | batch(0) | list }}", False),
        ("{{ [1, 2, 3] | slice(2) | list }}", True),
        ("{{ [1] | slice(10001) | list }}", False),
        ("{{ (range(3) | map('string')) | slice(2) | list }}", True),
        ("{{ range(3) | map('string') | join('-') }}", True),
        ("{{ ('x' * 999) | list | length }}", True),
        ("{{ ('x' * 1000) | list | join | upper }}", True),
        ("{{ (('x' * 600) | list) + (('x' * 600) | list) }}", False),
    ],
)
def test_limits_refuse_only_what_is_over_them(source: str, ok: bool) -> None:
    if ok:
        render(source)
    else:
        with pytest.raises(TemplateRenderError) as caught:
            render(source)
        assert caught.value.details.get("limit") or "sum()" in caught.value.message


def test_constant_expressions_are_not_folded_at_compile_time() -> None:
    # Jinja folds constants while compiling; a guarded operation must wait for a render budget.
    template = Template.compile("{{ 'x' * 10 ** 9 }}{{ 'a' ~ 'b' }}{{ 'x' | center(10 ** 9) }}")
    with pytest.raises(TemplateRenderError, match="the result of \\*"):
        template.render({})
    with pytest.raises(LookupError):
        current_budget()  # no render in progress


def test_loop_budget_counts_all_loops_of_one_render_together() -> None:
    template = Template.compile(
        "{% for a in range(10000) %}{% endfor %}" * 10 + "{% for a in range(1) %}{% endfor %}"
    )
    with pytest.raises(TemplateRenderError, match="more than 100000 iterations"):
        template.render({})
    Template.compile("{% for a in range(10000) %}{% endfor %}" * 10).render({})  # exactly at it


def test_budget_helpers() -> None:
    budget = Budget(max_chars=3, time_budget_s=60)
    assert budget.check_size("abc") == "abc" and budget.check_size(12345) == 12345
    with pytest.raises(TemplateRenderError, match="over the limit of 3"):
        budget.check_size([1, 2, 3, 4], "a list")
    assert check_int(2**MAX_INT_BITS - 1) == 2**MAX_INT_BITS - 1
    with pytest.raises(TemplateRenderError, match="bits"):
        check_int(2**MAX_INT_BITS)
    check_width("x" * MAX_WIDTH, "w")
    with pytest.raises(TemplateRenderError, match="over the limit"):
        check_width(MAX_WIDTH + 1, "w")
    check_printf("%(name)s %-5d %%")
    assert len(bounded_range(MAX_RANGE_ITEMS)) == MAX_RANGE_ITEMS


def test_the_filter_set_is_jinjas_minus_the_left_out_ones() -> None:
    from jinja2.filters import FILTERS

    assert set(safe_filters()) == set(FILTERS) - LEFT_OUT_FILTERS
    env = sandbox()
    assert LEFT_OUT_FILTERS.isdisjoint(env.filters)
    assert set(env.globals) == {"range"}
    assert env.autoescape is False and env.trim_blocks and env.lstrip_blocks


def test_sandbox_attribute_rules() -> None:
    env = sandbox()
    assert env.getitem({"a": 1}, "a") == 1
    assert env.getitem({"a": 1}, ["unhashable"]) is not None  # undefined, not a crash
    assert env.getitem([1, 2], 5).__class__.__name__ == "StrictUndefined"
    assert env.is_safe_attribute(object(), "index", None) is False


@pytest.mark.parametrize(
    ("source", "line", "message", "expected"),
    [
        ("ab {{ x $ }}", 1, "unexpected char '$' at 8", Position(1, 9)),
        (
            "{% for a in b %}{% for c in d %}{% endfor %}",
            1,
            "Unexpected end of template. Jinja was looking for the following tags: 'endfor'. "
            "The innermost block that needs to be closed is 'for'.",
            Position(1, 1),
        ),
        ("x", None, "something odd", Position(1, 1)),
        ("{{ a }}\n\nx", 3, "something odd", Position(3, 1)),
        ("{{ a }}", 1, "Unexpected end of template.", Position(1, 1)),
    ],
)
def test_syntax_error_positions(
    source: str, line: int | None, message: str, expected: Position
) -> None:
    assert syntax_error_position(source, line, message) == expected


def test_locate_helpers() -> None:
    assert unclosed_block("{% if a %}{% set x = 1 %}{% endif %}") is None
    assert unclosed_block("{% endfor %}{% if a %}{% endwith %}") == Position(1, 13)
    assert token_position("{{ a }}\n{{ b }}", 1, "zzz") == Position(1, 1)
    assert unclosed_block("{% if a %}\n {% with %}", "if") == Position(1, 1)
    assert unclosed_tag("{{ a }} {% b") == Position(1, 9)
    assert unclosed_tag("{{ a }}") is None
    assert pointer("abc", None) == ""
    long_line = "x" * 200 + "{{ y }}"
    shown = pointer(long_line, Position(1, 204)).splitlines()
    assert len(shown[1]) <= 82 and shown[2].index("^") - 2 == shown[1].index("y") - 2


def test_each_thread_renders_under_its_own_budget() -> None:
    from concurrent.futures import ThreadPoolExecutor

    slow = Template.compile(
        "{% for i in range(10000) %}{% for j in items|select('in', items) %}{% endfor %}"
        "{% endfor %}"
    )
    quick = Template.compile("{% for i in items %}{{ i }}{% endfor %}")

    def run_slow() -> str:
        try:
            return slow.render({"items": list(range(300))}, time_budget_s=0.01)
        except TemplateRenderError as error:
            return str(error.details["limit"])

    with ThreadPoolExecutor(4) as pool:
        slow_results = [pool.submit(run_slow) for _ in range(2)]
        quick_results = [pool.submit(quick.render, {"items": [1, 2]}) for _ in range(20)]
        assert [f.result() for f in quick_results] == ["12"] * 20
        assert [f.result() for f in slow_results] == ["time_budget_s"] * 2
