"""Batch inference over datasets with a registered program: parallel chunks, results in
input order, per-row errors, progress, resume (:mod:`.runner`). Light: no DSPy."""

from dspex_jobs.batch.runner import BatchProgress, BatchReport, render_batch_progress, run_batch

__all__ = ["BatchProgress", "BatchReport", "render_batch_progress", "run_batch"]
