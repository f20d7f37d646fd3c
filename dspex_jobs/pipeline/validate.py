"""Build-time checks: every field a step reads exists by the time the step runs.

The checker walks the pipeline in order, keeping the set of fields available so far: the
pipeline's inputs, then each step's outputs. A step that reads a field nobody provided is
refused with the step's name and the field, and, where it helps, why (a later step writes it;
only one branch of a condition writes it). Parallel branches start from the same fields, cannot
see each other's outputs, and may not write one field unless the ``Parallel`` merges it.

When a pipeline does not declare its inputs, every field read before anything writes it is a
*required input*; :meth:`Pipeline.check_inputs` then refuses a run that does not give them.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from dspex_jobs.errors import PipelineValidationError
from dspex_jobs.pipeline.policy import Fallback, Retry, Skip
from dspex_jobs.pipeline.steps import LeafStep, Map, Parallel, Step, When, walk

__all__ = ["Analysis", "analyze"]


@dataclass
class Analysis:
    """What the checker learned.

    Attributes:
        required_inputs: Input field -> the first step that reads it.
        input_types: Input field -> its type text, from the first typed step reading it.
        not_flat: Step -> fields it writes under its name only (a Parallel merges them).
        merge_sources: Parallel -> field -> (rule, the steps whose values are merged).
        written_later: Required input -> a step that writes it, but after it is first read.
    """

    required_inputs: dict[str, str] = field(default_factory=dict)
    input_types: dict[str, str] = field(default_factory=dict)
    not_flat: dict[str, set[str]] = field(default_factory=dict)
    merge_sources: dict[str, dict[str, tuple[str, list[str]]]] = field(default_factory=dict)
    written_later: dict[str, str] = field(default_factory=dict)


@dataclass
class _Scope:
    fields: set[str]
    outputs: dict[str, set[str]]  # step -> what it wrote (for "step.field" sources)
    conditional: dict[str, str] = field(default_factory=dict)  # field -> the When writing it

    def copy(self) -> _Scope:
        return _Scope(set(self.fields), dict(self.outputs), dict(self.conditional))


class _Checker:
    def __init__(self, steps: Sequence[Step], declared: Sequence[str] | None) -> None:
        self.declared = None if declared is None else tuple(declared)
        self.result = Analysis()
        self.writers: dict[str, list[str]] = {}
        for step in walk(steps):
            if isinstance(step, LeafStep):
                for name in step.writes():
                    self.writers.setdefault(name, []).append(str(step.name))

    def sequence(self, steps: Iterable[Step], scope: _Scope) -> None:
        for step in steps:
            if isinstance(step, Parallel):
                self.parallel(step, scope)
            elif isinstance(step, When):
                self.when(step, scope)
            else:
                assert isinstance(step, LeafStep)
                self.leaf(step, scope)

    def leaf(self, step: LeafStep, scope: _Scope) -> None:
        name = str(step.name)
        step.check(name)
        typed = step.typed_reads()
        for argument, source in step.reads().items():
            is_item = isinstance(step, Map) and argument == step.item
            if self.need(source, name, argument, scope) and not is_item and argument in typed:
                self.result.input_types.setdefault(source, typed[argument])
        writes = set(step.writes())
        self.policy(step, writes, scope)
        scope.fields |= writes
        scope.outputs[name] = writes | set(step.extras())
        for written in writes:
            scope.conditional.pop(written, None)

    def policy(self, step: LeafStep, writes: set[str], scope: _Scope) -> None:
        policy = step.on_error.then if isinstance(step.on_error, Retry) else step.on_error
        name = str(step.name)
        if isinstance(policy, Skip) and set(policy.defaults) - writes:
            extra = sorted(set(policy.defaults) - writes)[0]
            raise PipelineValidationError(
                f"step {name!r}: skip defaults name {extra!r}, which the step does not write",
                step=name,
                field=extra,
            )
        if isinstance(policy, Fallback):
            fallback = policy.step
            if not isinstance(fallback, LeafStep) or isinstance(fallback, Map):
                raise PipelineValidationError(
                    f"step {name!r}: a fallback is a native or dspy step",
                    step=name,
                    field="on_error",
                )
            fallback.check(f"{name} fallback")
            for argument, source in fallback.reads().items():
                self.need(source, f"{name} (fallback)", argument, scope)
            missing = sorted(writes - set(fallback.writes()))
            if missing:
                raise PipelineValidationError(
                    f"step {name!r}: its fallback does not write {missing[0]!r}, which the "
                    "step writes (later steps may read it)",
                    step=name,
                    field=missing[0],
                )

    def need(self, source: str, step: str, argument: str, scope: _Scope) -> bool:
        """Check that ``source`` is available; whether it is a pipeline input."""
        head, _, tail = source.partition(".")
        if tail:
            if head in scope.outputs and tail in scope.outputs[head]:
                return False
            raise PipelineValidationError(
                f"step {step!r} reads {source!r}, but no earlier step named {head!r} "
                f"writes {tail!r}",
                step=step,
                field=source,
            )
        if source in scope.fields:
            written = any(source in outputs for outputs in scope.outputs.values())
            return self.declared is not None and source in self.declared and not written
        if (
            self.declared is None
            and source not in scope.conditional
            and source not in self.result.required_inputs
        ):
            self.result.required_inputs[source] = step
            later = [w for w in self.writers.get(source, ()) if w != step]
            if later:
                self.result.written_later[source] = later[0]
            return True
        if source in self.result.required_inputs:
            return True
        raise self.missing(source, step, argument, scope)

    def missing(
        self, source: str, step: str, argument: str, scope: _Scope
    ) -> PipelineValidationError:
        what = (
            f"input {argument!r} (from {source!r})" if argument != source else f"input {source!r}"
        )
        inputs = ", ".join(self.declared or ()) or "none"
        message = (
            f"step {step!r} needs {what}, which neither the pipeline's inputs "
            f"({inputs}) nor an earlier step provides"
        )
        if source in scope.conditional:
            message += (
                f"; it is written only in one branch of {scope.conditional[source]!r} "
                "(write it in both, or read it inside the branch)"
            )
        elif source in self.writers:
            message += f"; step {self.writers[source][0]!r} writes it, but runs later"
        else:
            close = difflib.get_close_matches(source, sorted(scope.fields), n=1)
            if close:
                message += f" (did you mean {close[0]!r}?)"
        return PipelineValidationError(message, step=step, field=source)

    def parallel(self, step: Parallel, scope: _Scope) -> None:
        name = str(step.name)
        writers: dict[str, list[str]] = {}
        branch_scopes = []
        for branch in step.branches:
            nested = [s for s in walk(branch) if isinstance(s, Parallel)]
            if nested:
                raise PipelineValidationError(
                    f"step {name!r}: a Parallel inside a Parallel ({nested[0].name!r}) would "
                    "be a nested chord; add its branches to the outer Parallel instead",
                    step=name,
                    field="parallel",
                )
            inner = scope.copy()
            self.sequence(branch, inner)
            branch_scopes.append(inner)
            last_writer: dict[str, str] = {}
            for leaf in walk(branch):
                if isinstance(leaf, LeafStep):
                    last_writer.update({f: str(leaf.name) for f in leaf.writes()})
            for written, leaf_name in last_writer.items():
                writers.setdefault(written, []).append(leaf_name)
        self.merges(step, writers)
        for inner in branch_scopes:
            scope.fields |= inner.fields
            scope.outputs.update(inner.outputs)
            scope.conditional.update(inner.conditional)

    def merges(self, step: Parallel, writers: dict[str, list[str]]) -> None:
        name = str(step.name)
        for written, leaves in writers.items():
            if len(leaves) > 1 and written not in step.merge:
                raise PipelineValidationError(
                    f"parallel branches {leaves[0]!r} and {leaves[1]!r} of {name!r} both write "
                    f"{written!r}; merge it (merge={{{written!r}: 'list'}}, or concat, unique, "
                    "first) or rename one output",
                    step=name,
                    field=written,
                )
        sources: dict[str, tuple[str, list[str]]] = {}
        for written, rule in step.merge.items():
            if written not in writers:
                raise PipelineValidationError(
                    f"step {name!r} merges {written!r}, which no branch writes",
                    step=name,
                    field=written,
                )
            sources[written] = (rule, writers[written])
            for leaf in writers[written]:
                self.result.not_flat.setdefault(leaf, set()).add(written)
        self.result.merge_sources[name] = sources

    def when(self, step: When, scope: _Scope) -> None:
        name = str(step.name)
        self.need(step.condition.source, name, step.condition.source, scope)
        before = set(scope.fields)
        then_scope, else_scope = scope.copy(), scope.copy()
        self.sequence(step.then, then_scope)
        self.sequence(step.otherwise, else_scope)
        both = (then_scope.fields & else_scope.fields) - before
        either = (then_scope.fields | else_scope.fields) - before
        scope.fields |= both
        scope.conditional.update({f: name for f in either - both})


def analyze(steps: Sequence[Step], declared_inputs: Sequence[str] | None) -> Analysis:
    """Check a named pipeline's data flow (see the module docstring).

    Raises:
        PipelineValidationError: Naming the step and the field at fault.
    """
    checker = _Checker(steps, declared_inputs)
    checker.sequence(steps, _Scope(set(declared_inputs or ()), {}))
    return checker.result
