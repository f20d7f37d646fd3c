"""A checked pipeline flattened into what workers execute: named nodes and a canvas layout.

A *node* is one task: a leaf step (native, dspy, map) or the merge that ends a ``Parallel``.
Each knows its queue, where its inputs come from, which fields it writes flat, the ``When``
decisions it depends on (its *guards*) and whether it is the run's last task (``final``: it
ends the run). ``When`` adds no task of its own: both branches' steps are laid out in the
chain, and a step whose guard does not hold is recorded ``skipped`` in microseconds.

The plan is stored in Redis once per run; tasks carry only ``(run id, node name)``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from dspex_jobs.pipeline.steps import LeafStep, Parallel, Step, When
from dspex_jobs.pipeline.validate import Analysis

__all__ = ["MERGE_QUEUE", "Node", "Plan", "build_plan"]

MERGE_QUEUE = "general"
"""Where the merge that ends a ``Parallel`` runs (it only reads and writes Redis)."""


@dataclass(frozen=True)
class Node:
    """One task of a run.

    Attributes:
        name: The step's name (a ``Parallel``'s name for its merge).
        kind: ``native``, ``dspy``, ``map`` or ``merge``.
        queue: Where its task is sent.
        step: The step's document (leaves), run by the worker.
        reads: Argument -> context source.
        writes: Fields written flat.
        guards: ``[when name, branch]``: it runs only if each When took that branch.
        final: It is the last task: it ends the run.
        merge: For merges: field -> [rule, steps whose values are merged].
        parallel: For steps inside a ``Parallel``: its name (its merge node's).
        members: For merges: every node inside the ``Parallel``'s branches.
    """

    name: str
    kind: str
    queue: str
    step: dict[str, Any] = field(default_factory=dict)
    reads: dict[str, str] = field(default_factory=dict)
    writes: list[str] = field(default_factory=list)
    guards: list[list[Any]] = field(default_factory=list)
    final: bool = False
    merge: dict[str, list[Any]] = field(default_factory=dict)
    parallel: str | None = None
    members: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Plan:
    """Every node of a run, its ``When`` conditions and the canvas layout.

    ``layout`` is a list of items: ``{"step": name}`` or
    ``{"parallel": merge name, "branches": [[items], ...]}``.
    """

    pipeline: str
    nodes: dict[str, Node]
    whens: dict[str, str]
    layout: list[dict[str, Any]]

    def to_json(self) -> str:
        """The stored form."""
        return json.dumps(
            {
                "pipeline": self.pipeline,
                "whens": self.whens,
                "layout": self.layout,
                "nodes": {n: asdict(node) for n, node in self.nodes.items()},
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Plan:
        """Read the stored form."""
        data = json.loads(text)
        nodes = {name: Node(**raw) for name, raw in data["nodes"].items()}
        return cls(data["pipeline"], nodes, data["whens"], data["layout"])


class _Builder:
    def __init__(self, analysis: Analysis) -> None:
        self.analysis = analysis
        self.nodes: dict[str, Node] = {}
        self.whens: dict[str, str] = {}

    def sequence(self, steps: Sequence[Step], guards: list[list[Any]]) -> list[dict[str, Any]]:
        layout: list[dict[str, Any]] = []
        for step in steps:
            if isinstance(step, Parallel):
                layout.append(self.parallel(step, guards))
            elif isinstance(step, When):
                name = str(step.name)
                self.whens[name] = step.condition.to_text()
                layout += self.sequence(step.then, [*guards, [name, True]])
                layout += self.sequence(step.otherwise, [*guards, [name, False]])
            else:
                assert isinstance(step, LeafStep)
                layout.append(self.leaf(step, guards))
        return layout

    def leaf(self, step: LeafStep, guards: list[list[Any]]) -> dict[str, Any]:
        name = str(step.name)
        not_flat = self.analysis.not_flat.get(name, set())
        self.nodes[name] = Node(
            name=name,
            kind=step.kind,
            queue=step.target_queue(),
            step=step.to_dict(),
            reads=step.reads(),
            writes=[f for f in step.writes() if f not in not_flat],
            guards=guards,
        )
        return {"step": name}

    def parallel(self, step: Parallel, guards: list[list[Any]]) -> dict[str, Any]:
        name = str(step.name)
        before = set(self.nodes)
        branches = [self.sequence(branch, guards) for branch in step.branches]
        members = [n for n in self.nodes if n not in before]
        for member in members:
            self.nodes[member] = replace(self.nodes[member], parallel=name)
        sources = self.analysis.merge_sources.get(name, {})
        self.nodes[name] = Node(
            name=name,
            kind="merge",
            queue=MERGE_QUEUE,
            guards=guards,
            writes=sorted(sources),
            merge={f: [rule, leaves] for f, (rule, leaves) in sources.items()},
            members=members,
        )
        return {"parallel": name, "branches": branches}


def build_plan(pipeline_name: str, steps: Sequence[Step], analysis: Analysis) -> Plan:
    """Flatten named, checked steps into a :class:`Plan` (the last top-level task is final)."""
    builder = _Builder(analysis)
    layout = builder.sequence(steps, [])
    last = layout[-1]
    final = str(last.get("step") or last.get("parallel"))
    node = builder.nodes[final]
    builder.nodes[final] = Node(**{**asdict(node), "final": True})
    return Plan(pipeline_name, builder.nodes, builder.whens, layout)
