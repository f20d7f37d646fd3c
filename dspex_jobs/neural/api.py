"""What producers call: :func:`embed_texts` (``client.embed``) and :class:`VectorIndex`.

Work that needs the model (embedding, adding, searching) is a job on the ``neural`` queue,
checked before it is enqueued (:mod:`dspex_jobs.neural.limits`), so a bad request raises a
typed error and nothing reaches Redis. Work that needs no model (``info``, ``delete``,
``drop``) goes straight to Redis: it is one atomic script, and every worker sees its effect
through the index's version.

Example:
    >>> docs = client.index("docs")                                         # doctest: +SKIP
    >>> docs.add(["Paris is the capital of France.", "Rust is a systems language."],
    ...          ids=["paris", "rust"], metadata=[{"topic": "geo"}, {"topic": "code"}])
    >>> docs.search("Which city is France's capital?", k=1)[0].id
    'paris'
    >>> client.embed(["hello", "world"]).as_numpy().shape
    (2, 384)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from dspex_jobs.errors import BrokerUnavailable, IndexNotFound
from dspex_jobs.jobs import JobKind
from dspex_jobs.keys import Keys
from dspex_jobs.neural.index_store import IndexStore
from dspex_jobs.neural.limits import check_ids, check_index_name
from dspex_jobs.neural.records import AddResult, IndexInfo, SearchHit
from dspex_jobs.neural.vectors import Embeddings

if TYPE_CHECKING:
    from dspex_jobs.client import Client

__all__ = ["DEFAULT_TIMEOUT_S", "VectorIndex", "embed_texts", "hits_from_outputs"]

DEFAULT_TIMEOUT_S = 120.0
"""How long the blocking calls wait for their job (the first job of a worker loads the model)."""


def embed_texts(
    client: Client,
    texts: Sequence[str],
    *,
    normalize: bool = False,
    timeout_s: float | None = DEFAULT_TIMEOUT_S,
) -> Embeddings:
    """Embed ``texts`` on a neural worker and wait for the vectors.

    Args:
        client: The client to submit through.
        texts: The texts, at most ``DSPEX_NEURAL_MAX_TEXTS``, each at most
            ``DSPEX_NEURAL_MAX_TEXT_CHARS`` characters.
        normalize: Scale every vector to unit length.
        timeout_s: Seconds to wait; ``None`` waits as long as it takes.

    Raises:
        NeuralInputError: ``texts`` is empty, not a list of strings, or too long a list.
        TextTooLong: A text is over the length limit.
        JobTimeout: No result within ``timeout_s``.
    """
    handle = client.submit(JobKind.EMBED, inputs={"texts": _as_list(texts), "normalize": normalize})
    return Embeddings.from_outputs(handle.result(timeout=timeout_s).outputs)


def hits_from_outputs(outputs: Mapping[str, Any] | None) -> list[list[SearchHit]]:
    """The hits, per query, of an ``index_search`` job's outputs."""
    return [
        [SearchHit.from_dict(hit) for hit in hits] for hits in (outputs or {}).get("results", [])
    ]


class VectorIndex:
    """A named vector index in Redis, shared by every neural worker: ``client.index("docs")``.

    The index is created by its first :meth:`add`; until then :meth:`search`, :meth:`info`
    and :meth:`delete` raise :class:`~dspex_jobs.errors.IndexNotFound`.

    Args:
        client: The client whose neural workers embed and search.
        name: Letters, digits, ``_ . -`` (at most 128).
        redis_client: The client's Redis connection (for info, delete and drop).

    Raises:
        NeuralInputError: ``name`` is not a valid index name.
    """

    def __init__(self, client: Client, name: str, redis_client: redis.Redis) -> None:
        self.name = check_index_name(name)
        self._client = client
        self._store = IndexStore(
            redis_client,
            Keys(client.settings.key_prefix),
            max_docs=client.settings.neural_index_max_docs,
        )

    def add(
        self,
        documents: Sequence[str],
        *,
        ids: Sequence[str] | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
    ) -> AddResult:
        """Embed and store documents; a document whose id exists is replaced.

        Args:
            documents: The texts (limits as :func:`embed_texts`).
            ids: One unique id per document; fresh ones are made when omitted (see the
                result's ``ids``).
            metadata: One JSON object (or ``None``) per document, returned with its hits.
            timeout_s: Seconds to wait for the job.

        Raises:
            NeuralInputError: Bad documents, ids or metadata (nothing was enqueued).
            IndexFull: The new documents would pass ``DSPEX_NEURAL_INDEX_MAX_DOCS``.
            IndexMismatch: The index was built by another model.
        """
        inputs: dict[str, Any] = {"index": self.name, "documents": _as_list(documents)}
        if ids is not None:
            inputs["ids"] = _as_list(ids)
        if metadata is not None:
            inputs["metadata"] = _as_list(metadata)
        handle = self._client.submit(JobKind.INDEX_ADD, inputs=inputs)
        return AddResult.from_dict(dict(handle.result(timeout=timeout_s).outputs or {}))

    def search(
        self, query: str, k: int = 5, *, timeout_s: float | None = DEFAULT_TIMEOUT_S
    ) -> list[SearchHit]:
        """The ``k`` documents closest to ``query`` (exact cosine), best first.

        Raises:
            NeuralInputError: ``query`` is not a string, or ``k`` is out of range.
            IndexNotFound: There is no such index.
        """
        return self.search_many([query], k, timeout_s=timeout_s)[0]

    def search_many(
        self,
        queries: Sequence[str],
        k: int = 5,
        *,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
    ) -> list[list[SearchHit]]:
        """:meth:`search` for several queries in one job (their embeddings share a batch)."""
        if not self.exists():  # fail fast, nothing enqueued
            raise IndexNotFound(
                f"no vector index named {self.name!r}: an index is created by its first add",
                index=self.name,
            )
        handle = self._client.submit(
            JobKind.INDEX_SEARCH, inputs={"index": self.name, "queries": _as_list(queries), "k": k}
        )
        return hits_from_outputs(handle.result(timeout=timeout_s).outputs)

    def delete(self, ids: Sequence[str]) -> int:
        """Remove documents by id (unknown ids are ignored); returns how many were removed.

        Raises:
            IndexNotFound: There is no such index.
        """
        listed = check_ids(_as_list(ids), len(ids)) or []
        with _redis_errors(self.name):
            if not listed:
                self._store.info(self.name)  # an unknown index is still an error
                return 0
            return self._store.delete(self.name, listed)

    def info(self) -> IndexInfo:
        """Its size, model, version and limit.

        Raises:
            IndexNotFound: There is no such index.
        """
        with _redis_errors(self.name):
            return self._store.info(self.name)

    def exists(self) -> bool:
        """Whether the index exists."""
        with _redis_errors(self.name):
            return self._store.exists(self.name)

    def drop(self) -> bool:
        """Delete the whole index; ``False`` if there was none."""
        with _redis_errors(self.name):
            return self._store.drop(self.name)

    def __repr__(self) -> str:
        return f"<VectorIndex {self.name}>"


@contextmanager
def _redis_errors(index: str) -> Iterator[None]:
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, ConnectionError) as exc:
        raise BrokerUnavailable(f"cannot reach Redis for index {index!r}: {exc}") from exc


def _as_list(values: Any) -> Any:
    """Tuples and other sequences as lists; strings and non-sequences as they are (the checks
    then name the mistake)."""
    if isinstance(values, str | bytes | Mapping) or not isinstance(values, Sequence):
        return values
    return list(values)
