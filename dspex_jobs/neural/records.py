"""What index operations return: hits, index facts, the outcome of an add.

Plain frozen dataclasses with ``from_dict``/``to_dict``, so the worker writes them as JSON job
outputs and the producer reads them back without numpy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["AddResult", "IndexInfo", "SearchHit"]


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One document found by a search.

    Attributes:
        id: The document's id.
        score: Cosine similarity to the query, from -1 to 1 (higher is closer).
        document: The document's text.
        metadata: The metadata stored with it (empty when it had none).
    """

    id: str
    score: float
    document: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchHit:
        """Read the JSON form."""
        return cls(
            str(data["id"]),
            float(data["score"]),
            str(data["document"]),
            dict(data.get("metadata") or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class IndexInfo:
    """Facts about one vector index.

    Attributes:
        name: The index's name.
        count: Documents in it.
        dim: Values per vector.
        model: The embedding model its vectors come from.
        version: Bumped by every change; workers reload their copy when it moves.
        created_at: When its first document was added (epoch seconds).
        updated_at: Its last change (epoch seconds).
        max_docs: The size limit it is held to (``DSPEX_NEURAL_INDEX_MAX_DOCS``).
    """

    name: str
    count: int
    dim: int
    model: str
    version: int
    created_at: float
    updated_at: float
    max_docs: int

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class AddResult:
    """What an add did.

    Attributes:
        index: The index's name.
        ids: The documents' ids, in the order given (generated ones included).
        added: Documents that were new.
        replaced: Documents whose id existed: their text, vector and metadata were replaced.
        count: Documents in the index afterwards.
        version: The index's version afterwards.
    """

    index: str
    ids: list[str]
    added: int
    replaced: int
    count: int
    version: int

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AddResult:
        """Read the JSON form."""
        return cls(
            str(data["index"]),
            [str(i) for i in data["ids"]],
            int(data["added"]),
            int(data["replaced"]),
            int(data["count"]),
            int(data["version"]),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return asdict(self)
