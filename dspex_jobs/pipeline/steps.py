"""The steps a pipeline is made of: two kinds of work and three ways to arrange them.

Work (*leaf* steps, one Celery task each):

- :class:`Native` runs a router operation (``signature.validate``, ``search``, a metric, one
  of yours) in a worker, on the operation's queue.
- :class:`Dspy` runs a DSPy module on ``general``: ``Predict``, ``ChainOfThought``, ``ReAct``
  (with registered tools), ``BestOfN``/``Refine`` (with a registered reward) or a registered
  program.
- :class:`Map` runs one of those for every item of a list field.

Arrangement: a list of steps runs in sequence; :class:`Parallel` runs branches at once;
:class:`When` runs one of two branches depending on a condition.

Every leaf step reads its inputs from the pipeline's context and adds its outputs to it: all of
them under the step's name (``context["cot"] == {"reasoning": ..., "answer": ...}``), and its
declared outputs also flat (``context["answer"]``). ``inputs={"context": "passages"}`` reads an
input from another field, or from one step's output with ``"step.field"``. DSPy's own extra
outputs (``reasoning``, ``trajectory``) are kept under the step's name only.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, Final

from dspex_jobs.errors import PipelineValidationError, SignatureError
from dspex_jobs.jobs import LMOptions
from dspex_jobs.pipeline import components
from dspex_jobs.pipeline.operations import OperationSpec, operation_spec
from dspex_jobs.pipeline.policy import Fail, FailurePolicy, parse_policy
from dspex_jobs.pipeline.predicate import Predicate
from dspex_jobs.settings import QUEUES
from dspex_jobs.signature import Signature

__all__ = [
    "DSPY_MODULES",
    "MERGE_RULES",
    "Dspy",
    "LeafStep",
    "Map",
    "Native",
    "Parallel",
    "Step",
    "When",
]

DSPY_MODULES: Final = ("Predict", "ChainOfThought", "ReAct", "BestOfN", "Refine")
"""The DSPy modules a :class:`Dspy` step can name (besides registered programs)."""

_ALIASES: Final = {
    **{m.lower(): m for m in DSPY_MODULES},
    "chain_of_thought": "ChainOfThought",
    "best_of_n": "BestOfN",
    "cot": "ChainOfThought",
}

MERGE_RULES: Final = ("list", "concat", "unique", "first")
"""How a :class:`Parallel` merges one field written by several branches: ``list`` (each
branch's value, in branch order), ``concat`` (their lists joined), ``unique`` (joined, without
repeats), ``first`` (the first branch's value that is present)."""

_NAME: Final = re.compile(r"[A-Za-z_]\w{0,63}")
_SOURCE: Final = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)?")
_DEFAULT_MAX_ITERS: Final = 5


class Step:
    """Base of every step. ``name`` is unique in a pipeline (given, or derived)."""

    kind: ClassVar[str] = ""
    name: str | None

    def default_name(self) -> str:
        """The name given when none was (made unique by the pipeline)."""
        return self.kind

    def with_name(self, name: str) -> Step:
        """A copy named ``name``."""
        named = copy.copy(self)
        named.name = name
        return named

    def to_dict(self) -> dict[str, Any]:
        """The document form (see :mod:`dspex_jobs.pipeline.document`)."""
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Step)
            and type(other) is type(self)
            and self.to_dict() == other.to_dict()
        )

    __hash__ = None  # type: ignore[assignment]  # equal by value, and mutable while named

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()!r})"


def _check_name(name: str | None) -> str | None:
    if name is not None and not _NAME.fullmatch(name):
        raise PipelineValidationError(
            f"step name {name!r} must be an identifier of at most 64 characters", field="name"
        )
    return name


