"""A memo in front of DSPy's model-metadata lookup, installed once per worker process.

Every LM call DSPy makes prices its answer (``dspy.clients.costs``) by looking the model up in
its price map (``dspy.clients.model_metadata.model_info``), twice per call. A model the map
names is one dict lookup; a model it does not name (any self-hosted model: vLLM, Ollama, the
project's local LM server) is searched for by scanning every entry's aliases, thousands of
entries, about 0.6 ms per lookup. In a ``general`` worker, where sixteen threads share one
interpreter lock, that scan was half of DSPy's CPU time per call (``cProfile`` over 300
Predict calls to the local LM server: 1.12 ms per call, 0.56 ms with this memo).

DSPy loads the map once per process and never replaces it, so the answer for a given
(provider, model, namespaces) never changes: it is remembered here, and every caller gets
its own deep copy, as from DSPy itself. Installed by :class:`~dspex_jobs.runtime.Runtime`,
so only processes that run jobs have it; if a DSPy version no longer has these names, the
memo is simply not installed.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Hashable
from typing import Any

from dspex_jobs.runtime.rebind import rebind

__all__ = ["MAX_MODELS", "install_model_info_memo", "memoized"]

MAX_MODELS = 256
"""Most distinct lookups remembered; past it, lookups go to DSPy unremembered."""

_CALLERS = ("dspy.clients.costs", "dspy.clients.capabilities")
"""The modules that imported ``model_info`` by name: the memo replaces their binding."""

_answers: dict[tuple[Hashable, ...], dict[str, Any]] = {}
"""The installed memo's answers, reported by :func:`dspex_jobs.caches.cache_sizes`."""


def memoized(
    model_info: Callable[..., dict[str, Any]],
    answers: dict[tuple[Hashable, ...], dict[str, Any]] | None = None,
) -> Callable[..., dict[str, Any]]:
    """``model_info`` with its answers remembered per (provider, model, namespaces), in
    ``answers`` (a fresh dict when not given)."""
    if answers is None:
        answers = {}

    @functools.wraps(model_info)
    def lookup(provider: Any, model: Any, *, namespaces: Any = None) -> dict[str, Any]:
        key = (provider, model, None if namespaces is None else tuple(namespaces))
        try:
            answer = answers[key]
        except KeyError:
            answer = model_info(provider, model, namespaces=namespaces)
            if len(answers) < MAX_MODELS:
                answers[key] = answer
        except TypeError:  # an unhashable argument: nothing to remember it by
            return model_info(provider, model, namespaces=namespaces)
        return copy.deepcopy(answer)

    return lookup


def install_model_info_memo() -> bool:
    """Put the memo in front of DSPy's ``model_info`` (once per process); ``True`` if it is."""
    return rebind(
        "dspy.clients.model_metadata",
        "model_info",
        lambda original: memoized(original, _answers),
        _CALLERS,
    )
