"""The worker's memo of pydantic adapters formats every value exactly as DSPy does."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

import pytest

pytest.importorskip("dspy")

from pydantic import BaseModel, create_model

from dspex_jobs.runtime.type_adapters import (
    MAX_TYPES,
    adapter_for,
    install_type_adapter_memo,
    serialize_for_json,
)


class Colour(enum.Enum):
    RED = "red"


class Point(BaseModel):
    x: int
    y: float


class Opaque:
    """A type pydantic has no schema for: DSPy falls back to its ``str``."""

    def __str__(self) -> str:
        return "opaque!"


VALUES: list[Any] = [
    "text",
    "",
    42,
    3.5,
    float("inf"),
    True,
    None,
    b"bytes",
    ["a", 1, None],
    ("t", 2),
    {"k": [1, 2], "n": {"deep": "yes"}},
    {1, 2},
    Colour.RED,
    dt.datetime(2026, 11, 26, 3, 25),
    Point(x=1, y=2.5),
    [Point(x=1, y=2.5), Opaque()],  # a nested value pydantic cannot serialise
    Opaque(),
]


def _dspy_original() -> Any:
    import dspy.adapters.utils as utils

    from dspex_jobs.runtime.rebind import original

    # DSPy's own function: still in place, or kept aside when the memo replaced it
    return original("dspy.adapters.utils", "serialize_for_json") or utils.serialize_for_json


def test_each_value_is_formatted_as_dspy_formats_it() -> None:
    original = _dspy_original()
    for value in VALUES:
        assert serialize_for_json(value) == original(value), value
        assert serialize_for_json(value) == original(value), value  # and from the memo


def test_one_adapter_per_type_and_a_bound() -> None:
    adapter_for.cache_clear()
    serialize_for_json("a")
    serialize_for_json("b")
    serialize_for_json(1)
    assert adapter_for.cache_info().currsize == 2
    assert adapter_for.cache_info().maxsize == MAX_TYPES
    for i in range(MAX_TYPES + 5):  # models made on the fly (as per-job models would be)
        serialize_for_json(create_model(f"M{i}", x=(int, ...))(x=i))
    assert adapter_for.cache_info().currsize == MAX_TYPES
    # A type pydantic refuses is not remembered: tried again each time, as DSPy does
    adapter_for.cache_clear()
    assert serialize_for_json(Opaque()) == "opaque!"
    assert adapter_for.cache_info().currsize == 0


def test_installed_in_every_dspy_module_that_formats_values() -> None:
    import dspy.adapters.base as base
    import dspy.adapters.json_adapter as json_adapter
    import dspy.adapters.utils as utils
    from dspy.adapters.utils import format_field_value
    from pydantic.fields import FieldInfo

    from dspex_jobs.caches import cache_sizes

    assert install_type_adapter_memo() is True
    assert install_type_adapter_memo() is True  # once per process
    for module in (utils, base, json_adapter):
        assert module.serialize_for_json is serialize_for_json
    adapter_for.cache_clear()
    # DSPy's own formatting now goes through the memo
    assert format_field_value(FieldInfo(annotation=dict), {"a": 1}) == '{"a": 1}'
    assert cache_sizes()["runtime.type_adapters"] == {"size": 1, "max": MAX_TYPES}