class LeafStep(Step):
    """A step that is one task: it reads fields, runs, and writes fields.

    Args:
        name: Unique in the pipeline; derived from the operation or module when omitted.
        inputs: ``{argument: source}``: read an argument from another context field, or from
            one step's output (``"step.field"``).
        on_error: A :class:`~dspex_jobs.pipeline.policy.FailurePolicy`, ``"fail"`` or
            ``"skip"`` (see :mod:`dspex_jobs.pipeline.policy`).
        timeout_s: Give up on the step after this many seconds (:class:`StepTimeout`).
        queue: Run on this workload queue instead of the step's own.
    """

    def __init__(
        self,
        *,
        name: str | None = None,
        inputs: Mapping[str, str] | None = None,
        on_error: FailurePolicy | str | Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
        queue: str | None = None,
    ) -> None:
        self.name = _check_name(name)
        self.inputs = dict(inputs or {})
        for argument, source in self.inputs.items():
            if not isinstance(source, str) or not _SOURCE.fullmatch(source):
                raise PipelineValidationError(
                    f"inputs[{argument!r}] must be a field name or 'step.field', not {source!r}",
                    field=argument,
                )
        self.on_error = parse_policy(on_error, name or self.kind)
        if timeout_s is not None and timeout_s <= 0:
            raise PipelineValidationError("timeout_s must be positive", field="timeout_s")
        self.timeout_s = timeout_s
        if queue is not None and queue not in QUEUES:
            raise PipelineValidationError(
                f"unknown queue {queue!r}; expected one of {', '.join(QUEUES)}", field="queue"
            )
        self.queue = queue

    def reads(self) -> dict[str, str]:
        """``{argument: context source}`` this step needs."""
        raise NotImplementedError

    def writes(self) -> tuple[str, ...]:
        """The fields it writes (flat and under its name)."""
        raise NotImplementedError

    def extras(self) -> tuple[str, ...]:
        """Outputs kept under its name only (DSPy's ``reasoning``, ``trajectory``)."""
        return ()

    def target_queue(self) -> str:
        """The queue its task is sent to."""
        raise NotImplementedError

    def typed_reads(self) -> dict[str, str]:
        """``{argument: type text}`` for the arguments whose type the producer can check."""
        return {}

    def check(self, where: str) -> None:
        """Refuse what is wrong with this step on its own (unknown module, bad options).

        Raises:
            PipelineValidationError: Naming the step.
        """

    def _common(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.name is not None:
            out["name"] = self.name
        if self.inputs:
            out["inputs"] = dict(self.inputs)
        if not isinstance(self.on_error, Fail):
            out["on_error"] = self.on_error.to_dict()
        if self.timeout_s is not None:
            out["timeout_s"] = self.timeout_s
        if self.queue is not None:
            out["queue"] = self.queue
        return out


NATIVE_KEYS: Final = frozenset(
    {"native", "name", "inputs", "outputs", "queue", "on_error", "timeout_s", "params"}
)
"""Keys of a native step document that are not operation parameters."""


class Native(LeafStep):
    """Run a router operation in a worker: ``Native("search", index="docs", k=5)``.

    Args:
        operation: The router operation (see :mod:`dspex_jobs.pipeline.operations`).
        outputs: The fields an operation without a pipeline spec writes.
        params: Parameters whose names clash with the step's own options.
        **more_params: The operation's parameters (constants, not read from the context).
    """

    kind = "native"

    def __init__(
        self,
        operation: str,
        /,
        *,
        name: str | None = None,
        inputs: Mapping[str, str] | None = None,
        outputs: Sequence[str] | None = None,
        queue: str | None = None,
        on_error: FailurePolicy | str | Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
        params: Mapping[str, Any] | None = None,
        **more_params: Any,
    ) -> None:
        super().__init__(
            name=name, inputs=inputs, on_error=on_error, timeout_s=timeout_s, queue=queue
        )
        self.operation = operation
        self.outputs = tuple(outputs or ())
        self.params = {**(params or {}), **more_params}

    @property
    def spec(self) -> OperationSpec | None:
        """The operation's pipeline spec, if it has one."""
        return operation_spec(self.operation)

    def default_name(self) -> str:
        return self.operation.replace(".", "_")

    def reads(self) -> dict[str, str]:
        spec = self.spec
        if spec is None:
            return dict(self.inputs)
        reads, _ = spec.io(self.params)
        return {**reads, **self.inputs}

    def writes(self) -> tuple[str, ...]:
        spec = self.spec
        return spec.io(self.params)[1] if spec is not None else self.outputs

    def target_queue(self) -> str:
        spec = self.spec
        return self.queue or (spec.queue if spec is not None else "general")

    def typed_reads(self) -> dict[str, str]:
        spec = self.spec
        if spec is None or spec.typed_inputs is None:
            return {}
        signature = Signature.parse(str(self.params[spec.typed_inputs]))
        return {f.name: str(f.type) for f in signature.inputs if f.typed}

    def check(self, where: str) -> None:
        spec = self.spec
        if spec is None:
            _check_known_operation(self.operation, where)
            if not self.outputs:
                raise PipelineValidationError(
                    f"step {where!r}: operation {self.operation!r} has no pipeline spec, so the "
                    "step must say what it writes: outputs=[...]",
                    step=where,
                    field="outputs",
                )
            return
        spec.check_params(self.params, where)
        if self.outputs:
            raise PipelineValidationError(
                f"step {where!r}: operation {self.operation!r} always writes "
                f"{', '.join(spec.io(self.params)[1])}; outputs= is only for operations "
                "without a spec",
                step=where,
                field="outputs",
            )
        reads, _ = spec.io(self.params)
        unknown = sorted(set(self.inputs) - set(reads))
        if unknown:
            raise PipelineValidationError(
                f"step {where!r}: operation {self.operation!r} has no argument {unknown[0]!r} "
                f"(its arguments: {', '.join(reads) or 'none'})",
                step=where,
                field=unknown[0],
            )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"native": self.operation, **self._common()}
        if self.outputs:
            out["outputs"] = list(self.outputs)
        if any(key in NATIVE_KEYS for key in self.params):
            out["params"] = dict(self.params)
        else:
            out.update(self.params)
        return out


