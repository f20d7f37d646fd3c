"""Failure policies: what a pipeline does when one of its steps fails.

Every step has one, ``fail`` by default:

- :class:`Fail` ends the run at once; the producer's ``result()`` raises
  :class:`~dspex_jobs.errors.PipelineStepFailed` naming the step and its error, even while
  parallel branches still run.
- :class:`Skip` records the error, marks the step ``skipped`` and goes on; ``defaults`` give
  the outputs later steps should see instead (without them, a later step that needs the
  skipped step's outputs fails for want of them).
- :class:`Retry` runs the step again as a new Celery delivery (the worker slot is free while
  it waits), ``times`` more times with exponential backoff, then applies ``then`` (``fail`` by
  default). Validation errors are never retried: retrying cannot fix them.
- :class:`Fallback` runs another step in the failed step's place, in the same task, and
  writes its outputs as the failed step's own.

In documents a policy is ``on_error: fail``, ``on_error: skip``,
``on_error: {skip: {defaults: {keywords: []}}}``, ``on_error: {retry: 2, backoff_s: 0.5}`` or
``on_error: {fallback: {native: ..., ...}}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from dspex_jobs.errors import PipelineValidationError

if TYPE_CHECKING:
    from dspex_jobs.pipeline.steps import Step

__all__ = [
    "MAX_BACKOFF_S",
    "MAX_RETRIES",
    "Fail",
    "FailurePolicy",
    "Fallback",
    "Retry",
    "Skip",
    "parse_policy",
]

MAX_RETRIES: Final = 10
"""Most retries one step may ask for: a step failing more often than this is broken."""

MAX_BACKOFF_S: Final = 30.0
"""Longest wait between two attempts. A retry waits unacknowledged in a worker, and one
longer than the broker's visibility timeout would be delivered twice (DESIGN.md)."""


class FailurePolicy:
    """Base of the policies; see the module docstring."""

    kind: str = ""

    def to_dict(self) -> Any:
        """The document form (a string or a one-key mapping)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Fail(FailurePolicy):
    """End the run with :class:`~dspex_jobs.errors.PipelineStepFailed` (the default)."""

    kind = "fail"

    def to_dict(self) -> Any:
        return "fail"


@dataclass(frozen=True)
class Skip(FailurePolicy):
    """Record the error and go on; ``defaults`` stand in for the step's outputs."""

    defaults: Mapping[str, Any] = field(default_factory=dict)
    kind = "skip"

    def to_dict(self) -> Any:
        return {"skip": {"defaults": dict(self.defaults)}} if self.defaults else "skip"


@dataclass(frozen=True)
class Retry(FailurePolicy):
    """Run the step up to ``times`` more times, waiting ``backoff_s``, then twice that, ...

    Args:
        times: Retries after the first attempt (at most :data:`MAX_RETRIES`).
        backoff_s: Wait before the first retry; doubled each time, capped at
            :data:`MAX_BACKOFF_S`.
        then: What to do once retries are spent: ``Fail()`` (default), ``Skip()`` or a
            ``Fallback``.
    """

    times: int = 1
    backoff_s: float = 1.0
    then: FailurePolicy = field(default_factory=Fail)
    kind = "retry"

    def __post_init__(self) -> None:
        if not 0 < self.times <= MAX_RETRIES:
            raise PipelineValidationError(
                f"retry times must be between 1 and {MAX_RETRIES}, not {self.times}",
                field="on_error",
            )
        if self.backoff_s < 0:
            raise PipelineValidationError("retry backoff_s must not be negative", field="on_error")
        if isinstance(self.then, Retry):
            raise PipelineValidationError(
                "a retry policy cannot retry again once spent; give a larger 'times' instead",
                field="on_error",
            )

    def delay_s(self, attempt: int) -> float:
        """The wait before retry number ``attempt`` (1 for the first retry)."""
        return float(min(MAX_BACKOFF_S, self.backoff_s * 2 ** max(0, attempt - 1)))

    def to_dict(self) -> Any:
        out: dict[str, Any] = {"retry": self.times, "backoff_s": self.backoff_s}
        if not isinstance(self.then, Fail):
            out["then"] = self.then.to_dict()
        return out


@dataclass(frozen=True)
class Fallback(FailurePolicy):
    """Run ``step`` in place of the failed step; its outputs count as the failed step's."""

    step: Step
    kind = "fallback"

    def to_dict(self) -> Any:
        return {"fallback": self.step.to_dict()}


StepParser = Callable[[Any, str], "Step"]
"""Turns a step document into a step (``document.step_from_dict``); passed in to keep this
module free of the step classes."""


def parse_policy(value: Any, where: str, parse_step: StepParser | None = None) -> FailurePolicy:
    """A policy from its Python or document form.

    Args:
        value: A :class:`FailurePolicy`, ``"fail"``, ``"skip"``, or a one-key mapping
            (``{"retry": 2, "backoff_s": 0.5}``, ``{"skip": {"defaults": {...}}}``,
            ``{"fallback": <step>}``); ``None`` means ``fail``.
        where: The step, for error messages.
        parse_step: How to read a fallback step given as a mapping.

    Raises:
        PipelineValidationError: Not a policy this module knows.
    """
    if value is None:
        return Fail()
    if isinstance(value, FailurePolicy):
        return value
    if value in ("fail", "skip"):
        return Fail() if value == "fail" else Skip()
    if isinstance(value, Mapping):
        return _from_mapping(value, where, parse_step)
    raise PipelineValidationError(
        f"{where}: on_error must be 'fail', 'skip', {{retry: N, backoff_s: S}} or "
        f"{{fallback: <step>}}, not {value!r}",
        step=where,
        field="on_error",
    )


def _from_mapping(
    value: Mapping[str, Any], where: str, parse_step: StepParser | None
) -> FailurePolicy:
    keys = set(value)
    try:
        if "retry" in keys and keys <= {"retry", "backoff_s", "then"}:
            then = parse_policy(value.get("then"), where, parse_step)
            return Retry(int(value["retry"]), float(value.get("backoff_s", 1.0)), then)
        if keys == {"skip"}:
            options = value["skip"] or {}
            if not isinstance(options, Mapping) or set(options) - {"defaults"}:
                raise PipelineValidationError(f"{where}: skip takes only 'defaults'")
            return Skip(dict(options.get("defaults") or {}))
        if keys == {"fallback"}:
            inner = value["fallback"]
            if parse_step is not None and isinstance(inner, Mapping):
                return Fallback(parse_step(inner, f"{where} fallback"))
            from dspex_jobs.pipeline.steps import Step

            if isinstance(inner, Step):
                return Fallback(inner)
    except (TypeError, ValueError) as exc:
        raise PipelineValidationError(
            f"{where}: bad on_error {dict(value)!r}: {exc}", step=where, field="on_error"
        ) from None
    raise PipelineValidationError(
        f"{where}: unknown on_error {dict(value)!r}; expected one of {{retry: N, backoff_s: S, "
        "then: ...}}, {skip: {defaults: {...}}}, {fallback: <step>}",
        step=where,
        field="on_error",
    )
