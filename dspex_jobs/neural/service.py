"""The neural side of a worker process: one model, one batcher, the indexes it has loaded.

:func:`run_neural_job` is what :meth:`WorkerContext.execute
<dspex_jobs.worker.WorkerContext.execute>` calls for ``embed``, ``index_add`` and
``index_search`` jobs. The first call in a process loads the model (a few seconds on a CPU)
and starts the batcher's thread; every later job, from any pool thread, shares them. A job's
inputs are checked again here, with this worker's limits: the queue is not trusted.

Outputs (JSON, as every job's):

``embed``
    the vectors as float32 bytes in base64 (:func:`~dspex_jobs.neural.vectors.encode_vectors`),
    plus ``device``;
``index_add``
    :class:`~dspex_jobs.neural.records.AddResult` as a dict;
``index_search``
    ``{"index", "version", "count", "results": [[hit, ...] per query]}``, each hit a
    :class:`~dspex_jobs.neural.records.SearchHit` dict.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from dspex_jobs.connections import process_redis
from dspex_jobs.errors import BrokerUnavailable, IndexMismatch, UnknownJobKind
from dspex_jobs.jobs import Job, JobKind
from dspex_jobs.keys import Keys
from dspex_jobs.neural.batcher import Batcher
from dspex_jobs.neural.index_store import IndexStore
from dspex_jobs.neural.limits import NeuralLimits, check_neural_inputs
from dspex_jobs.neural.model import Encoder, load_encoder
from dspex_jobs.neural.records import AddResult
from dspex_jobs.neural.search import IndexCache, normalize_rows
from dspex_jobs.neural.vectors import encode_vectors
from dspex_jobs.settings import Settings

__all__ = [
    "DEFAULT_MAX_BATCH",
    "NeuralService",
    "loaded_service",
    "neural_service",
    "run_neural_job",
]

DEFAULT_MAX_BATCH = {"cpu": 32, "cuda": 256}
"""Texts per model call when ``DSPEX_NEURAL_MAX_BATCH`` is unset, by device. On a CPU,
throughput stops growing near ``SentenceTransformer.encode``'s own default of 32; a GPU keeps
gaining well past 128."""

_REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)

_lock = threading.Lock()
_services: dict[tuple[int, int], NeuralService] = {}
"""By (pid, id(settings)): a service keeps its settings alive, so the id is not reused."""
_batchers: dict[tuple[int, int, int, float], Batcher] = {}


class NeuralService:
    """Runs neural jobs in one worker process.

    Args:
        settings: The worker's settings (model, device, batching, limits, Redis).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.limits = NeuralLimits.from_settings(settings)
        self.encoder: Encoder = load_encoder(settings.neural_model_path, settings.neural_device)
        max_batch = settings.neural_max_batch or DEFAULT_MAX_BATCH.get(self.encoder.device, 32)
        self.batcher = _batcher(self.encoder, max_batch, settings.neural_max_wait_ms)
        self.store = IndexStore(
            process_redis(settings),
            Keys(settings.key_prefix),
            max_docs=settings.neural_index_max_docs,
        )
        self.indexes = IndexCache(self.store)

    def run(self, job: Job) -> dict[str, Any]:
        """The outputs of one neural job.

        Raises:
            NeuralInputError: The inputs are wrong (as the producer would have said).
            VectorIndexError: The index is unknown, full, or built by another model.
            BrokerUnavailable: Redis could not be reached (retryable).
        """
        try:
            if job.kind is JobKind.EMBED:
                return self._embed_job(job)
            if job.kind is JobKind.INDEX_ADD:
                return self._add_job(job)
            if job.kind is JobKind.INDEX_SEARCH:
                return self._search_job(job)
        except _REDIS_DOWN as exc:
            raise BrokerUnavailable(
                f"lost Redis during {job.kind.value} job {job.id}: {exc}", job_id=job.id
            ) from exc
        raise UnknownJobKind(
            f"a neural worker cannot run {job.kind.value!r} jobs", kind=job.kind.value
        )

    def embed(self, texts: list[str], *, normalize: bool) -> Any:
        """``(len(texts), dim)`` float32 vectors, batched with the other jobs of this process."""
        vectors = self.batcher.encode(texts)
        return normalize_rows(vectors) if normalize else vectors

    def search(self, index: str, queries: list[str], k: int) -> dict[str, Any]:
        """The ``k`` nearest documents of ``index`` for each query (see the module docstring).

        Raises:
            IndexNotFound: There is no such index.
            IndexMismatch: It was built by another model.
        """
        with self.batcher.job():
            vectors = self.embed(queries, normalize=True)
        loaded = self.indexes.get(index)
        self._check_model(index, loaded.model, loaded.dim)
        return {
            "index": index,
            "version": loaded.version,
            "count": len(loaded),
            "results": loaded.search(vectors, k),
        }

    # -- jobs ------------------------------------------------------------------------------

    def _embed_job(self, job: Job) -> dict[str, Any]:
        with self.batcher.job():
            inputs = check_neural_inputs(job.kind, job.inputs, self.limits)
            vectors = self.embed(inputs["texts"], normalize=inputs["normalize"])
        outputs = encode_vectors(vectors, model=self.encoder.name, normalized=inputs["normalize"])
        outputs["device"] = self.encoder.device
        return outputs

    def _add_job(self, job: Job) -> dict[str, Any]:
        with self.batcher.job():
            inputs = check_neural_inputs(job.kind, job.inputs, self.limits)
            name, documents = inputs["index"], inputs["documents"]
            if self.store.exists(name):  # fail before the model runs, not after
                info = self.store.info(name)
                self._check_model(name, info.model, info.dim)
            vectors = self.embed(documents, normalize=True)
        # A producer always sends ids; a raw message may not: derive them from the job id,
        # so a redelivered job rewrites the same documents instead of adding copies.
        ids = inputs["ids"] or [f"{job.id}-{i}" for i in range(len(documents))]
        metadata = inputs.get("metadata") or [None] * len(documents)
        stored = self.store.add(
            name,
            ids=ids,
            vectors=[row.astype("<f4").tobytes() for row in vectors],
            documents=documents,
            metadata=[
                None if m is None else json.dumps(m, separators=(",", ":")) for m in metadata
            ],
            dim=self.encoder.dim,
            model=self.encoder.name,
        )
        return AddResult(
            name, ids, stored.added, len(ids) - stored.added, stored.count, stored.version
        ).to_dict()

    def _search_job(self, job: Job) -> dict[str, Any]:
        inputs = check_neural_inputs(job.kind, job.inputs, self.limits)
        return self.search(inputs["index"], inputs["queries"], inputs["k"])

    def _check_model(self, index: str, model: str, dim: int) -> None:
        if model != self.encoder.name or dim != self.encoder.dim:
            raise IndexMismatch(
                f"index {index!r} holds {dim}-dimension vectors of model {model!r}; this worker "
                f"embeds with {self.encoder.name!r} ({self.encoder.dim} dimensions): use "
                "another index, or a worker with the same model",
                index=index,
                model=model,
                dim=dim,
            )


