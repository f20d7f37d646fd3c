"""DSPy modules built from a job's signature, cached per process.

``dspy.Signature(text)`` costs about 800 µs and building ``Predict`` from the class about
2 µs, so a worker builds each (kind, signature, instructions) once and reuses it. The cache
is a bounded LRU: a worker that sees many distinct signatures does not grow without limit.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import dspy

from dspex_jobs.errors import UnknownJobKind
from dspex_jobs.jobs import JobKind
from dspex_jobs.signature import Signature
from dspex_jobs.telemetry.lm import cache_lookup

__all__ = ["ModuleCache"]

_BUILDERS = {
    JobKind.PREDICT: dspy.Predict,
    JobKind.CHAIN_OF_THOUGHT: dspy.ChainOfThought,
}


class ModuleCache:
    """A bounded LRU of built DSPy modules."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._modules: OrderedDict[tuple[JobKind, str, str | None], dspy.Module] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, kind: JobKind, signature: str, instructions: str | None) -> dspy.Module:
        """The module for a job, built on first use."""
        key = (kind, signature, instructions)
        with self._lock:
            module = self._modules.get(key)
            if module is not None:
                self._modules.move_to_end(key)
                self.hits += 1
                cache_lookup("module", hit=True)
                return module
        self.misses += 1
        cache_lookup("module", hit=False)
        module = self._build(kind, signature, instructions)
        with self._lock:
            self._modules[key] = module
            while len(self._modules) > self.max_entries:
                self._modules.popitem(last=False)
        return module

    def __len__(self) -> int:
        return len(self._modules)

    @staticmethod
    def _build(kind: JobKind, signature: str, instructions: str | None) -> dspy.Module:
        builder = _BUILDERS.get(kind)
        if builder is None:
            raise UnknownJobKind(f"this worker cannot run {kind.value!r} jobs", kind=kind.value)
        return builder(Signature.parse(signature, instructions=instructions).to_dspy())
