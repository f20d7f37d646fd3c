"""An optimization request as it travels (:class:`OptimizeRequest`), checked on the producer.

Producer-side and light: the optimizers' argument names are listed here (from DSPy 3.4.1's
own signatures; ``tests/unit/optimize`` checks them against the installed DSPy) so a typo is
refused before anything is enqueued. Only JSON-able arguments travel: objects (LMs, metric
callables, proposers) are named instead (``metric="exact_match"``, ``reflection_lm=
"openai/..."``) and built by the worker.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from dspex_jobs.errors import OptimizeRequestError
from dspex_jobs.programs.spec import ProgramSpec

__all__ = ["OPTIMIZERS", "OptimizeRequest", "check_optimizer_args", "dataset_hash"]

OPTIMIZERS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    # name: (constructor arguments, compile arguments) that may travel.
    "LabeledFewShot": (frozenset({"k"}), frozenset({"sample"})),
    "BootstrapFewShot": (
        frozenset(
            {
                "metric_threshold",
                "max_bootstrapped_demos",
                "max_labeled_demos",
                "max_rounds",
                "max_errors",
            }
        ),
        frozenset(),
    ),
    "BootstrapFewShotWithRandomSearch": (
        frozenset(
            {
                "max_bootstrapped_demos",
                "max_labeled_demos",
                "max_rounds",
                "num_candidate_programs",
                "num_threads",
                "max_errors",
                "stop_at_score",
                "metric_threshold",
            }
        ),
        frozenset({"labeled_sample"}),
    ),
    "MIPROv2": (
        frozenset(
            {
                "max_bootstrapped_demos",
                "max_labeled_demos",
                "auto",
                "num_candidates",
                "num_threads",
                "max_errors",
                "seed",
                "init_temperature",
                "verbose",
                "track_stats",
                "metric_threshold",
            }
        ),
        frozenset(
            {
                "num_trials",
                "minibatch",
                "minibatch_size",
                "minibatch_full_eval_steps",
                "program_aware_proposer",
                "data_aware_proposer",
                "view_data_batch_size",
                "tip_aware_proposer",
                "fewshot_aware_proposer",
                "provide_traceback",
            }
        ),
    ),
    "GEPA": (
        frozenset(
            {
                "auto",
                "max_full_evals",
                "max_metric_calls",
                "reflection_minibatch_size",
                "candidate_selection_strategy",
                "skip_perfect_score",
                "add_format_failure_as_feedback",
                "component_selector",
                "use_merge",
                "max_merge_invocations",
                "num_threads",
                "failure_score",
                "perfect_score",
                "track_stats",
                "track_best_outputs",
                "warn_on_score_mismatch",
                "seed",
            }
        ),
        frozenset(),
    ),
}
"""The optimizers a job can run, and the arguments of each that may be sent."""

_ALIASES = {name.lower(): name for name in OPTIMIZERS} | {
    "randomsearch": "BootstrapFewShotWithRandomSearch",
    "bootstrapfewshotwithrandomsearch": "BootstrapFewShotWithRandomSearch",
    "mipro": "MIPROv2",
}


class OptimizeRequest(BaseModel):
    """Everything an optimizer worker needs, as plain JSON.

    Attributes:
        program: The name the compiled program is stored under (``qa`` -> ``qa@N``).
        spec: What the program is (its module and signature).
        optimizer: One of :data:`OPTIMIZERS`.
        optimizer_args: Its arguments (constructor and ``compile`` ones together).
        trainset: Rows (objects with the program's inputs and the labels).
        valset: Rows to score the result on (and for optimizers that take one).
        metric: A metric name: ``exact_match``, ``token_f1``, another registered one.
        metric_fields: The output fields the metric compares (default: the signature's
            outputs found in the rows).
        reflection_lm: GEPA's reflection LM and MIPROv2's prompt model (a ``dspy.LM``
            model string); the worker's LM when ``None``.
        promote_to: After success, promote the new version to this alias, if the score
            reaches ``min_score``.
        min_score: The least valset score (0..1) that may be promoted.
        trainset_hash, valset_hash: sha256 of the rows (recorded with the version).
        schedule: The nightly schedule entry that submitted it, if any.
        time_limit_s: Stop (failed, ``optimize_time_limit``) after this long; at most
            ``DSPEX_OPTIMIZER_TIME_LIMIT_S``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    program: str
    spec: ProgramSpec
    optimizer: str
    optimizer_args: dict[str, Any] = Field(default_factory=dict)
    trainset: list[dict[str, Any]]
    valset: list[dict[str, Any]] | None = None
    metric: str = "exact_match"
    metric_fields: tuple[str, ...] | None = None
    reflection_lm: str | None = None
    promote_to: str | None = None
    min_score: float | None = Field(None, ge=0.0, le=1.0)
    trainset_hash: str = ""
    valset_hash: str | None = None
    schedule: str | None = None
    time_limit_s: float | None = Field(None, gt=0)


def canonical_optimizer(name: str) -> str:
    """The optimizer's canonical name (case-insensitive; ``MIPRO`` means ``MIPROv2``).

    Raises:
        OptimizeRequestError: Unknown optimizer (the message suggests the closest).
    """
    found = _ALIASES.get(str(name).lower().replace("_", "").replace("-", ""))
    if found is None:
        close = difflib.get_close_matches(str(name), list(OPTIMIZERS), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise OptimizeRequestError(
            f"unknown optimizer {name!r}{hint}; expected one of {', '.join(OPTIMIZERS)}",
            field="optimizer",
        )
    return found


def check_optimizer_args(optimizer: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """Refuse arguments the optimizer does not take, or that cannot travel as JSON.

    Raises:
        OptimizeRequestError: Naming the first bad argument.
    """
    init_args, compile_args = OPTIMIZERS[optimizer]
    allowed = init_args | compile_args
    checked: dict[str, Any] = {}
    for name, value in args.items():
        if name not in allowed:
            close = difflib.get_close_matches(name, sorted(allowed), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise OptimizeRequestError(
                f"{optimizer} takes no argument {name!r} here{hint}; it accepts "
                f"{', '.join(sorted(allowed))}",
                field=f"optimizer_args.{name}",
            )
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise OptimizeRequestError(
                f"optimizer argument {name!r}: a {type(value).__name__} cannot travel as JSON",
                field=f"optimizer_args.{name}",
            ) from None
        checked[name] = value
    return checked


def dataset_hash(rows: list[dict[str, Any]]) -> str:
    """sha256 of the rows in canonical JSON: equal data, equal hash."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, separators=(",", ":"), default=str).encode())
        digest.update(b"\n")
    return digest.hexdigest()
