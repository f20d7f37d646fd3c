"""How each workload's worker pool is run and tuned: one profile per queue.

``dspex-jobs worker --queue general`` turns a profile into Celery worker options. The choices:

- ``general`` (LM calls): **threads**, 16 by default, in one process. An LM call waits on
  the network, so throughput is the number of calls in flight: measured on 2 CPUs with the
  LM server adding 100 ms per call (``bench/lm_throughput.py --pools``, 240 Predict jobs,
  median of 2 rounds): prefork ``-c2`` 17.5 jobs/s, prefork ``-c8`` 37.6, threads ``-c8``
  52.6, ``-c16`` 107, ``-c32`` 103 (CPU-bound by then). Prefork would need a process (a
  copy of DSPy, ~110 MiB resident) per call in flight. Thread pools ignore Celery's time
  limits, so the soft limit (300 s) and each job's deadline are enforced by the job itself
  (:mod:`dspex_jobs.deadlines`), as is cancellation; ``bench/memory.py`` shows a worker does
  not grow without child recycling. Pass ``--pool prefork`` for ``revoke(terminate=True)``.
- ``optimizer`` (hours-long batch optimization): prefork, one job per child and per
  prefetch, long soft/hard limits (6 h and 6 h 5 min, from settings), a fresh child per job
  so memory is returned. Past the soft limit the job fails with ``optimize_time_limit``; past
  the hard one the child is killed and the same failure is stored (:mod:`dspex_jobs.tasks`).
- ``neural`` (local models): **threads**, 32 by default, in one process that holds one copy
  of the model. Jobs hand their texts to the process's micro-batcher
  (:mod:`dspex_jobs.neural.batcher`), so jobs in flight together share model calls: many
  jobs per process is the point, and 32 lets one CPU batch (32 texts) take one text from each.
  Prefork would give each child its own model copy (memory times N) and only its own job to
  batch, and the children's torch thread pools would fight over the same cores. Measured on
  a 2-core CPU with one-text jobs (``bench/neural.py --pools --rounds 3``, one run, best of
  3): threads ``-c32`` with the batcher 126 jobs/s, prefork ``-c2`` 80, one text per model
  call 52; across quiet runs ``-c32`` gave 2.36-2.58x the one-text-per-call rate (median of
  back-to-back pairs; docs/neural.md "Benchmark" says where the rest of a job's time goes).
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

__all__ = ["PROFILES", "WORKER_QUEUES", "PoolProfile", "profile_for"]


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
            "--queues",
            self.queue,
            "--pool",
            pool or self.pool,
            "--concurrency",
            str(concurrency or settings.concurrency_for(self.queue)),
            "--prefetch-multiplier",
            str(self.prefetch_multiplier),
            # Unique per process, so two pools of one queue on a host never share a name
            # (or a direct queue, which session affinity routes to).
            "--hostname",
            hostname or f"{self.queue}-{os.getpid()}@%h",
            "--loglevel",
            loglevel or settings.log_level,
            "--task-events",
            "--without-mingle",
        ]
        soft_s, hard_s = self.time_limits(settings)
        if soft_s:
            argv += ["--soft-time-limit", str(soft_s)]
        if hard_s:
            argv += ["--time-limit", str(hard_s)]
        if self.max_tasks_per_child:
            argv += ["--max-tasks-per-child", str(self.max_tasks_per_child)]
        return argv

    def time_limits(self, settings: Settings) -> tuple[int | None, int | None]:
        """Celery's (soft, hard) time limits for this pool: the optimizer's come from
        settings (``DSPEX_OPTIMIZER_SOFT_TIME_LIMIT_S``, ``..._HARD_TIME_LIMIT_S``), the
        rest from the profile."""
        if self.queue == "optimizer":
            return (
                settings.optimizer_soft_time_limit_s or None,
                settings.optimizer_hard_time_limit_s,
            )
        return self.soft_time_limit_s, self.time_limit_s


PROFILES: dict[str, PoolProfile] = {
    "general": PoolProfile("general", "threads", 1, 300, 330, None),
    "optimizer": PoolProfile("optimizer", "prefork", 1, 6 * 3600, 6 * 3600 + 300, 1),
    "neural": PoolProfile("neural", "threads", 1, None, None, None),
    # Webhook deliveries wait on HTTP, not CPU: threads, many in flight, no DSPy loaded.
    "webhooks": PoolProfile("webhooks", "threads", 1, None, None, None),
}

WORKER_QUEUES: tuple[str, ...] = (*QUEUES, "webhooks")
"""Queues a ``dspex-jobs worker`` can consume: the workloads, and webhook deliveries."""


def profile_for(queue: str) -> PoolProfile:
    """The profile of a workload queue.

    Raises:
        ConfigurationError: ``queue`` is not one of the workload queues.
    """
    try:
        return PROFILES[queue]
    except KeyError:
        raise ConfigurationError(
            f"unknown queue {queue!r}; expected one of {', '.join(WORKER_QUEUES)}"
        ) from None
