"""The :class:`Pipeline`: named, checked steps, with their document form.

Building a pipeline checks it (:mod:`.validate`): a step whose inputs nothing provides, an
unknown module or operation, parallel branches that write one field unmerged, are refused
here, before anything runs. :meth:`Pipeline.check_inputs` then checks a run's inputs, names
and types, on the producer, without importing DSPy.

Example::

    pipeline = Pipeline([
        Native("signature.validate", signature="question: str -> answer: str"),
        Parallel([
            Native("search", index="docs", k=5),
            Dspy("Predict", signature="question -> keywords: list[str]"),
        ]),
        Dspy("ChainOfThought", signature="question, context: list[str] -> answer",
             inputs={"context": "passages"}),
    ])
    handle = client.run(pipeline, question="What is DSPy?")
    handle.result(timeout=60)["answer"]
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from dspex_jobs.errors import PipelineValidationError, SignatureError
from dspex_jobs.pipeline.document import PIPELINE_KEYS, steps_from_list
from dspex_jobs.pipeline.plan import Plan, build_plan
from dspex_jobs.pipeline.steps import LeafStep, Map, Parallel, Step, When, walk
from dspex_jobs.pipeline.validate import Analysis, analyze
from dspex_jobs.signature import Signature

__all__ = ["Pipeline"]


class Pipeline:
    """A sequence of steps, checked when built.

    Args:
        steps: The steps, in order (see :mod:`dspex_jobs.pipeline.steps`).
        name: For status, events and logs.
        inputs: The fields a run gives. When omitted, they are inferred: every field read
            before any step writes it (and :meth:`check_inputs` requires them).
        timeout_s: The run's deadline: steps not started by then are not run, running ones
            are asked to stop, and ``result()`` raises ``PipelineDeadlineExceeded``.

    Raises:
        PipelineValidationError: A step is wrong or reads what nothing provides.
    """

    def __init__(
        self,
        steps: Sequence[Step],
        *,
        name: str = "pipeline",
        inputs: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> None:
        if isinstance(steps, Step):
            steps = [steps]
        if not steps:
            raise PipelineValidationError("a pipeline needs at least one step", field="steps")
        if timeout_s is not None and timeout_s <= 0:
            raise PipelineValidationError("timeout_s must be positive", field="timeout_s")
        self.name = name
        self.declared_inputs = None if inputs is None else tuple(inputs)
        self.timeout_s = timeout_s
        self.steps = _named(list(steps), _field_names(steps, self.declared_inputs))
        self.analysis: Analysis = analyze(self.steps, self.declared_inputs)
        self._plan: Plan | None = None

    # -- what it needs -----------------------------------------------------------------------

    @property
    def required_inputs(self) -> tuple[str, ...]:
        """The fields every run must give."""
        if self.declared_inputs is not None:
            return self.declared_inputs
        return tuple(self.analysis.required_inputs)

    def check_inputs(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Check a run's inputs: all required ones given, none unknown, types right.

        Returns:
            The inputs, converted to their JSON-able form (``"3"`` for an ``int`` is ``3``).

        Raises:
            PipelineValidationError: A missing or unknown input, naming the step that needs it.
            SignatureValidationError: A value of the wrong type (every such input at once).
        """
        required = self.required_inputs
        for name in required:
            if name not in inputs:
                step = self.analysis.required_inputs.get(name, "?")
                message = (
                    f"step {step!r} needs {name!r}, which this run's inputs do not "
                    f"give (given: {', '.join(sorted(inputs)) or 'none'})"
                )
                if name in self.analysis.written_later:
                    message += (
                        f"; step {self.analysis.written_later[name]!r} writes it, "
                        "but runs later: reorder the steps"
                    )
                raise PipelineValidationError(message, step=step, field=name)
        unknown = sorted(set(inputs) - set(required))
        if unknown:
            close = difflib.get_close_matches(unknown[0], required, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise PipelineValidationError(
                f"no step reads the input {unknown[0]!r}{hint}; this pipeline reads "
                f"{', '.join(required) or 'nothing'}",
                field=unknown[0],
            )
        return _typed(dict(inputs), self.analysis.input_types)

    # -- what runs -------------------------------------------------------------------------

    def plan(self) -> Plan:
        """The flattened plan workers execute (built once)."""
        if self._plan is None:
            self._plan = build_plan(self.name, self.steps, self.analysis)
        return self._plan

    def leaves(self) -> Iterator[LeafStep]:
        """Every leaf step (what becomes a task), in order."""
        return (s for s in walk(self.steps) if isinstance(s, LeafStep))

    # -- document form ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The document form (``from_dict(p.to_dict())`` builds an equal pipeline)."""
        out: dict[str, Any] = {"name": self.name, "steps": [s.to_dict() for s in self.steps]}
        if self.declared_inputs is not None:
            out["inputs"] = list(self.declared_inputs)
        if self.timeout_s is not None:
            out["timeout_s"] = self.timeout_s
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Pipeline:
        """Build from the document form (see :mod:`dspex_jobs.pipeline.document`).

        Raises:
            PipelineValidationError: Unknown keys, step types or modules; a bad data flow.
        """
        if not isinstance(data, Mapping):
            raise PipelineValidationError(
                f"a pipeline document is a mapping with 'steps', not {type(data).__name__}"
            )
        unknown = sorted(set(map(str, data)) - PIPELINE_KEYS)
        if unknown:
            raise PipelineValidationError(
                f"a pipeline document has no key {unknown[0]!r} (its keys: "
                f"{', '.join(sorted(PIPELINE_KEYS))})",
                field=unknown[0],
            )
        if "steps" not in data:
            raise PipelineValidationError("a pipeline document needs 'steps'", field="steps")
        inputs = data.get("inputs")
        if inputs is not None and (isinstance(inputs, str) or not isinstance(inputs, Sequence)):
            raise PipelineValidationError("'inputs' is a list of field names", field="inputs")
        return cls(
            steps_from_list(data["steps"], "steps"),
            name=str(data.get("name") or "pipeline"),
            inputs=inputs,
            timeout_s=data.get("timeout_s"),
        )

    @classmethod
    def from_json(cls, text: str) -> Pipeline:
        """Build from JSON text."""
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise PipelineValidationError(f"the pipeline is not valid JSON: {exc}") from None

    @classmethod
    def from_yaml(cls, text: str) -> Pipeline:
        """Build from YAML text (needs PyYAML)."""
        try:
            import yaml
        except ImportError:  # pragma: no cover - PyYAML is in the dev extra
            raise PipelineValidationError(
                "reading YAML needs PyYAML (pip install pyyaml); or give the pipeline as JSON"
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise PipelineValidationError(f"the pipeline is not valid YAML: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> Pipeline:
        """Build from a ``.json``, ``.yaml`` or ``.yml`` file."""
        path = Path(path)
        text = path.read_text()
        return cls.from_json(text) if path.suffix == ".json" else cls.from_yaml(text)

    def to_json(self) -> str:
        """The document form as JSON text."""
        return json.dumps(self.to_dict(), indent=2)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pipeline) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # equal by document

    def __repr__(self) -> str:
        names = ", ".join(str(s.name) for s in self.steps)
        return f"<Pipeline {self.name} [{names}]>"


def _field_names(steps: Sequence[Step], declared: Sequence[str] | None) -> set[str]:
    names = set(declared or ())
    for step in walk(steps):
        if isinstance(step, LeafStep):
            names |= set(step.writes())
            names |= {source for source in step.reads().values() if "." not in source}
    return names


def _named(steps: list[Step], fields: set[str]) -> tuple[Step, ...]:
    """Give every step a unique name: its own, or a derived one that is not a field name."""
    taken: set[str] = set()
    for step in walk(steps):
        if step.name is not None:
            if step.name in taken:
                raise PipelineValidationError(
                    f"two steps are named {step.name!r}", step=step.name, field="name"
                )
            if step.name in fields:
                raise PipelineValidationError(
                    f"step name {step.name!r} is also a field name; rename the step",
                    step=step.name,
                    field="name",
                )
            taken.add(step.name)
    return tuple(_name_tree(step, taken | fields, taken) for step in steps)


def _name_tree(step: Step, unavailable: set[str], taken: set[str]) -> Step:
    if step.name is None:
        base = step.default_name()
        name, n = base, 1
        while name in unavailable:
            n += 1
            name = f"{base}_{n}"
        unavailable.add(name)
        taken.add(name)
        step = step.with_name(name)
    elif isinstance(step, Parallel | When):
        step = step.with_name(step.name)  # a copy: the caller's object is never changed
    if isinstance(step, Parallel):
        step.branches = tuple(
            tuple(_name_tree(s, unavailable, taken) for s in branch) for branch in step.branches
        )
    elif isinstance(step, When):
        step.then = tuple(_name_tree(s, unavailable, taken) for s in step.then)
        step.otherwise = tuple(_name_tree(s, unavailable, taken) for s in step.otherwise)
    elif isinstance(step, Map):
        pass  # the mapped step runs inside the Map's task: its name is not used
    return step


def _typed(inputs: dict[str, Any], types: Mapping[str, str]) -> dict[str, Any]:
    """Check and convert inputs whose type a step declares (through a native signature)."""
    typed = [name for name in inputs if name in types]
    if not typed:
        return inputs
    output = "checked"
    while output in typed:
        output += "_"
    text = ", ".join(f"{name}: {types[name]}" for name in typed) + f" -> {output}"
    try:
        signature = Signature.parse(text)
    except SignatureError:  # a custom type only the worker knows: it checks there
        return inputs
    checked = signature.validate_inputs({n: inputs[n] for n in typed}, mode="json")
    return {**inputs, **checked}
