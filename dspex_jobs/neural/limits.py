"""What an embedding or index job may carry, checked on both sides of the queue.

The producer checks a neural job before it is enqueued (:meth:`Client.submit
<dspex_jobs.client.Client.submit>` calls :func:`check_neural_inputs`), so a bad one raises
at once and nothing reaches Redis. The worker checks it again, with its own limits, because a
message on the queue may come from anywhere: a worker never trusts the wire.

The inputs of each kind, after checking (unknown keys are refused):

``embed``
    ``texts`` (non-empty list of strings), ``normalize`` (bool, default false).
``index_add``
    ``index`` (a name), ``documents`` (non-empty list of strings), ``ids`` (unique strings,
    one per document; filled in by the producer when absent, so a redelivered job rewrites the
    same documents instead of adding copies), ``metadata`` (one JSON object or ``None`` per
    document, or absent).
``index_search``
    ``index``, ``queries`` (non-empty list of strings), ``k`` (1 to :data:`MAX_K`).

Nothing here imports numpy or torch: producers import this module.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from dspex_jobs.errors import NeuralInputError, TextTooLong
from dspex_jobs.jobs import JobKind
from dspex_jobs.settings import Settings

__all__ = [
    "INDEX_NAME_PATTERN",
    "MAX_ID_CHARS",
    "MAX_K",
    "MAX_METADATA_BYTES",
    "NeuralLimits",
    "check_ids",
    "check_index_name",
    "check_k",
    "check_metadata",
    "check_neural_inputs",
    "check_neural_job",
    "check_texts",
]

MAX_K: Final = 1000
"""Most hits one search returns per query."""

MAX_ID_CHARS: Final = 256
"""Longest document id."""

MAX_METADATA_BYTES: Final = 16_384
"""Largest metadata object of one document, encoded as JSON."""

INDEX_NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")
"""Index names: letters, digits, ``_ . -``, at most 128, no ``:`` (names become Redis keys)."""

_FIELDS: Final = {
    JobKind.EMBED: ({"texts"}, {"normalize"}),
    JobKind.INDEX_ADD: ({"index", "documents"}, {"ids", "metadata"}),
    JobKind.INDEX_SEARCH: ({"index", "queries"}, {"k"}),
}
"""Per kind: (required input names, optional input names)."""


@dataclass(frozen=True, slots=True)
class NeuralLimits:
    """The size limits a neural job is held to.

    Attributes:
        max_texts: Most texts (documents, queries) in one job.
        max_text_chars: Longest single text, in characters.
    """

    max_texts: int = 4096
    max_text_chars: int = 8192

    @classmethod
    def from_settings(cls, settings: Settings) -> NeuralLimits:
        """The limits ``DSPEX_NEURAL_MAX_TEXTS`` and ``DSPEX_NEURAL_MAX_TEXT_CHARS`` set."""
        return cls(settings.neural_max_texts, settings.neural_max_text_chars)


def check_neural_job(
    kind: JobKind, signature: str | None, inputs: Mapping[str, Any], settings: Settings
) -> dict[str, Any]:
    """The producer's check of a neural job (what :meth:`Client.submit` calls).

    Raises:
        NeuralInputError: A signature was given (neural jobs take texts), or the inputs are
            wrong (see :func:`check_neural_inputs`).
    """
    if signature:
        raise NeuralInputError(
            f"a {kind.value} job takes texts, not a signature", field="signature"
        )
    return check_neural_inputs(kind, inputs, NeuralLimits.from_settings(settings), fill_ids=True)


def check_neural_inputs(
    kind: JobKind, inputs: Mapping[str, Any], limits: NeuralLimits, *, fill_ids: bool = False
) -> dict[str, Any]:
    """Check a neural job's inputs and return them in canonical form.

    Args:
        kind: ``embed``, ``index_add`` or ``index_search``.
        inputs: The job's inputs, as given.
        limits: The limits to hold them to.
        fill_ids: Give documents without ids fresh ones (the producer does this, so that every
            delivery of the job writes the same ids).

    Raises:
        NeuralInputError: A missing, unknown or malformed input (``details["field"]``).
        TextTooLong: A text over ``limits.max_text_chars``.
    """
    required, optional = _FIELDS[kind]
    missing = sorted(required - set(inputs))
    unknown = sorted(set(inputs) - required - optional)
    if missing or unknown:
        problem = f"missing {', '.join(missing)}" if missing else f"unknown {', '.join(unknown)}"
        expected = ", ".join(sorted(required)) + "".join(f", [{n}]" for n in sorted(optional))
        raise NeuralInputError(
            f"a {kind.value} job takes {expected}: {problem}", field=(missing or unknown)[0]
        )
    if kind is JobKind.EMBED:
        normalize = inputs.get("normalize", False)
        if not isinstance(normalize, bool):
            raise NeuralInputError("normalize must be true or false", field="normalize")
        return {"texts": check_texts(inputs["texts"], limits), "normalize": normalize}
    name = check_index_name(inputs["index"])
    if kind is JobKind.INDEX_SEARCH:
        return {
            "index": name,
            "queries": check_texts(inputs["queries"], limits, field="queries"),
            "k": check_k(inputs.get("k", 5)),
        }
    documents = check_texts(inputs["documents"], limits, field="documents")
    ids = check_ids(inputs.get("ids"), len(documents))
    if ids is None and fill_ids:
        ids = [uuid.uuid4().hex for _ in documents]
    checked: dict[str, Any] = {"index": name, "documents": documents, "ids": ids}
    metadata = check_metadata(inputs.get("metadata"), len(documents))
    if metadata is not None:
        checked["metadata"] = metadata
    return checked


def check_texts(texts: Any, limits: NeuralLimits, *, field: str = "texts") -> list[str]:
    """A non-empty list of strings, each within the length limit.

    Raises:
        NeuralInputError: Not a list (a lone string included), empty, too long a list, or an
            item that is not a string.
        TextTooLong: An item longer than ``limits.max_text_chars``.
    """
    if isinstance(texts, str | bytes) or not isinstance(texts, list | tuple):
        hint = " (wrap a single text in a list)" if isinstance(texts, str) else ""
        raise NeuralInputError(
            f"{field} must be a list of strings, not a {type(texts).__name__}{hint}", field=field
        )
    if not texts:
        raise NeuralInputError(f"{field} is empty: give at least one text", field=field)
    if len(texts) > limits.max_texts:
        raise NeuralInputError(
            f"{field} has {len(texts)} texts, over the limit of {limits.max_texts} per job "
            "(DSPEX_NEURAL_MAX_TEXTS): split it into several jobs",
            field=field,
            count=len(texts),
            limit=limits.max_texts,
        )
    for position, text in enumerate(texts):
        if not isinstance(text, str):
            raise NeuralInputError(
                f"{field}[{position}] is not a string (got {type(text).__name__})",
                field=field,
                position=position,
            )
        if len(text) > limits.max_text_chars:
            raise TextTooLong(
                f"{field}[{position}] is {len(text)} characters, over the limit of "
                f"{limits.max_text_chars} (DSPEX_NEURAL_MAX_TEXT_CHARS): split it into "
                "passages",
                field=field,
                position=position,
                length=len(text),
                limit=limits.max_text_chars,
            )
    return list(texts)


def check_index_name(name: Any) -> str:
    """A valid index name (see :data:`INDEX_NAME_PATTERN`).

    Raises:
        NeuralInputError: It is not a string or does not match.
    """
    if not isinstance(name, str) or not INDEX_NAME_PATTERN.fullmatch(name):
        raise NeuralInputError(
            f"index name {name!r} is invalid: use 1-128 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit",
            field="index",
        )
    return name


def check_k(k: Any) -> int:
    """A hit count between 1 and :data:`MAX_K`.

    Raises:
        NeuralInputError: Not an int, or out of range.
    """
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise NeuralInputError(f"k must be an integer from 1 to {MAX_K}, not {k!r}", field="k")
    return k


def check_ids(ids: Any, count: int) -> list[str] | None:
    """One unique, non-empty string id per document, or ``None`` when none were given.

    Raises:
        NeuralInputError: Wrong count, a non-string, an empty or too long id, a duplicate.
    """
    if ids is None:
        return None
    if isinstance(ids, str) or not isinstance(ids, list | tuple):
        raise NeuralInputError("ids must be a list of strings, one per document", field="ids")
    if len(ids) != count:
        raise NeuralInputError(
            f"{len(ids)} ids for {count} documents: give one id per document", field="ids"
        )
    seen: set[str] = set()
    for position, doc_id in enumerate(ids):
        if not isinstance(doc_id, str) or not 0 < len(doc_id) <= MAX_ID_CHARS:
            raise NeuralInputError(
                f"ids[{position}] must be a string of 1 to {MAX_ID_CHARS} "
                f"characters, not {doc_id!r}",
                field="ids",
                position=position,
            )
        if doc_id in seen:
            raise NeuralInputError(
                f"ids[{position}] repeats the id {doc_id!r}", field="ids", position=position
            )
        seen.add(doc_id)
    return list(ids)


def check_metadata(metadata: Any, count: int) -> list[dict[str, Any] | None] | None:
    """One JSON object (or ``None``) per document, each at most :data:`MAX_METADATA_BYTES`.

    Raises:
        NeuralInputError: Wrong count, an item that is not a mapping of JSON values, or too big.
    """
    if metadata is None:
        return None
    if not isinstance(metadata, list | tuple) or len(metadata) != count:
        raise NeuralInputError(
            "metadata must be a list with one object (or None) per document", field="metadata"
        )
    checked: list[dict[str, Any] | None] = []
    for position, item in enumerate(metadata):
        if item is None:
            checked.append(None)
            continue
        if not isinstance(item, Mapping):
            raise NeuralInputError(
                f"metadata[{position}] is not an object (got {type(item).__name__})",
                field="metadata",
                position=position,
            )
        try:
            size = len(json.dumps(dict(item), separators=(",", ":")).encode())
        except (TypeError, ValueError) as exc:
            raise NeuralInputError(
                f"metadata[{position}] cannot be encoded as JSON: {exc}",
                field="metadata",
                position=position,
            ) from None
        if size > MAX_METADATA_BYTES:
            raise NeuralInputError(
                f"metadata[{position}] is {size} bytes as JSON, over the "
                f"limit of {MAX_METADATA_BYTES}",
                field="metadata",
                position=position,
            )
        checked.append(dict(item))
    return checked
