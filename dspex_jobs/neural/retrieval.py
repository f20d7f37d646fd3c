"""DSPy on top of the neural queue: a retriever over a vector index and a ``dspy.Embedder``.

A DSPy program on a ``general`` worker retrieves without loading any model itself: both
adapters submit jobs to the ``neural`` queue, where the model is loaded once per worker and
concurrent requests share its batches.

- :class:`IndexRetriever` answers like ``dspy.retrievers.Embeddings``: calling it with a query
  gives ``dspy.Prediction(passages=[...], indices=[...])`` (plus ``scores`` and ``ids``), so it
  drops into programs written for DSPy's own retrievers.
- :func:`queue_embedder` is a ``dspy.Embedder`` whose model is the queue, for
  ``dspy.retrievers.Embeddings(embedder=..., corpus=...)`` or any code that takes an embedder.
  It is built with ``caching=False``: DSPy caches a callable embedder's results under a key made
  from the callable's source code, so two embedders built from the same function (another
  index, another worker model) would otherwise answer from each other's cache.

This module imports DSPy; import it only where DSPy is (workers, DSPy programs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dspy

from dspex_jobs.neural.api import DEFAULT_TIMEOUT_S
from dspex_jobs.neural.limits import check_index_name, check_k
from dspex_jobs.neural.operations import default_client

if TYPE_CHECKING:
    from dspex_jobs.client import Client

__all__ = ["IndexRetriever", "queue_embedder"]


class IndexRetriever:
    """Retrieve passages from a vector index for DSPy programs.

    Args:
        index: The index's name.
        k: Passages per query by default.
        client: Submit through this client (default: one built from ``DSPEX_*`` settings).
        timeout_s: Seconds to wait for each search.

    Example:
        >>> retrieve = IndexRetriever("docs", k=3)                          # doctest: +SKIP
        >>> retrieve("Which city is France's capital?").passages[0]
        'Paris is the capital of France.'
    """

    def __init__(
        self,
        index: str,
        k: int = 5,
        *,
        client: Client | None = None,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.index = check_index_name(index)
        self.k = check_k(k)
        self.timeout_s = timeout_s
        self._client = client

    def __call__(self, query: str, k: int | None = None) -> Any:
        return self.forward(query, k)

    def forward(self, query: str, k: int | None = None) -> Any:
        """``dspy.Prediction(passages, indices, scores, ids)`` for the best ``k`` documents.

        ``indices`` are the document ids (DSPy's in-memory retriever gives corpus positions;
        an index in Redis has ids instead).
        """
        client = self._client or default_client()
        hits = client.index(self.index).search(query, k or self.k, timeout_s=self.timeout_s)
        ids = [hit.id for hit in hits]
        return dspy.Prediction(
            passages=[hit.document for hit in hits],
            indices=ids,
            ids=ids,
            scores=[hit.score for hit in hits],
            metadata=[hit.metadata for hit in hits],
        )


def queue_embedder(
    client: Client | None = None,
    *,
    normalize: bool = True,
    batch_size: int = 256,
    timeout_s: float | None = DEFAULT_TIMEOUT_S,
) -> Any:
    """A ``dspy.Embedder`` that embeds on the neural queue.

    Args:
        client: Submit through this client (default: one built from ``DSPEX_*`` settings).
        normalize: Unit-length vectors (what cosine retrieval wants).
        batch_size: Texts per job; DSPy splits longer inputs into jobs of this size.
        timeout_s: Seconds to wait for each job.

    Returns:
        ``dspy.Embedder``: ``embedder(["a", "b"])`` is a ``(2, dim)`` float32 array.
    """

    def embed_on_queue(texts: list[str]) -> Any:
        target = client or default_client()
        return target.embed(texts, normalize=normalize, timeout_s=timeout_s).as_numpy()

    return dspy.Embedder(embed_on_queue, batch_size=batch_size, caching=False)
