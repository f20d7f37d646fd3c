"""The neural workload: embeddings and vector search on a local model, micro-batched.

Producers use :meth:`Client.embed <dspex_jobs.client.Client.embed>` and
:meth:`Client.index <dspex_jobs.client.Client.index>`; what they get back is defined here
(:class:`Embeddings`, :class:`VectorIndex`, :class:`SearchHit`, :class:`IndexInfo`,
:class:`AddResult`). Importing this package imports neither numpy nor torch.

Layout:

- producer side (light): :mod:`.api` (embed, VectorIndex), :mod:`.limits` (what a job may
  carry), :mod:`.vectors` (float32 vectors on the wire), :mod:`.records` (results),
  :mod:`.index_store` (indexes in Redis);
- worker side (numpy, torch): :mod:`.service` (runs the jobs), :mod:`.batcher`
  (micro-batching), :mod:`.model` (loading the model), :mod:`.device` (CPU or CUDA),
  :mod:`.search` (exact cosine over indexes held in memory);
- for DSPy and the router: :mod:`.operations` (the ``search`` operation) and
  :mod:`.retrieval` (a DSPy retriever and ``dspy.Embedder`` backed by the queue).
"""

from dspex_jobs.neural.api import VectorIndex
from dspex_jobs.neural.limits import NeuralLimits
from dspex_jobs.neural.records import AddResult, IndexInfo, SearchHit
from dspex_jobs.neural.vectors import Embeddings

__all__ = ["AddResult", "Embeddings", "IndexInfo", "NeuralLimits", "SearchHit", "VectorIndex"]