def _batcher(encoder: Encoder, max_batch: int, max_wait_ms: float) -> Batcher:
    """One batcher per encoder and batching setting in this process (one model thread)."""
    key = (os.getpid(), id(encoder), max_batch, max_wait_ms)
    with _lock:
        batcher = _batchers.get(key)
        if batcher is None:
            batcher = _batchers[key] = Batcher(
                encoder.encode, max_batch=max_batch, max_wait_ms=max_wait_ms
            )
        return batcher


def neural_service(settings: Settings) -> NeuralService:
    """This process's service for ``settings``, built (and the model loaded) on first use."""
    service = loaded_service(settings)
    if service is None:
        built = NeuralService(settings)  # slow (model load): outside the lock
        with _lock:
            service = _services.setdefault((os.getpid(), id(settings)), built)
    return service


def loaded_service(settings: Settings) -> NeuralService | None:
    """This process's service for ``settings`` (the same object, or equal settings) if it
    exists already, as it does in a neural worker that has run a job."""
    pid = os.getpid()
    service = _services.get((pid, id(settings)))
    if service is not None:
        return service
    with _lock:
        return next(
            (
                found
                for (owner, _), found in _services.items()
                if owner == pid and found.settings == settings
            ),
            None,
        )


def run_neural_job(settings: Settings, job: Job) -> dict[str, Any]:
    """The outputs of an ``embed``, ``index_add`` or ``index_search`` job, run in this process."""
    return neural_service(settings).run(job)
