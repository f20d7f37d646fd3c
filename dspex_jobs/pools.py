"""How each workload's worker pool is run and tuned: one profile per queue.

``dspex-jobs worker --queue general`` turns a profile into Celery worker options. The choices:

- ``general`` (LM calls): prefork, so Celery's time limits and ``revoke(terminate=True)``
  work (thread and solo pools silently ignore them); one job prefetched per process; children
  recycled after a number of jobs to bound any slow leak in provider clients.
- ``optimizer`` (hours-long batch optimization): prefork, one job per child and per
  prefetch, long soft/hard limits, a fresh child per job so memory is returned.
- ``neural`` (local models): **threads**, 32 by default, in one process that holds one copy
  of the model. Jobs hand their texts to the process's micro-batcher
  (:mod:`dspex_jobs.neural.batcher`), so jobs in flight together share model calls: many
  jobs per process is the point, and 32 lets one CPU batch (32 texts) take one text from each.
  Prefork would give each child its own model copy (memory times N) and only its own job to
  batch, and the children's torch thread pools would fight over the same cores. Measured on
  a 2-core CPU with one-text jobs (``bench/neural.py --pools``, one run, best of 5): threads
  ``-c32`` with the batcher 101 jobs/s, prefork ``-c2`` 48, one text per model call 45;
  across runs ``-c32`` gave 2.1-2.9x the one-text-per-call rate and ``-c16`` 2.1-2.5x.
  Thread pools ignore Celery's time limits, so none are set: a neural job is bounded by its
  size limits (``DSPEX_NEURAL_MAX_TEXTS``, ``DSPEX_NEURAL_MAX_TEXT_CHARS``), and job leases
  keep a long one from running twice.

Concurrency comes from settings (``DSPEX_<QUEUE>_CONCURRENCY``) unless given on the command
line. ``workers/`` holds the deployment glue (containers, env files) built on these.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from dspex_jobs.errors import ConfigurationError
from dspex_jobs.settings import QUEUES, Settings

__all__ = ["PROFILES", "PoolProfile", "profile_for"]


@dataclass(frozen=True, slots=True)
class PoolProfile:
    """Celery worker settings for one queue."""

    queue: str
    pool: str
    prefetch_multiplier: int
    soft_time_limit_s: int | None
    time_limit_s: int | None
    max_tasks_per_child: int | None

    def worker_argv(
        self,
        settings: Settings,
        *,
        concurrency: int | None = None,
        pool: str | None = None,
        hostname: str | None = None,
        loglevel: str | None = None,
    ) -> list[str]:
        """Arguments for ``app.worker_main`` (the same as ``celery worker`` takes)."""
        argv = [
            "worker",
            "--queues", self.queue,
            "--pool", pool or self.pool,
            "--concurrency", str(concurrency or settings.concurrency_for(self.queue)),
            "--prefetch-multiplier", str(self.prefetch_multiplier),
            # Unique per process, so two pools of one queue on a host never share a name
            # (or a direct queue, which session affinity routes to).
            "--hostname", hostname or f"{self.queue}-{os.getpid()}@%h",
            "--loglevel", loglevel or settings.log_level,
            "--task-events",
            "--without-mingle",
        ]
        if self.soft_time_limit_s:
            argv += ["--soft-time-limit", str(self.soft_time_limit_s)]
        if self.time_limit_s:
            argv += ["--time-limit", str(self.time_limit_s)]
        if self.max_tasks_per_child:
            argv += ["--max-tasks-per-child", str(self.max_tasks_per_child)]
        return argv


PROFILES: dict[str, PoolProfile] = {
    "general": PoolProfile("general", "prefork", 1, 300, 330, 1000),
    "optimizer": PoolProfile("optimizer", "prefork", 1, 6 * 3600, 6 * 3600 + 300, 1),
    "neural": PoolProfile("neural", "threads", 1, None, None, None),
}


def profile_for(queue: str) -> PoolProfile:
    """The profile of a workload queue.

    Raises:
        ConfigurationError: ``queue`` is not one of the workload queues.
    """
    try:
        return PROFILES[queue]
    except KeyError:
        raise ConfigurationError(
            f"unknown queue {queue!r}; expected one of {', '.join(QUEUES)}"
        ) from None
