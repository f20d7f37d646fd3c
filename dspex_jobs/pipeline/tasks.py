"""The pipeline's Celery tasks: ``dspex.pipeline.step`` (one leaf step) and
``dspex.pipeline.merge`` (the chord body that ends a ``Parallel``).

Both take ``(run id, node name)`` and do their work through :class:`.runner.NodeRun`. They are
registered on every app by :func:`dspex_jobs.tasks.register_tasks`; this module imports nothing
heavy, so producers can import it too.

Both acknowledge late and go back to the queue if the worker dies (a redelivered step that had
finished is not run twice); they never raise for a step's failure (the run records it), and
their Celery result is ignored (the run's state lives in Redis, :mod:`.state`).
"""

from __future__ import annotations

from typing import Any

from celery import Celery, Task

from dspex_jobs.errors import DSPexError
from dspex_jobs.pipeline.compiler import MERGE_TASK, SERIALIZER, STEP_TASK, release_results

__all__ = ["MERGE_TASK", "STEP_TASK", "PipelineTask", "register_pipeline_tasks", "run_node"]


class PipelineTask(Task[Any, Any]):
    """The pipeline tasks' base: after a task's chain goes on, forget the results it tracks.

    When a step is followed by a ``Parallel``, Celery applies that chord in this worker thread
    right after the step returns, and the chord's barrier subscribes to each header task's
    result channel. Our tasks never publish results (the run lives in Redis), so ``on_success``
    (called after the chain was dispatched) releases them at once.
    """

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        release_results(self.app)


def register_pipeline_tasks(app: Celery) -> None:
    """Register the pipeline tasks on ``app``."""
    for name in (STEP_TASK, MERGE_TASK):
        app.task(
            name=name,
            bind=True,
            base=PipelineTask,
            ignore_result=True,
            acks_late=True,
            reject_on_worker_lost=True,
            max_retries=None,  # each step's own policy decides
            throws=(DSPexError,),  # a typed failure is logged in one line
            serializer=SERIALIZER,  # retries and chained sends stay JSON (compiler.SERIALIZER)
        )(run_node)


def run_node(task: Task[Any, Any], run_id: str, name: str) -> dict[str, Any] | None:
    """Run one node of a pipeline run; the return value is a summary for Flower."""
    from dspex_jobs.pipeline.runner import NodeRun  # imports the worker context lazily

    return NodeRun(task, run_id, name).run()
