"""Build ``dspy.LM`` clients from settings and per-job options, once per process.

An LM is created lazily in the process that uses it (after any fork) and reused by every job
with the same options: a new client per job would open a new connection per job.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import dspy

from dspex_jobs.jobs import LMOptions
from dspex_jobs.settings import Settings

__all__ = ["LMFactory"]


class LMFactory:
    """Caches one ``dspy.LM`` per distinct set of per-job overrides (an LRU of
    ``max_entries``: jobs that vary their options do not grow the worker)."""

    def __init__(self, settings: Settings, max_entries: int = 32) -> None:
        self.settings = settings
        self.max_entries = max_entries
        self._lms: OrderedDict[tuple[tuple[str, Any], ...], dspy.LM] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, options: LMOptions | None = None) -> dspy.LM:
        """The LM for a job's options (the worker's default LM when none are set)."""
        overrides = options.overrides() if options else {}
        key = tuple(sorted(overrides.items()))
        with self._lock:
            lm = self._lms.get(key)
            if lm is None:
                while len(self._lms) >= self.max_entries:
                    self._lms.popitem(last=False)
                lm = self._lms[key] = self._build(overrides)
            else:
                self._lms.move_to_end(key)
        return lm

    def __len__(self) -> int:
        return len(self._lms)

    def _build(self, overrides: dict[str, Any]) -> dspy.LM:
        s = self.settings
        kwargs: dict[str, Any] = {
            "cache": s.lm_cache,
            "num_retries": s.lm_num_retries,
            "timeout": s.lm_timeout_s,
        }
        if s.lm_api_base:
            kwargs["api_base"] = s.lm_api_base
        api_key = s.lm_api_key_value()
        if api_key:
            kwargs["api_key"] = api_key
        elif s.lm_api_base:
            # OpenAI-compatible local servers need some key; the provider's own env var
            # (OPENAI_API_KEY, ...) still wins when no api_base is given.
            kwargs["api_key"] = "local"
        kwargs.update(overrides)
        model = kwargs.pop("model", None) or s.lm
        return dspy.LM(model, **kwargs)
