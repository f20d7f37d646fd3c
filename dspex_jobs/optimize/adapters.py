"""One adapter per optimizer: build it with its real DSPy arguments and compile (worker side).

Each adapter takes an :class:`OptimizeRun` (student, data, metric, LMs, progress, checkpoint)
and returns the compiled module. Budgets for the progress bar come from the optimizer's own
arguments. Checkpoints, where the optimizer allows them:

- ``BootstrapFewShotWithRandomSearch`` is driven one candidate seed at a time (DSPy's own
  ``restrict=[seed]``), and each candidate's score and state is checkpointed: a taken-over job
  skips the candidates already scored and ends with the same best program.
- The others checkpoint their compiled program (:mod:`.runner`), so a takeover during the
  final evaluation does not optimize again. Their inner loops (bootstrapping, Optuna trials,
  GEPA's search) have no resumable state in DSPy 3.4, and restart.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dspy
import redis

from dspex_jobs.keys import Keys
from dspex_jobs.optimize.metrics import MetricFn, gepa_metric
from dspex_jobs.optimize.progress import ProgressReporter

__all__ = ["ADAPTERS", "Checkpoint", "OptimizeRun"]


class Checkpoint:
    """An optimization's checkpoints: a Redis hash of JSON values, kept ``ttl_s``."""

    def __init__(self, client: redis.Redis, keys: Keys, job_id: str, ttl_s: int) -> None:
        self.client = client
        self.key = keys.optimize_checkpoint(job_id)
        self.ttl_s = ttl_s

    def get(self, name: str) -> Any:
        """A checkpointed value, or ``None``."""
        raw = self.client.hget(self.key, name)
        return None if raw is None else json.loads(raw)

    def put(self, name: str, value: Any) -> None:
        """Checkpoint ``value`` (JSON) under ``name``."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.key, name, json.dumps(value))
        pipe.expire(self.key, self.ttl_s)
        pipe.execute()

    def items(self, prefix: str) -> dict[str, Any]:
        """Every checkpoint whose name starts with ``prefix`` (prefix removed)."""
        return {
            k.decode()[len(prefix) :]
            if isinstance(k, bytes)
            else str(k)[len(prefix) :]: json.loads(v)
            for k, v in self.client.hgetall(self.key).items()
            if (k.decode() if isinstance(k, bytes) else str(k)).startswith(prefix)
        }

    def exists(self) -> bool:
        """Whether anything was checkpointed (the job resumes)."""
        return bool(self.client.exists(self.key))

    def clear(self) -> None:
        """Drop every checkpoint (the job finished)."""
        self.client.delete(self.key)


@dataclass
class OptimizeRun:
    """What an adapter gets."""

    optimizer: str
    student: dspy.Module
    trainset: list[dspy.Example]
    valset: list[dspy.Example] | None
    metric: MetricFn
    args: dict[str, Any]
    lm: Any
    reflection_lm: Any
    num_threads: int
    reporter: ProgressReporter
    checkpoint: Checkpoint
    extra: dict[str, Any] = field(default_factory=dict)

    def split_args(self, cls: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """The arguments for ``cls.__init__`` and for ``cls.compile`` (shared names go to the
        constructor)."""
        init_names = set(inspect.signature(cls.__init__).parameters)
        compile_names = set(inspect.signature(cls.compile).parameters)
        init = {k: v for k, v in self.args.items() if k in init_names}
        rest = {k: v for k, v in self.args.items() if k in compile_names and k not in init}
        return init, rest


def _labeled(run: OptimizeRun) -> dspy.Module:
    init, compile_args = run.split_args(dspy.LabeledFewShot)
    run.reporter.phase("compile", budget=0)
    return dspy.LabeledFewShot(**init).compile(run.student, trainset=run.trainset, **compile_args)


def _bootstrap(run: OptimizeRun) -> dspy.Module:
    init, _ = run.split_args(dspy.BootstrapFewShot)
    rounds = int(init.get("max_rounds", 1))
    run.reporter.phase("bootstrap", budget=len(run.trainset) * rounds)
    optimizer = dspy.BootstrapFewShot(metric=run.metric, **init)
    return optimizer.compile(run.student, trainset=run.trainset)


def _random_search(run: OptimizeRun) -> dspy.Module:
    cls = dspy.BootstrapFewShotWithRandomSearch
    init, compile_args = run.split_args(cls)
    init.setdefault("num_threads", run.num_threads)
    optimizer = cls(metric=run.metric, **init)
    seeds = list(range(-3, optimizer.num_candidate_sets))
    done = {int(seed): value for seed, value in run.checkpoint.items("candidate:").items()}
    valset = run.valset or run.trainset
    per_trial = len(run.trainset) + len(valset)
    best = max((v["score"] for v in done.values()), default=None)
    run.reporter.phase(
        "search",
        trials_total=len(seeds),
        trials_done=len(done),
        budget=per_trial * len(seeds),
        best_score=None if best is None else best / 100,
    )
    for seed in seeds:
        if seed in done:
            continue
        program = optimizer.compile(
            run.student, trainset=run.trainset, valset=valset, restrict=[seed], **compile_args
        )
        score = float(program.candidate_programs[0]["score"])
        done[seed] = {"score": score, "state": program.dump_state()}
        run.checkpoint.put(f"candidate:{seed}", done[seed])
        run.reporter.trial(score / 100)
        if optimizer.stop_at_score is not None and score >= optimizer.stop_at_score:
            break
    best_seed = max(done, key=lambda s: (done[s]["score"], -s))
    compiled = run.student.reset_copy()
    compiled.load_state(done[best_seed]["state"])
    run.extra["best_seed"] = best_seed
    run.extra["candidates"] = {str(s): v["score"] for s, v in sorted(done.items())}
    return compiled


def _mipro(run: OptimizeRun) -> dspy.Module:
    init, compile_args = run.split_args(dspy.MIPROv2)
    init.setdefault("num_threads", run.num_threads)
    if init.get("num_candidates") is not None and "auto" not in init:
        init["auto"] = None  # DSPy refuses num_candidates together with its default auto
    run.reporter.phase("search")  # Optuna's trial count is internal: metric calls are shown
    optimizer = dspy.MIPROv2(
        metric=run.metric, prompt_model=run.reflection_lm, task_model=run.lm, **init
    )
    return optimizer.compile(run.student, trainset=run.trainset, valset=run.valset, **compile_args)


def _gepa(run: OptimizeRun) -> dspy.Module:
    init, compile_args = run.split_args(dspy.GEPA)
    init.setdefault("num_threads", run.num_threads)
    run.reporter.phase("search", budget=init.get("max_metric_calls"))
    optimizer = dspy.GEPA(metric=gepa_metric(run.metric), reflection_lm=run.reflection_lm, **init)
    return optimizer.compile(run.student, trainset=run.trainset, valset=run.valset, **compile_args)


ADAPTERS: dict[str, Callable[[OptimizeRun], dspy.Module]] = {
    "LabeledFewShot": _labeled,
    "BootstrapFewShot": _bootstrap,
    "BootstrapFewShotWithRandomSearch": _random_search,
    "MIPROv2": _mipro,
    "GEPA": _gepa,
}
"""Optimizer name -> adapter."""
