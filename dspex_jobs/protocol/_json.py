"""JSON bodies: the readable fallback, for any tool and any language.

Plain JSON carries ``None``, ``bool``, ``int``, ``float`` (``NaN`` and ``Infinity`` as
Python writes them), ``str``, lists and ``str``-keyed dicts. Other supported values travel
as tagged objects, ``{"__dspex__": "<type>", ...}``, which a reader turns back into the
value: ``bytes`` (base64), ``datetime``/``date`` (ISO 8601), ``UUID``, ``Decimal`` and numpy
arrays (base64 of the same raw layout MessagePack uses). A frame embedded as it is
(:class:`Encoded`) is written as the value it holds, so the JSON stays readable.

The object hook that finds tags costs a Python call per dict, so it runs only when the
frame's :data:`FLAG_JSON_TAGS` says the writer tagged something. The key ``__dspex__`` is
therefore reserved inside JSON bodies. Dict keys must be strings (JSON would turn ``1``
into ``"1"``).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from uuid import UUID

from dspex_jobs.errors import DSPexError, PayloadDecodeError, ProtocolVersionError
from dspex_jobs.protocol._arrays import is_ndarray, is_numpy_scalar, pack_ndarray, unpack_ndarray
from dspex_jobs.protocol._frame import Encoded

__all__ = ["TAG", "dumps", "loads"]

TAG = "__dspex__"
"""The key that marks a tagged value in a JSON body."""


def dumps(value: Any, embedded: Callable[[Encoded], Any]) -> tuple[bytes, bool]:
    """Encode ``value``; return the UTF-8 body and whether it holds tagged values.

    Args:
        value: What to encode.
        embedded: Decodes an :class:`Encoded` frame met inside ``value``.

    Raises:
        TypeError: A value of a type this codec does not carry.
        ValueError: A circular reference.
    """
    tagged = False

    def default(item: Any) -> Any:
        nonlocal tagged
        if isinstance(item, Encoded):
            return embedded(item)
        if is_numpy_scalar(item):
            return item.item()
        tagged = True
        if isinstance(item, bytes | bytearray | memoryview):
            return {TAG: "bytes", "b64": base64.b64encode(item).decode("ascii")}
        if is_ndarray(item):
            return {TAG: "ndarray", "b64": base64.b64encode(pack_ndarray(item)).decode("ascii")}
        if isinstance(item, dt.datetime):
            return {TAG: "datetime", "iso": item.isoformat()}
        if isinstance(item, dt.date):
            return {TAG: "date", "iso": item.isoformat()}
        if isinstance(item, UUID):
            return {TAG: "uuid", "hex": item.hex}
        if isinstance(item, Decimal):
            return {TAG: "decimal", "text": str(item)}
        raise TypeError(f"a {type(item).__name__} value cannot be encoded")

    text = json.dumps(value, default=default, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8"), tagged


def loads(body: bytes | memoryview, tagged: bool) -> Any:
    """Decode a body :func:`dumps` produced.

    Raises:
        PayloadDecodeError: Not valid UTF-8 JSON, or a bad tagged value.
        ProtocolVersionError: A tag this reader does not know.
    """
    try:
        return json.loads(bytes(body), object_hook=_untag if tagged else None)
    except DSPexError:
        raise
    except Exception as exc:  # JSONDecodeError, UnicodeDecodeError, RecursionError, bad base64
        raise PayloadDecodeError(f"corrupt JSON body: {type(exc).__name__}: {exc}") from None


def _untag(obj: dict[str, Any]) -> Any:
    kind = obj.get(TAG)
    if kind is None:
        return obj
    if kind == "bytes":
        return base64.b64decode(obj["b64"], validate=True)
    if kind == "ndarray":
        return unpack_ndarray(base64.b64decode(obj["b64"], validate=True))
    if kind == "datetime":
        return dt.datetime.fromisoformat(obj["iso"])
    if kind == "date":
        return dt.date.fromisoformat(obj["iso"])
    if kind == "uuid":
        return UUID(hex=obj["hex"])
    if kind == "decimal":
        return Decimal(obj["text"])
    raise ProtocolVersionError(
        f"JSON tag {kind!r} is unknown to this dspex-jobs; upgrade it on the workers", tag=kind
    )
