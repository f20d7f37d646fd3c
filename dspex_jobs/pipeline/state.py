"""A pipeline run in Redis: plan, context, step records and outcome, shared by every task.

Four keys per run, all expiring with the result TTL (``dspex_jobs.keys``):

- ``dspex:pipeline:<run>``: a hash of the plan, trace id, deadline, cancel flag, ``When``
  decisions (``when:<name>``), the webhook URL and the outcome. The outcome is written with
  ``HSETNX`` (or, for a run with a webhook, in a ``WATCH``ed ``MULTI`` with the delivery
  record): the first task (or producer) to end the run wins, and every later one sees it.
- ``...:context``: a hash, one JSON value per field. Steps write disjoint fields (the checker
  makes parallel branches do so), so an ``HSET`` is the whole merge: no locks, no
  read-modify-write, and large values never travel inside the Celery canvas.
- ``...:steps``: a hash, one JSON record per node: state, queue, attempt, timings, error.
- ``...:done``: the outcome is pushed here when the run ends, so a producer waiting with
  ``BLPOP`` wakes at once (as :mod:`dspex_jobs.store` does for jobs).
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import redis

from dspex_jobs.keys import Keys
from dspex_jobs.pipeline.plan import Plan

__all__ = ["PLAN_CACHE_SIZE", "RunState", "RunStore", "RunView", "StepState"]

PLAN_CACHE_SIZE: Final = 256
"""Plans kept per process: a run's tasks then read its plan from Redis once per process."""

_WAIT_SLICE_S: Final = 0.5


class StepState(StrEnum):
    """Where a step is."""

    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Whether the step will not change any more."""
        return self in (StepState.DONE, StepState.FAILED, StepState.SKIPPED, StepState.CANCELLED)


class RunState(StrEnum):
    """Where a run is."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class RunView:
    """What a task reads before it starts (one round trip)."""

    plan: Plan
    trace_id: str
    deadline_at: float | None
    outcome: dict[str, Any] | None
    record: dict[str, Any] | None
    decisions: dict[str, bool]
    created_at: float
    webhook: str | None = None
    """Where the run's webhook goes when it ends (checked at submit), if anywhere."""


_plans: OrderedDict[str, Plan] = OrderedDict()
_plans_lock = threading.Lock()


def _cached_plan(run_id: str) -> Plan | None:
    with _plans_lock:
        plan = _plans.get(run_id)
        if plan is not None:
            _plans.move_to_end(run_id)
        return plan


