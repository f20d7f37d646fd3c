"""DSPy implementations of the built-in operations. They run in a worker: DSPy is imported
inside each function, never when this module is imported.

* ``predict`` and ``chain_of_thought``: build (once per process, cached) ``dspy.Predict`` or
  ``dspy.ChainOfThought`` from the signature text and run it under the LM DSPy is configured
  with (the worker runtime configures it; ``dspy.context(lm=...)`` overrides it per job);
* ``metric.exact_match`` and ``metric.token_f1``: DSPy's own ``EM`` and ``F1``, the reference
  the native metrics are checked against.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, Final

from dspex_jobs.signature import Signature

__all__ = ["chain_of_thought", "exact_match", "predict", "token_f1"]

MODULE_CACHE_SIZE: Final = 256
"""DSPy modules kept per process, by (module, signature, instructions)."""


def predict(
    signature: str, inputs: Mapping[str, Any], *, instructions: str | None = None
) -> dict[str, Any]:
    """Run ``dspy.Predict(signature)`` on ``inputs``; returns the outputs, JSON-able."""
    return _run("Predict", signature, inputs, instructions)


def chain_of_thought(
    signature: str, inputs: Mapping[str, Any], *, instructions: str | None = None
) -> dict[str, Any]:
    """Run ``dspy.ChainOfThought(signature)``; the outputs include ``reasoning``."""
    return _run("ChainOfThought", signature, inputs, instructions)


def exact_match(prediction: str, answers: str | Sequence[str]) -> float:
    """``dspy.evaluate.metrics.EM`` as a float."""
    from dspy.evaluate.metrics import EM

    return float(EM(prediction, [answers] if isinstance(answers, str) else list(answers)))


def token_f1(prediction: str, answers: str | Sequence[str]) -> float:
    """``dspy.evaluate.metrics.F1``."""
    from dspy.evaluate.metrics import F1

    return float(F1(prediction, [answers] if isinstance(answers, str) else list(answers)))


def _run(
    module: str, signature: str, inputs: Mapping[str, Any], instructions: str | None
) -> dict[str, Any]:
    from pydantic_core import to_jsonable_python

    prediction = _module(module, signature, instructions)(**inputs)
    return dict(to_jsonable_python(prediction.toDict(), fallback=str))


@functools.lru_cache(maxsize=MODULE_CACHE_SIZE)
def _module(module: str, signature: str, instructions: str | None) -> Any:
    import dspy

    compiled = Signature.parse(signature, instructions=instructions).to_dspy()
    return getattr(dspy, module)(compiled)
