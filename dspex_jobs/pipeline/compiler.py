"""Compile a plan to a Celery canvas: a chain for the sequence, a flat chord per ``Parallel``.

::

    [validate, cot, Parallel([search, keywords]), answer]
    ->  chain(step(validate), step(cot),
              chord([step(search) @neural, step(keywords) @general], merge(parallel)),
              step(answer))

Every signature is immutable and carries only ``(run id, node name)``: tasks read their inputs
from the run's context in Redis and write their outputs back, so the canvas stays a few hundred
bytes whatever the data. Chords are never nested (the checker refuses a ``Parallel`` inside a
``Parallel``); a branch that is a list of steps is a chain inside the chord's header, which
Celery handles without a nested chord. Results are ignored (``ignore_result``): the chord
counts its header through the backend's chord counter all the same, and the producer does not
subscribe to result channels it would never read. Messages are JSON (:data:`SERIALIZER`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from celery import Celery, chain, chord
from celery.canvas import Signature

from dspex_jobs.pipeline.plan import Plan

__all__ = ["MERGE_TASK", "SERIALIZER", "STEP_TASK", "compile_canvas", "release_results", "task_id"]

STEP_TASK: Final = "dspex.pipeline.step"
"""The task that runs one leaf step."""

MERGE_TASK: Final = "dspex.pipeline.merge"
"""The chord body that ends a ``Parallel``: merges fields, then the chain goes on."""

SERIALIZER: Final = "json"
"""How pipeline messages are encoded. They hold two short strings and the canvas around them
(the data stays in Redis), so plain JSON costs nothing and stays readable in Flower and
``redis-cli``. (The ``dspex`` codec carries canvases too, since it packs Celery's ``group``, a
dict subclass, as a plain dict.)"""


_OUR_TASK_ID: Final = re.compile(r"[0-9a-f]{32}\.\w+")


def task_id(run_id: str, name: str) -> str:
    """The Celery task id of a node (readable in Flower; kept across retries)."""
    return f"{run_id}.{name}"


def compile_canvas(app: Celery, plan: Plan, run_id: str) -> Signature:
    """The canvas that runs ``plan`` as run ``run_id`` (send it with ``apply_async()``)."""
    items = [_item(app, plan, run_id, item) for item in plan.layout]
    return items[0] if len(items) == 1 else chain(*items)


def _item(app: Celery, plan: Plan, run_id: str, item: dict[str, Any]) -> Signature:
    if "step" in item:
        return _signature(app, STEP_TASK, run_id, item["step"], plan.nodes[item["step"]].queue)
    header = [_branch(app, plan, run_id, branch) for branch in item["branches"]]
    name = item["parallel"]
    body = _signature(app, MERGE_TASK, run_id, name, plan.nodes[name].queue)
    return chord(header, body)


def _branch(app: Celery, plan: Plan, run_id: str, items: list[dict[str, Any]]) -> Signature:
    signatures = [_item(app, plan, run_id, item) for item in items]
    return signatures[0] if len(signatures) == 1 else chain(*signatures)


def _signature(app: Celery, task: str, run_id: str, name: str, queue: str) -> Signature:
    return app.signature(
        task,
        args=(run_id, name),
        immutable=True,
        queue=queue,
        task_id=task_id(run_id, name),
        ignore_result=True,
        serializer=SERIALIZER,
    )


def release_results(app: Celery) -> None:
    """Stop tracking pipeline task results in this thread's result backend.

    Whoever applies a chord (the producer sending a canvas that starts with a ``Parallel``,
    the worker whose chain reaches one) makes Celery build ``GroupResult`` objects whose
    barriers subscribe this process to every header task's result channel and keep the
    results pending (the Redis backend's ``apply_chord`` builds one more, strongly held). Our
    tasks never publish results (the run lives in Redis), so without this each ``Parallel``
    would leave subscriptions and pending results behind until the process exits (measured:
    40 subscriptions after 20 runs of a two-branch pipeline). The producer calls this after
    sending; a worker after each task (:class:`~dspex_jobs.pipeline.tasks.PipelineTask`).
    Only results whose ids are pipeline task ids (``<run id>.<step>``) are touched.
    """
    backend = app.backend
    pending = getattr(backend, "_pending_results", None)  # async backends (Redis) only
    if pending is None or not hasattr(backend, "remove_pending_result"):
        return
    found: list[Any] = []
    for by_id in pending:  # (concrete, weak), by task id; each value is one result or, in
        for task, entry in list(by_id.items()):  # newer Celery, a map of its waiters
            if _OUR_TASK_ID.fullmatch(str(task)):
                found += list(entry.values()) if isinstance(entry, Mapping) else [entry]
    for result in found:
        backend.remove_pending_result(result)