def _check_known_operation(operation: str, where: str) -> None:
    from dspex_jobs.errors import NoImplementation
    from dspex_jobs.router import default_registry

    try:
        default_registry().implementations(operation)
    except NoImplementation:
        raise PipelineValidationError(
            f"step {where!r}: unknown operation {operation!r}; register it with the router "
            f"(dspex_jobs.router.implementation) where the pipeline is built and in the "
            f"workers",
            step=where,
            field="native",
        ) from None


class Dspy(LeafStep):
    """Run a DSPy module on the ``general`` queue.

    Args:
        module: ``Predict``, ``ChainOfThought``, ``ReAct``, ``BestOfN``, ``Refine`` (snake case
            works too) or the name of a registered program.
        signature: DSPy signature text (a program's registered signature when omitted).
        instructions: The signature's instructions.
        lm: Per-step LM options (model, temperature, max_tokens, cache).
        tools: ReAct: names of registered tools.
        max_iters: ReAct: most reasoning steps (default 5).
        n: BestOfN/Refine: attempts.
        reward: BestOfN/Refine: name of a registered reward function.
        threshold: BestOfN/Refine: stop at the first attempt whose reward reaches it.
        base: BestOfN/Refine: the module tried ``n`` times (``Predict`` or ``ChainOfThought``).
    """

    kind = "dspy"

    def __init__(
        self,
        module: str,
        /,
        signature: str | None = None,
        *,
        name: str | None = None,
        inputs: Mapping[str, str] | None = None,
        instructions: str | None = None,
        lm: LMOptions | Mapping[str, Any] | None = None,
        tools: Sequence[str] = (),
        max_iters: int | None = None,
        n: int | None = None,
        reward: str | None = None,
        threshold: float | None = None,
        base: str | None = None,
        queue: str | None = None,
        on_error: FailurePolicy | str | Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> None:
        super().__init__(
            name=name, inputs=inputs, on_error=on_error, timeout_s=timeout_s, queue=queue
        )
        self.module = _ALIASES.get(module.lower(), module) if isinstance(module, str) else module
        self.signature = signature
        self.instructions = instructions
        self.lm = lm if isinstance(lm, LMOptions) else LMOptions.model_validate(dict(lm or {}))
        self.tools = tuple(tools)
        self.max_iters = max_iters
        self.n = n
        self.reward = reward
        self.threshold = threshold
        self.base = _ALIASES.get(base.lower(), base) if base else None

    @property
    def is_program(self) -> bool:
        """Whether ``module`` names a registered program rather than a DSPy module."""
        return self.module not in DSPY_MODULES

    def default_name(self) -> str:
        return re.sub(r"(?<!^)(?=[A-Z])", "_", str(self.module)).lower()

    def parsed_signature(self) -> Signature:
        """The step's signature, parsed.

        Raises:
            PipelineValidationError: There is none, or it does not parse.
        """
        text = self.signature
        if text is None and self.is_program:
            found = components.lookup("program", str(self.module))
            text = found.signature if found else None
        if not text:
            raise PipelineValidationError(
                f"step {self.name or self.default_name()!r}: a {self.module} step needs a "
                "signature",
                step=self.name,
                field="signature",
            )
        try:
            return Signature.parse(text, instructions=self.instructions)
        except SignatureError as exc:
            raise PipelineValidationError(
                f"step {self.name or self.default_name()!r}: {exc}",
                step=self.name,
                field="signature",
            ) from None

    def reads(self) -> dict[str, str]:
        return {f.name: self.inputs.get(f.name, f.name) for f in self.parsed_signature().inputs}

    def writes(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.parsed_signature().outputs)

    def extras(self) -> tuple[str, ...]:
        if self.module == "ReAct":
            return ("reasoning", "trajectory")
        if "ChainOfThought" in (self.module, self.base):
            return ("reasoning",)
        return ()

    def target_queue(self) -> str:
        return self.queue or "general"

    def typed_reads(self) -> dict[str, str]:
        return {f.name: str(f.type) for f in self.parsed_signature().inputs if f.typed}

    def check(self, where: str) -> None:
        if self.is_program and components.lookup("program", str(self.module)) is None:
            known = [*DSPY_MODULES, *components.names("program")]
            raise PipelineValidationError(
                f"step {where!r}: unknown DSPy module {self.module!r}; expected one of "
                f"{', '.join(known)} (register programs with components.program)",
                step=where,
                field="dspy",
            )
        signature = self.parsed_signature()
        unknown = sorted(set(self.inputs) - {f.name for f in signature.inputs})
        if unknown:
            raise PipelineValidationError(
                f"step {where!r}: inputs names {unknown[0]!r}, which is not an input of its "
                f"signature",
                step=where,
                field=unknown[0],
            )
        _check_module_options(self, where)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dspy": self.module}
        if self.signature is not None:
            out["signature"] = self.signature
        out.update(self._common())
        options = {
            "instructions": self.instructions,
            "max_iters": self.max_iters,
            "n": self.n,
            "reward": self.reward,
            "threshold": self.threshold,
            "base": self.base,
        }
        out.update({k: v for k, v in options.items() if v is not None})
        if self.tools:
            out["tools"] = list(self.tools)
        if self.lm.overrides() or self.lm.fallbacks:
            out["lm"] = self.lm.model_dump(mode="json", exclude_none=True)
        return out

    def module_options(self) -> dict[str, Any]:
        """What a worker needs to build the module (with defaults filled in)."""
        return {
            "module": self.module,
            "tools": list(self.tools),
            "max_iters": self.max_iters or _DEFAULT_MAX_ITERS,
            "n": self.n,
            "reward": self.reward,
            "threshold": 1.0 if self.threshold is None else self.threshold,
            "base": self.base or "Predict",
        }


def _check_module_options(step: Dspy, where: str) -> None:
    """ReAct needs tools, BestOfN/Refine a reward and n; others take neither."""

    def refuse(message: str, field: str) -> PipelineValidationError:
        return PipelineValidationError(f"step {where!r}: {message}", step=where, field=field)

    given = {
        "tools": bool(step.tools),
        "max_iters": step.max_iters is not None,
        "n": step.n is not None,
        "reward": step.reward is not None,
        "threshold": step.threshold is not None,
        "base": step.base is not None,
    }
    allowed = {
        "ReAct": {"tools", "max_iters"},
        "BestOfN": {"n", "reward", "threshold", "base"},
        "Refine": {"n", "reward", "threshold", "base"},
    }.get(str(step.module), set())
    extra = sorted(k for k, v in given.items() if v and k not in allowed)
    if extra:
        raise refuse(f"{extra[0]!r} does not apply to {step.module}", extra[0])
    if step.module == "ReAct":
        if not step.tools:
            raise refuse("ReAct needs tools=[...] (names of registered tools)", "tools")
        for name in step.tools:
            if components.lookup("tool", name) is None:
                raise refuse(
                    f"unknown tool {name!r}; registered tools: "
                    f"{', '.join(components.names('tool')) or 'none'}",
                    "tools",
                )
    if step.module in ("BestOfN", "Refine"):
        if not step.n or step.n < 1 or not step.reward:
            raise refuse(f"{step.module} needs n >= 1 and reward (a registered reward)", "n")
        if components.lookup("reward", step.reward) is None:
            raise refuse(
                f"unknown reward {step.reward!r}; registered rewards: "
                f"{', '.join(components.names('reward')) or 'none'}",
                "reward",
            )
        if step.base not in (None, "Predict", "ChainOfThought"):
            raise refuse("base must be Predict or ChainOfThought", "base")


class Map(LeafStep):
    """Run ``step`` once per item of the list field ``over``, in one task.

    Each of the step's output fields is written as a list, one value per item, in order.

    Args:
        over: The list field (or ``step.field``).
        step: A :class:`Native` or :class:`Dspy` step.
        item: The step's argument that receives each item (default: its first).
        max_concurrency: Items run at once (threads in the task: LM calls overlap).
    """

    kind = "map"

    def __init__(
        self,
        over: str,
        step: LeafStep,
        /,
        *,
        item: str | None = None,
        name: str | None = None,
        max_concurrency: int = 4,
        on_error: FailurePolicy | str | Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
        queue: str | None = None,
    ) -> None:
        super().__init__(name=name, on_error=on_error, timeout_s=timeout_s, queue=queue)
        if not isinstance(over, str) or not _SOURCE.fullmatch(over):
            raise PipelineValidationError(
                f"Map needs a field name to map over, not {over!r}", field="map"
            )
        if not isinstance(step, Native | Dspy):
            raise PipelineValidationError("Map takes a Native or Dspy step", field="map")
        if not isinstance(step.on_error, Fail):
            raise PipelineValidationError(
                "put on_error on the Map, not on the step it maps", field="on_error"
            )
        if not 1 <= max_concurrency <= 64:
            raise PipelineValidationError(
                "max_concurrency must be between 1 and 64", field="max_concurrency"
            )
        self.over = over
        self.step = step
        self.explicit_item = item
        self.max_concurrency = max_concurrency

    @property
    def item(self) -> str:
        """The inner step's argument bound to each item."""
        if self.explicit_item:
            return self.explicit_item
        reads = self.step.reads()
        if not reads:
            raise PipelineValidationError("the mapped step reads nothing", field="item")
        return next(iter(reads))

    def default_name(self) -> str:
        return f"map_{self.step.default_name()}"

    def reads(self) -> dict[str, str]:
        return {**self.step.reads(), self.item: self.over}

    def writes(self) -> tuple[str, ...]:
        return self.step.writes()

    def extras(self) -> tuple[str, ...]:
        return ("items",)

    def target_queue(self) -> str:
        return self.queue or self.step.target_queue()

    def check(self, where: str) -> None:
        self.step.check(where)
        if self.item not in self.step.reads():
            raise PipelineValidationError(
                f"step {where!r}: item {self.item!r} is not an argument of the mapped step "
                f"(it reads {', '.join(self.step.reads())})",
                step=where,
                field="item",
            )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"map": self.over, "step": self.step.to_dict()}
        out.update(self._common())
        if self.explicit_item:
            out["item"] = self.explicit_item
        if self.max_concurrency != 4:
            out["max_concurrency"] = self.max_concurrency
        return out


