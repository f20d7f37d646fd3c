"""The JSON/YAML form of a pipeline, equivalent to the Python objects.

Each step is a mapping whose *type key* says what it is::

    name: qa
    inputs: [question]            # optional: checked at build time when given
    timeout_s: 60                 # optional: the whole pipeline's deadline
    steps:
      - native: signature.validate
        signature: "question: str -> answer: str"
      - parallel:
          - native: search        # other keys of a native step are its parameters
            index: docs
            k: 5
          - dspy: Predict
            signature: "question -> keywords: list[str]"
            on_error: skip
      - dspy: ChainOfThought
        signature: "question, context: list[str] -> answer"
        inputs: {context: passages}
        on_error: {retry: 2, backoff_s: 0.5}
      - when: "len(keywords) > 0"
        then:
          - dspy: Predict
            signature: "answer, keywords: list[str] -> summary"
      - map: passages
        step: {dspy: Predict, signature: "passage -> gist"}

Anything unknown (a type key, a DSPy module, an option) is refused with
:class:`~dspex_jobs.errors.PipelineValidationError` saying where (``steps[2].parallel[1]``) and
what was expected; nothing is guessed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from dspex_jobs.errors import PipelineValidationError
from dspex_jobs.pipeline.policy import parse_policy
from dspex_jobs.pipeline.steps import (
    NATIVE_KEYS,
    Dspy,
    LeafStep,
    Map,
    Native,
    Parallel,
    Step,
    When,
)

__all__ = ["PIPELINE_KEYS", "STEP_TYPES", "step_from_dict", "steps_from_list"]

STEP_TYPES: Final = ("native", "dspy", "parallel", "when", "map")
"""The type keys a step document may have (exactly one)."""

PIPELINE_KEYS: Final = frozenset({"name", "inputs", "timeout_s", "steps", "description"})
"""Keys of a pipeline document."""

_KEYS: Final = {
    "dspy": frozenset(
        {
            "dspy",
            "signature",
            "name",
            "inputs",
            "instructions",
            "lm",
            "tools",
            "max_iters",
            "n",
            "reward",
            "threshold",
            "base",
            "queue",
            "on_error",
            "timeout_s",
        }
    ),
    "map": frozenset(
        {"map", "step", "item", "name", "max_concurrency", "on_error", "timeout_s", "queue"}
    ),
    "parallel": frozenset({"parallel", "name", "merge"}),
    "when": frozenset({"when", "then", "else", "name"}),
}


def steps_from_list(data: Any, where: str) -> list[Step]:
    """Read a list of step documents.

    Raises:
        PipelineValidationError: ``data`` is not a non-empty list, or a step is wrong.
    """
    if isinstance(data, Mapping | str) or not isinstance(data, Sequence):
        raise PipelineValidationError(
            f"{where} must be a list of steps, not {type(data).__name__}", field=where
        )
    if not data:
        raise PipelineValidationError(f"{where} is empty: give at least one step", field=where)
    return [step_from_dict(item, f"{where}[{i}]") for i, item in enumerate(data)]


def step_from_dict(data: Any, where: str) -> Step:
    """Read one step document (see the module docstring).

    Raises:
        PipelineValidationError: Unknown or missing type key, unknown option, bad value.
    """
    if not isinstance(data, Mapping):
        raise PipelineValidationError(
            f"{where} must be a mapping with one of the keys {', '.join(STEP_TYPES)}, not {data!r}",
            field=where,
        )
    types = [key for key in STEP_TYPES if key in data]
    if len(types) != 1:
        found = ", ".join(sorted(map(str, data))) or "nothing"
        what = "more than one step type" if types else "no known step type"
        raise PipelineValidationError(
            f"{where} has {what}: expected exactly one of {', '.join(STEP_TYPES)} "
            f"(found keys: {found})",
            field=where,
        )
    kind = types[0]
    if kind != "native":
        unknown = sorted(set(map(str, data)) - _KEYS[kind])
        if unknown:
            raise PipelineValidationError(
                f"{where}: a {kind} step has no option {unknown[0]!r} (its options: "
                f"{', '.join(sorted(_KEYS[kind]))})",
                field=unknown[0],
            )
    try:
        return _READERS[kind](data, where)
    except PipelineValidationError as exc:
        if where in exc.message:
            raise
        raise PipelineValidationError(f"{where}: {exc.message}", **exc.details) from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise PipelineValidationError(f"{where}: {exc}", field=where) from None


def _policy(data: Mapping[str, Any], where: str) -> Any:
    return parse_policy(data.get("on_error"), where, step_from_dict)


def _native(data: Mapping[str, Any], where: str) -> Step:
    params = {k: v for k, v in data.items() if k not in NATIVE_KEYS}
    return Native(
        _text(data["native"], "native"),
        name=data.get("name"),
        inputs=data.get("inputs"),
        outputs=data.get("outputs"),
        queue=data.get("queue"),
        on_error=_policy(data, where),
        timeout_s=data.get("timeout_s"),
        params={**dict(data.get("params") or {}), **params},
    )


def _dspy(data: Mapping[str, Any], where: str) -> Step:
    options = {k: v for k, v in data.items() if k not in ("dspy", "signature", "on_error")}
    return Dspy(
        _text(data["dspy"], "dspy"), data.get("signature"), on_error=_policy(data, where), **options
    )


def _map(data: Mapping[str, Any], where: str) -> Step:
    if "step" not in data:
        raise PipelineValidationError(
            f"{where}: a map step needs 'step' (the step to map)", field="step"
        )
    inner = step_from_dict(data["step"], f"{where}.step")
    if not isinstance(inner, LeafStep) or isinstance(inner, Map):
        raise PipelineValidationError(f"{where}.step must be a native or dspy step", field="step")
    options = {k: v for k, v in data.items() if k not in ("map", "step", "on_error")}
    return Map(_text(data["map"], "map"), inner, on_error=_policy(data, where), **options)


def _parallel(data: Mapping[str, Any], where: str) -> Step:
    raw = data["parallel"]
    if not isinstance(raw, Sequence) or isinstance(raw, str) or not raw:
        raise PipelineValidationError(
            f"{where}.parallel must be a non-empty list of branches", field="parallel"
        )
    branches: list[Step | list[Step]] = []
    for i, branch in enumerate(raw):
        at = f"{where}.parallel[{i}]"
        branches.append(
            steps_from_list(branch, at) if isinstance(branch, list) else step_from_dict(branch, at)
        )
    return Parallel(branches, name=data.get("name"), merge=data.get("merge"))


def _when(data: Mapping[str, Any], where: str) -> Step:
    if "then" not in data:
        raise PipelineValidationError(f"{where}: a when step needs 'then'", field="then")
    then = steps_from_list(_as_list(data["then"]), f"{where}.then")
    otherwise = (
        steps_from_list(_as_list(data["else"]), f"{where}.else")
        if data.get("else") is not None
        else None
    )
    return When(data["when"], then, otherwise, name=data.get("name"))


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, Mapping) else value


def _text(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise PipelineValidationError(
            f"'{key}' must be a non-empty string, not {value!r}", field=key
        )
    return value


_READERS = {"native": _native, "dspy": _dspy, "map": _map, "parallel": _parallel, "when": _when}
