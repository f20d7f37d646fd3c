"""The compiled passes over a table's rows give exactly what the pure-Python ones give.

``dspex_jobs/protocol/_table_c.c`` replaces two Python passes (rows into columns, columns
back into row dicts) when the install could compile it. These tests hold it to the Python
passes on generated tables and near-tables, to typed errors on every argument the Python
callers never send, and to its reference counts: a C helper that leaks or frees one
reference too many fails here, not in a worker after a million jobs.
"""

from __future__ import annotations

import gc
import importlib.machinery
import shutil
import sys
import sysconfig
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dspex_jobs.protocol import _table

_table_c = _table._table_c


def _c_compiler() -> str | None:
    """The compiler setup.py would use, if this machine has it."""
    command = str(sysconfig.get_config_var("CC") or "cc").split()
    return shutil.which(command[0]) if command else None


needs_helper = pytest.mark.skipif(
    _table_c is None, reason="the C helper is not built: the pure-Python passes are in use"
)


def test_the_helper_is_built_wherever_a_compiler_is() -> None:
    # setup.py builds it wherever a C compiler and Python's headers are; a machine without a
    # compiler runs the pure-Python passes (the rest of the suite covers them)
    if _c_compiler() is None:
        pytest.skip("no C compiler on this machine: the pure-Python passes are in use")
    assert _table.COMPILED, (
        "dspex_jobs/protocol/_table_c.c was not built: reinstall with a C compiler present "
        "(`make install`, or `pip install -e .`) and read the build warning"
    )
    assert _table_c is not None and _table_c.__file__ is not None
    assert _table_c.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


KEYS = st.lists(st.text(max_size=6), min_size=1, max_size=6, unique=True)
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=4),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


class RowDict(dict[str, Any]):
    """A dict subclass: never a table row (it might compute or hide its items)."""


@st.composite
def near_tables(draw: st.DrawFn) -> tuple[list[Any], tuple[str, ...]]:
    """Rows that are a table of the first row's keys (the same key objects, in any order, or
    equal copies of them), or miss it by one row: a key missing, a key more, a subclass,
    something that is not a dict."""
    keys = draw(KEYS)
    rows: list[Any] = [
        {key: draw(VALUES) for key in draw(st.permutations(keys))}
        for _ in range(draw(st.integers(1, 12)))
    ]
    spoil = draw(
        st.sampled_from(["none", "copied", "missing", "extra", "renamed", "subclass", "list"])
    )
    at = draw(st.integers(0, len(rows) - 1))
    if spoil == "copied":  # equal keys, other str objects: found by lookup, still a table
        rows[at] = {"".join(list(key)): value for key, value in rows[at].items()}
    elif spoil == "missing":
        del rows[at][keys[-1]]
    elif spoil == "extra":
        rows[at]["\x00extra"] = 1
    elif spoil == "renamed":
        rows[at]["\x00other"] = rows[at].pop(keys[0])
    elif spoil == "subclass":
        rows[at] = RowDict(rows[at])
    elif spoil == "list":
        rows[at] = list(rows[at].items())
    return rows, tuple(keys)


@needs_helper
@settings(max_examples=300, deadline=None)
@given(near_tables())
def test_columns_are_the_python_columns(table: tuple[list[Any], tuple[str, ...]]) -> None:
    rows, keys = table
    assert _table_c is not None
    expected = _table._python_columns(rows, list(keys))
    assert _table_c.columns(rows, keys) == expected
    assert _table_c.columns(tuple(rows), keys) == expected


@needs_helper
@settings(max_examples=200, deadline=None)
@given(KEYS, st.integers(0, 12), st.data())
def test_rows_are_the_python_rows(keys: list[str], length: int, data: st.DataObject) -> None:
    assert _table_c is not None
    columns = [data.draw(st.lists(VALUES, min_size=length, max_size=length)) for _ in keys]
    built = _table_c.rows(tuple(keys), columns)
    assert built == _table.row_builder(tuple(keys))(columns)
    assert all(type(row) is dict and list(row) == keys for row in built)  # keys in order


@needs_helper
def test_the_codec_reads_back_what_it_wrote_by_the_compiled_passes() -> None:
    from dspex_jobs.protocol import decode, encode

    rows = [{"id": i, "text": f"row {i}", "score": i / 7, "ok": i % 2 == 0} for i in range(500)]
    keys = ["id", "text", "score", "ok"]
    table = _table.table_columns(rows)
    assert table is not None and table.keys == keys
    assert (table.columns, table.types) == _table._python_columns(rows, keys)
    assert table.types == [int, str, float, bool]
    back = decode(encode(rows))
    assert back == rows and [list(row) for row in back] == [keys] * 500