Branch = tuple[Step, ...]


def _branch(steps: Step | Sequence[Step]) -> Branch:
    found = (steps,) if isinstance(steps, Step) else tuple(steps)
    if not found or not all(isinstance(s, Step) for s in found):
        raise PipelineValidationError("a branch is a step or a non-empty list of steps")
    return found


class Parallel(Step):
    """Run branches at once (a Celery chord); each branch is a step or a list of steps.

    Branches may not write the same field unless ``merge`` says how to combine it
    (``merge={"keywords": "concat"}``, see :data:`MERGE_RULES`). A ``Parallel`` may not hold
    another one (that would be a nested chord).
    """

    kind = "parallel"

    def __init__(
        self,
        branches: Sequence[Step | Sequence[Step]],
        /,
        *,
        name: str | None = None,
        merge: Mapping[str, str] | None = None,
    ) -> None:
        self.name = _check_name(name)
        self.branches = tuple(_branch(b) for b in branches)
        if not self.branches:
            raise PipelineValidationError("Parallel needs at least one branch", field="parallel")
        self.merge = dict(merge or {})
        for field, rule in self.merge.items():
            if rule not in MERGE_RULES:
                raise PipelineValidationError(
                    f"merge rule {rule!r} for {field!r} is unknown; expected one of "
                    f"{', '.join(MERGE_RULES)}",
                    field=field,
                )

    def to_dict(self) -> dict[str, Any]:
        branches = [
            b[0].to_dict() if len(b) == 1 else [s.to_dict() for s in b] for b in self.branches
        ]
        out: dict[str, Any] = {"parallel": branches}
        if self.name is not None:
            out["name"] = self.name
        if self.merge:
            out["merge"] = dict(self.merge)
        return out


