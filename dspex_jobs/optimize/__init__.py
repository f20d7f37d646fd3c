"""Optimization jobs on the ``optimizer`` queue.

Producer side (light): :mod:`.request` (the request and the optimizers' arguments),
:mod:`.datasets` (JSONL, CSV, Parquet, inline rows), :mod:`.handle` (submit, progress,
follow). Worker side (DSPy): :mod:`.runner` (the job body), :mod:`.adapters` (one per
optimizer, checkpoints), :mod:`.metrics` (metrics by name), :mod:`.progress` (progress
records, Flower state, cancellation). See docs/optimizer.md.
"""

from dspex_jobs.optimize.progress import PROGRESS_EVENT, Progress
from dspex_jobs.optimize.request import OPTIMIZERS, OptimizeRequest

__all__ = ["OPTIMIZERS", "PROGRESS_EVENT", "OptimizeRequest", "Progress"]