@needs_helper
@pytest.mark.parametrize(
    ("call", "error", "says"),
    [
        (lambda: _table_c.columns([{}], ["a"]), TypeError, "tuple"),
        (lambda: _table_c.columns([{}], ()), ValueError, "at least one key"),
        (lambda: _table_c.columns([{1: 2}], (1,)), TypeError, "key 0 is a int"),
        (lambda: _table_c.columns(5, ("a",)), TypeError, "not iterable"),
        (lambda: _table_c.columns([{"a": 1}]), TypeError, "2 arguments"),
        (lambda: _table_c.rows(("a",), ([1],)), TypeError, "columns must be a list"),
        (lambda: _table_c.rows(("a", "b"), [[1]]), ValueError, "2 keys but 1 columns"),
        (lambda: _table_c.rows(("a", "b"), [[1], [1, 2]]), ValueError, "one length"),
        (lambda: _table_c.rows(("a",), [(1,)]), ValueError, "one length"),
        (lambda: _table_c.rows(("a", 2), [[1], [2]]), TypeError, "key 1 is a int"),
    ],
)
def test_arguments_the_callers_never_send_raise_typed_errors(
    call: Any, error: type[Exception], says: str
) -> None:
    with pytest.raises(error, match=says):
        call()


class Collider:
    """A row key with the same hash as the str "a", whose comparison empties ``victim``: a
    lookup of "a" in a row holding it runs this Python code in the middle of the C loop."""

    def __init__(self, victim: list[Any]) -> None:
        self.victim = victim

    def __hash__(self) -> int:
        return hash("a")

    def __eq__(self, other: object) -> bool:
        self.victim.clear()
        return False


@needs_helper
def test_a_key_comparison_that_changes_the_rows_cannot_crash_the_pass() -> None:
    # Given rows where a row holds a key that compares against "a" by running Python code
    # that empties the very list being read
    rows: list[Any] = [{"a": 0}] * 50
    rows.insert(10, {Collider(rows): 1})
    assert _table_c is not None
    # When the C pass reads them: not a table (that row lacks "a"), and no crash
    assert _table_c.columns(rows, ("a",)) is None
    assert rows == []  # the comparison did run


@needs_helper
def test_a_comparison_that_changes_a_recorded_value_s_class_cannot_crash_the_pass() -> None:
    # Given rows whose column "a" holds instances of a class that only they refer to, and a
    # row whose other key compares equal to "b" by running Python code that moves the first
    # value to another class and collects the old one
    def instance_of_a_fresh_class() -> object:
        return type("Fresh", (), {})()

    first = instance_of_a_fresh_class()

    class Other:
        pass

    class EqualToB:
        def __hash__(self) -> int:
            return hash("b")

        def __eq__(self, other: object) -> bool:
            first.__class__ = Other
            gc.collect()
            return other == "b"

    rows: list[Any] = [{"a": first, "b": 1}, {"a": first, EqualToB(): 2}]
    assert _table_c is not None
    # When the C pass reads them (the second row's "b" is found by a lookup that runs __eq__)
    found = _table_c.columns(rows, ("a", "b"))
    # Expect a table, and the class it recorded for column "a" still alive (it held it)
    assert found is not None
    columns, types = found
    assert type(first) is Other  # the comparison did run
    assert columns == [[first, first], [1, 2]] and types[1] is int
    assert types[0] is not None and types[0].__name__ == "Fresh"


@needs_helper
def test_no_reference_is_leaked_or_lost() -> None:
    assert _table_c is not None

    class Marker:
        """A type of our own, so that only we and its instance hold references to it."""

    value = Marker()
    key = "k" + str(id(value))  # a str of our own too
    rows = [{key: value, "b": 1} for _ in range(100)]
    keys = (key, "b")
    before = sys.getrefcount(value), sys.getrefcount(key), sys.getrefcount(Marker)
    for _ in range(50):
        found = _table_c.columns(rows, keys)
        assert found is not None and found[1] == [Marker, int]
        rebuilt = _table_c.rows(keys, found[0])
        assert rebuilt == rows
        del found, rebuilt
        assert _table_c.columns([*rows, {key: value}], keys) is None  # the early exit
        with pytest.raises(ValueError):
            _table_c.rows(keys, [[value], []])  # the error exit
    gc.collect()
    assert (sys.getrefcount(value), sys.getrefcount(key), sys.getrefcount(Marker)) == before


def test_without_the_helper_the_python_passes_write_and_read_the_same_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a table, and a near-table (one row has a key more), encoded with the helper
    from dspex_jobs.protocol import decode, encode

    rows = [{"id": i, "text": f"row {i}", "score": i / 7} for i in range(300)]
    near = [*rows[:-1], {**rows[-1], "extra": 1}]
    with_helper = [encode(rows), encode(near)]
    # When the helper is missing, as on a machine without a C compiler
    monkeypatch.setattr(_table, "_table_c", None)
    # Expect the same bytes written, and the same rows read back
    assert [encode(rows), encode(near)] == with_helper
    assert decode(with_helper[0]) == rows and decode(with_helper[1]) == near
