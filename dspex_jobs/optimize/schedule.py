"""Nightly optimizations: named entries in a file, run by celery beat.

``DSPEX_NIGHTLY_OPTIMIZATIONS`` names a YAML (needs PyYAML) or JSON file (see
``ops/optimizer/nightly.yaml``)::

    optimizations:
      - name: qa-nightly
        program: qa
        signature: "question -> answer"
        optimizer: BootstrapFewShot
        trainset: /data/qa/train.jsonl
        valset: /data/qa/val.jsonl
        metric: exact_match
        args: {max_bootstrapped_demos: 4}
        promote_to: production
        min_score: 0.6
        cron: "0 2 * * *"          # or every_s: 86400

Each entry becomes a beat entry that sends ``dspex.optimize.nightly(name)``. That small task
(on the general queue) reads the file and the datasets afresh, and submits the optimization
with the idempotency key ``nightly:<name>:<UTC date>``, so a beat that fires twice (two beat
processes, a restart) still optimizes once a night. The new version is promoted only if the
run succeeds and reaches ``min_score``; a failed run emits ``dspex.optimizer.failed`` (with
``schedule``) and leaves the promoted version untouched.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from celery import Celery, Task
from pydantic import BaseModel, ConfigDict, Field, model_validator

from dspex_jobs.errors import ConfigurationError
from dspex_jobs.settings import Settings
from dspex_jobs.telemetry import emit

__all__ = [
    "NIGHTLY_TASK",
    "NightlyOptimization",
    "beat_entries",
    "load_schedule",
    "register_schedule_tasks",
    "run_nightly",
]

NIGHTLY_TASK = "dspex.optimize.nightly"
"""The task celery beat sends for each nightly entry."""

logger = logging.getLogger("dspex_jobs.optimize")


class NightlyOptimization(BaseModel):
    """One named nightly optimization."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
    program: str
    signature: str | None = None
    module: str | None = None
    optimizer: str
    trainset: str
    valset: str | None = None
    metric: str = "exact_match"
    args: dict[str, Any] = Field(default_factory=dict)
    reflection_lm: str | None = None
    promote_to: str | None = None
    min_score: float | None = Field(None, ge=0.0, le=1.0)
    cron: str | None = None
    every_s: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_schedule(self) -> NightlyOptimization:
        if (self.cron is None) == (self.every_s is None):
            raise ValueError(f"{self.name}: give exactly one of cron or every_s")
        if self.cron is not None and len(self.cron.split()) != 5:
            raise ValueError(
                f"{self.name}: cron {self.cron!r} needs 5 fields "
                "(minute hour day-of-month month day-of-week)"
            )
        return self


def load_schedule(path: str | Path) -> list[NightlyOptimization]:
    """The entries of a schedule file.

    Raises:
        ConfigurationError: The file is missing, does not parse, or an entry is wrong.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(
            f"DSPEX_NIGHTLY_OPTIMIZATIONS: cannot read {path}: {exc}"
        ) from None
    try:
        if file.suffix.lower() in (".yaml", ".yml"):
            import yaml  # PyYAML, only for YAML schedules

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:
        raise ConfigurationError(
            f"DSPEX_NIGHTLY_OPTIMIZATIONS: {path} does not parse: {exc}"
        ) from None
    entries = (data or {}).get("optimizations") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ConfigurationError(f"{path}: expected a top-level 'optimizations' list")
    found: list[NightlyOptimization] = []
    for position, entry in enumerate(entries):
        try:
            found.append(NightlyOptimization.model_validate(entry))
        except Exception as exc:
            raise ConfigurationError(f"{path}: optimizations[{position}]: {exc}") from None
    names = [e.name for e in found]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"{path}: entry names must be unique")
    return found


def beat_entries(settings: Settings) -> dict[str, dict[str, Any]]:
    """Celery ``beat_schedule`` entries for the nightly file (none when unset)."""
    if not settings.nightly_optimizations:
        return {}
    from celery.schedules import crontab

    entries: dict[str, dict[str, Any]] = {}
    for entry in load_schedule(settings.nightly_optimizations):
        if entry.cron is not None:
            minute, hour, day, month, weekday = entry.cron.split()
            schedule: Any = crontab(
                minute=minute, hour=hour, day_of_month=day, month_of_year=month, day_of_week=weekday
            )
        else:
            schedule = entry.every_s
        entries[f"dspex-nightly-{entry.name}"] = {
            "task": NIGHTLY_TASK,
            "schedule": schedule,
            "args": (entry.name,),
        }
    return entries


def register_schedule_tasks(app: Celery) -> None:
    """Register ``dspex.optimize.nightly`` on ``app``."""
    app.task(name=NIGHTLY_TASK, bind=True, acks_late=True, ignore_result=True)(run_nightly)


def run_nightly(task: Task[Any, Any], name: str) -> str | None:
    """Submit tonight's run of the named entry; returns its optimization job id."""
    from dspex_jobs.app import settings_of
    from dspex_jobs.client import Client

    settings = settings_of(task.app)
    try:
        if not settings.nightly_optimizations:
            raise ConfigurationError("DSPEX_NIGHTLY_OPTIMIZATIONS is not set on this worker")
        entry = {e.name: e for e in load_schedule(settings.nightly_optimizations)}.get(name)
        if entry is None:
            raise ConfigurationError(f"no nightly optimization named {name!r}")
        client = Client(settings, app=task.app)
        try:
            handle = client.optimize(
                program=entry.program,
                signature=entry.signature,
                module=entry.module,
                optimizer=entry.optimizer,
                trainset=entry.trainset,
                valset=entry.valset,
                metric=entry.metric,
                reflection_lm=entry.reflection_lm,
                promote_to=entry.promote_to,
                min_score=entry.min_score,
                schedule=entry.name,
                idempotency_key=f"nightly:{entry.name}:{time.strftime('%Y-%m-%d', time.gmtime())}",
                **entry.args,
            )
        finally:
            client.close()
    except Exception as exc:
        logger.error("nightly optimization %s could not be submitted: %s", name, exc)
        emit(
            "dspex.optimizer.failed",
            {"elapsed_s": 0.0},
            {
                "job_id": None,
                "program": None,
                "optimizer": None,
                "schedule": name,
                "error": f"{type(exc).__name__}: {exc}",
            },
        )
        raise
    logger.info("nightly optimization %s submitted as job %s", name, handle.id)
    return handle.id
