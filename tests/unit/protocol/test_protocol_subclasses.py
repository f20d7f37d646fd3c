"""Subclasses of the types a codec carries travel as their plain base type.

The case that matters: Celery's canvas objects (``Signature``, ``group``, ``chord``,
``chain``) are ``dict`` subclasses, and ``group.__len__`` counts tasks, not keys. msgpack's
packer used to trust ``len()`` for a map's size, so a group was written as a map of the wrong
size: a two-task group failed to decode ("extra data") and a ten-task group decoded into
the wrong value without any error.
"""

from __future__ import annotations

import collections
import enum
from typing import Any, NamedTuple

import numpy as np
import pytest
from celery import Celery, chain, chord, group
from celery.canvas import Signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kombu.utils.json import dumps as kombu_dumps
from kombu.utils.json import loads as kombu_loads
from test_protocol_roundtrip import CODECS, same

from dspex_jobs.protocol import Codec, EncodeOptions, decode, encode, inspect_frame


class Counted(dict[Any, Any]):
    """A dict whose ``len()`` is not its number of keys (as ``celery.canvas.group``)."""

    def __len__(self) -> int:
        return 7


class Tagged(list[Any]):
    """A list subclass."""


class Pair(NamedTuple):
    left: Any
    right: Any


class Name(str):
    """A str subclass."""

    __slots__ = ()


class Color(enum.StrEnum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Ratio(float):
    """A float subclass."""


class Blob(bytes):
    """A bytes subclass."""


def plain(value: Any) -> Any:
    """What a value made of subclasses comes back as: the same, of exact base types."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in dict.items(value)}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, bytes):
        return bytes(value)
    return value


def _counted(d: dict[str, Any]) -> Counted:
    return Counted(d)


leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.text(max_size=8),
    st.floats(allow_nan=False),
    st.binary(max_size=8),
    st.sampled_from([Color.RED, Level.HIGH]),
    st.floats(allow_nan=False).map(Ratio),
    st.binary(max_size=8).map(Blob),
    st.text(max_size=8).map(Name),
)
subclassed = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.dictionaries(st.text(max_size=5), children, max_size=9).map(_counted),
        st.dictionaries(st.text(max_size=5), children, max_size=4).map(collections.OrderedDict),
        st.lists(children, max_size=4).map(Tagged),
        st.tuples(children, children).map(lambda t: Pair(*t)),
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=5), children, max_size=4),
    ),
    max_leaves=16,
)


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=subclassed, tail=st.integers(0, 9))
def test_subclasses_round_trip_as_their_plain_base_type(codec: str, value: Any, tail: int) -> None:
    # A value after the subclass catches a map of the wrong size swallowing what follows
    message = [value, {"after": tail}]
    back = decode(encode(message, EncodeOptions(codec=codec)))  # type: ignore[arg-type]
    assert same(back, plain(message)), (message, back)


@pytest.fixture(scope="module")
def app() -> Celery:
    return Celery("canvas", set_as_current=False)


def canvases(app: Celery) -> dict[str, Signature]:
    def sig(name: str, *args: Any) -> Signature:
        return app.signature(name, args=args, immutable=True, queue="general")

    two = group(sig("t.a", 1), sig("t.a", 2), app=app)
    ten = group([sig("t.a", i) for i in range(10)], app=app)
    return {
        "group of two": two,
        "group of ten": ten,
        "chord": chord([sig("t.a", i) for i in range(9)], sig("t.sum"), app=app),
        "chain with a group": chain(sig("t.a", 0), ten, sig("t.sum"), app=app),
        "chord of chains": chord([chain(sig("t.a", 1), sig("t.b")), two], sig("t.merge"), app=app),
    }


@pytest.mark.parametrize("codec", CODECS)
def test_celery_canvases_come_back_as_kombu_json_gives_them(app: Celery, codec: str) -> None:
    for name, canvas in canvases(app).items():
        # Given a Celery body whose embed carries the canvas, as a chord header task's does
        body = (
            (1, "x"),
            {"k": canvas},
            {"callbacks": [canvas], "errbacks": None, "chain": [canvas], "chord": canvas},
        )
        back = decode(encode(body, EncodeOptions(codec=codec)))  # type: ignore[arg-type]
        # Expect exactly what the standard kombu JSON path gives back
        assert back == kombu_loads(kombu_dumps(body)), name
        rebuilt = Signature.from_dict(back[2]["chord"], app=app)
        assert rebuilt.subtask_type == canvas.subtask_type, name
        assert len(rebuilt) == len(canvas), name


def test_a_group_used_to_be_packed_as_a_map_of_its_task_count(app: Celery) -> None:
    # The bug this guards against, shown with msgpack's packer as we used to call it
    import msgpack

    for name in ("group of two", "group of ten"):
        group_ = canvases(app)[name]
        assert len(group_) != len(dict.keys(group_)) == 6
        standard = kombu_loads(kombu_dumps([group_, "after"]))
        try:
            old = msgpack.unpackb(
                msgpack.packb([group_, "after"], default=list), strict_map_key=False
            )
        except ValueError:  # ExtraData, or "incomplete input"
            old = None
        assert old != standard
        ours = encode([group_, "after"])
        assert inspect_frame(ours).codec is Codec.MSGPACK
        assert decode(ours) == standard