def _cache_plan(run_id: str, plan: Plan) -> None:
    with _plans_lock:
        _plans[run_id] = plan
        while len(_plans) > PLAN_CACHE_SIZE:
            _plans.popitem(last=False)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def _encoded(values: Mapping[str, Any]) -> dict[Any, Any]:
    return {name: _dumps(value) for name, value in values.items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RunStore:
    """Reads and writes pipeline runs for one Redis and key prefix."""

    def __init__(self, client: redis.Redis, keys: Keys, ttl_s: int) -> None:
        self.client = client
        self.keys = keys
        self.ttl_s = ttl_s

    def create(
        self,
        run_id: str,
        plan: Plan,
        inputs: Mapping[str, Any],
        *,
        trace_id: str,
        deadline_at: float | None,
        webhook: str | None = None,
    ) -> None:
        """Store a new run: its plan, inputs and a ``pending`` record per node (and the URL
        its webhook goes to, already checked)."""
        now = time.time()
        meta: dict[Any, Any] = {
            "plan": plan.to_json(),
            "pipeline": plan.pipeline,
            "trace_id": trace_id,
            "created_at": repr(now),
            "deadline_at": repr(deadline_at or 0.0),
        }
        if webhook:
            meta["webhook"] = webhook
        records = _encoded(
            {
                name: {
                    "name": name,
                    "kind": node.kind,
                    "queue": node.queue,
                    "state": StepState.PENDING.value,
                    "attempt": 0,
                }
                for name, node in plan.nodes.items()
            }
        )
        keys = (
            self.keys.pipeline(run_id),
            self.keys.pipeline_context(run_id),
            self.keys.pipeline_steps(run_id),
        )
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(keys[0], mapping=meta)
        if inputs:
            pipe.hset(keys[1], mapping=_encoded(inputs))
        pipe.hset(keys[2], mapping=records)
        for key in keys:
            pipe.expire(key, self.ttl_s)
        pipe.execute()

    def view(self, run_id: str, name: str) -> RunView | None:
        """What a task needs to start: plan (cached), trace, deadline, outcome, its record and
        the ``When`` decisions it depends on (those already taken, when the plan was cached)."""
        plan = _cached_plan(run_id)
        node = plan.nodes.get(name) if plan is not None else None
        guards = [str(g[0]) for g in node.guards] if node is not None else []
        fields = [
            "trace_id",
            "deadline_at",
            "outcome",
            "created_at",
            "webhook",
            *(f"when:{g}" for g in guards),
        ]
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(self.keys.pipeline(run_id), [*fields, *([] if plan else ["plan"])])
        pipe.hget(self.keys.pipeline_steps(run_id), name)
        values, record = pipe.execute()
        if values[0] is None:
            return None  # unknown run, or expired
        if plan is None:
            plan = Plan.from_json(values[-1])
            _cache_plan(run_id, plan)
        decisions = {
            g: values[5 + i] == b"1" for i, g in enumerate(guards) if values[5 + i] is not None
        }
        deadline = float(values[1] or 0.0)
        return RunView(
            plan,
            _text(values[0]),
            deadline or None,
            json.loads(values[2]) if values[2] else None,
            json.loads(record) if record else None,
            decisions,
            float(values[3] or 0.0),
            _text(values[4]) if values[4] else None,
        )

    def decide(self, run_id: str, when: str, value: bool) -> bool:
        """Record a ``When`` decision unless one exists; the decision that stands."""
        key = self.keys.pipeline(run_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.hsetnx(key, f"when:{when}", "1" if value else "0")
        pipe.hget(key, f"when:{when}")
        _, stored = pipe.execute()
        return bool(stored == b"1")

    def context(self, run_id: str, fields: Iterable[str] | None = None) -> dict[str, Any]:
        """Context values by field (all of them when ``fields`` is ``None``); absent ones are
        left out."""
        key = self.keys.pipeline_context(run_id)
        if fields is None:
            raw = self.client.hgetall(key)
            return {_text(k): json.loads(v) for k, v in raw.items()}
        wanted = list(dict.fromkeys(fields))
        if not wanted:
            return {}
        values = self.client.hmget(key, wanted)
        return {f: json.loads(v) for f, v in zip(wanted, values, strict=True) if v is not None}

    def record(
        self,
        run_id: str,
        name: str,
        record: Mapping[str, Any],
        writes: Mapping[str, Any] | None = None,
    ) -> None:
        """Store a step's record, and the context fields it wrote, in one round trip."""
        pipe = self.client.pipeline(transaction=True)
        if writes:
            pipe.hset(self.keys.pipeline_context(run_id), mapping=_encoded(writes))
        pipe.hset(self.keys.pipeline_steps(run_id), name, _dumps(dict(record)))
        pipe.execute()

    def states(self, run_id: str, names: Iterable[str]) -> list[str]:
        """The state of each named node, in order (``pending`` when it has no record)."""
        wanted = list(names)
        if not wanted:
            return []
        raw = self.client.hmget(self.keys.pipeline_steps(run_id), wanted)
        return [str(json.loads(r).get("state", "pending")) if r else "pending" for r in raw]

    def records(self, run_id: str) -> dict[str, dict[str, Any]]:
        """Every node's record."""
        raw = self.client.hgetall(self.keys.pipeline_steps(run_id))
        return {_text(k): json.loads(v) for k, v in raw.items()}

    def meta(self, run_id: str) -> dict[str, Any]:
        """The run's facts (trace id, times, outcome), without the plan."""
        fields = [
            "pipeline",
            "trace_id",
            "created_at",
            "deadline_at",
            "outcome",
            "cancel",
            "webhook",
        ]
        values = self.client.hmget(self.keys.pipeline(run_id), fields)
        meta: dict[str, Any] = {
            f: (_text(v) if v is not None else None) for f, v in zip(fields, values, strict=True)
        }
        if meta["outcome"]:
            meta["outcome"] = json.loads(meta["outcome"])
        return meta

    def plan(self, run_id: str) -> Plan | None:
        """The run's plan."""
        raw = self.client.hget(self.keys.pipeline(run_id), "plan")
        return None if raw is None else Plan.from_json(raw)

    def finish(
        self,
        run_id: str,
        outcome: Mapping[str, Any],
        *,
        also: Callable[[dict[str, Any]], Callable[[redis.client.Pipeline], None]] | None = None,
    ) -> bool:
        """End the run with ``outcome`` unless it already ended; whether this call ended it.

        ``also(stored outcome)`` returns what to queue in the same ``MULTI`` as the outcome
        (the run's webhook, :mod:`.webhook`): both are written, or neither, so a process
        that dies right after ending a run cannot lose what had to follow it. Without it,
        one ``HSETNX`` decides (the fast path: no ``WATCH``).
        """
        stored = {**outcome, "finished_at": time.time()}
        raw = _dumps(stored)
        key, done = self.keys.pipeline(run_id), self.keys.pipeline_done(run_id)
        if also is None:
            if not self.client.hsetnx(key, "outcome", raw):
                return False
            pipe = self.client.pipeline(transaction=False)
            pipe.rpush(done, raw)
            pipe.expire(done, self.ttl_s)
            pipe.execute()
            return True
        with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    if pipe.hexists(key, "outcome"):
                        return False
                    queue_more = also(stored)
                    pipe.multi()
                    pipe.hset(key, "outcome", raw)
                    pipe.rpush(done, raw)
                    pipe.expire(done, self.ttl_s)
                    queue_more(pipe)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue  # the hash changed (cancel flag, a When decision, an outcome)

    def outcome(self, run_id: str) -> dict[str, Any] | None:
        """How the run ended, or ``None`` while it runs."""
        raw = self.client.hget(self.keys.pipeline(run_id), "outcome")
        return None if raw is None else dict(json.loads(raw))

    def request_cancel(self, run_id: str) -> None:
        """Flag the run cancelled: running steps see it within their poll interval."""
        self.client.hset(self.keys.pipeline(run_id), "cancel", "1")

    def stop_reason(self, run_id: str) -> str | None:
        """Why a running step should stop (``cancelled``, or the run ended), if it should."""
        cancel, outcome = self.client.hmget(self.keys.pipeline(run_id), ["cancel", "outcome"])
        if outcome is not None:
            return f"the run ended ({json.loads(outcome).get('status')})"
        return "the run was cancelled" if cancel is not None else None

    def wait(self, run_id: str, timeout_s: float | None) -> dict[str, Any] | None:
        """Block until the run ends (its outcome), or ``None`` after ``timeout_s``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        done = self.keys.pipeline_done(run_id)
        while True:
            remaining = _WAIT_SLICE_S if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return self.outcome(run_id)
            popped = self.client.blpop([done], timeout=min(remaining, _WAIT_SLICE_S))
            if popped is not None:
                return dict(json.loads(popped[1]))
            found = self.outcome(run_id)
            if found is not None:
                return found