class When(Step):
    """Run ``then`` when ``condition`` holds, else ``otherwise`` (if given).

    ``condition`` is a :class:`~dspex_jobs.pipeline.predicate.Predicate` or its text
    (``"confidence >= 0.5"``); it is decided once, when the first of the When's steps starts.
    Fields written in only one branch cannot be read after the When.
    """

    kind = "when"

    def __init__(
        self,
        condition: Predicate | str | Mapping[str, Any],
        then: Step | Sequence[Step],
        otherwise: Step | Sequence[Step] | None = None,
        /,
        *,
        name: str | None = None,
    ) -> None:
        self.name = _check_name(name)
        self.condition = Predicate.parse(condition)
        self.then = _branch(then)
        self.otherwise: Branch = _branch(otherwise) if otherwise is not None else ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "when": self.condition.to_text(),
            "then": [s.to_dict() for s in self.then],
        }
        if self.otherwise:
            out["else"] = [s.to_dict() for s in self.otherwise]
        if self.name is not None:
            out["name"] = self.name
        return out


def walk(steps: Sequence[Step]) -> Iterator[Step]:
    """Every step, depth first, in document order (composites before their children)."""
    for step in steps:
        yield step
        if isinstance(step, Parallel):
            for branch in step.branches:
                yield from walk(branch)
        elif isinstance(step, When):
            yield from walk(step.then)
            yield from walk(step.otherwise)
