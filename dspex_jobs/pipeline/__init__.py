"""Pipelines: DSPy and native steps in sequence, in parallel, conditionally, mapped over lists,
compiled to Celery chains and chords and run by the workload queues' workers.

Example::

    from dspex_jobs import Client
    from dspex_jobs.pipeline import Dspy, Native, Parallel, Pipeline, Retry

    pipeline = Pipeline([
        Native("signature.validate", signature="question: str -> answer: str"),
        Parallel([
            Native("search", index="docs", k=5),                           # on neural
            Dspy("Predict", signature="question -> keywords: list[str]"),  # on general
        ]),
        Dspy("ChainOfThought", signature="question, context: list[str] -> answer",
             inputs={"context": "passages"}, on_error=Retry(2, backoff_s=0.5)),
    ])
    with Client() as client:
        handle = client.run(pipeline, question="What is DSPy?")
        print(handle.status().render())
        print(handle.result(timeout=60)["answer"])

Layout: the DSL (:mod:`.steps`, :mod:`.policy`, :mod:`.predicate`, :mod:`.operations`,
:mod:`.components`), its document form (:mod:`.document`), build-time checks
(:mod:`.validate`), the :class:`Pipeline` (:mod:`.pipeline`), the plan and canvas
(:mod:`.plan`, :mod:`.compiler`), the run in Redis (:mod:`.state`), the producer's side
(:mod:`.submit`, :mod:`.handle`) and the worker's (:mod:`.tasks`, :mod:`.runner`,
:mod:`.execute`, :mod:`.merge`, :mod:`.dspy_modules`). Importing this package does not import
DSPy. See ``docs/examples/pipelines.md``.
"""

from dspex_jobs.errors import (
    PipelineDeadlineExceeded,
    PipelineStepFailed,
    PipelineValidationError,
    StepTimeout,
)
from dspex_jobs.pipeline import components
from dspex_jobs.pipeline.compiler import MERGE_TASK, STEP_TASK, compile_canvas
from dspex_jobs.pipeline.events import START_EVENT, STEP_EVENT, STOP_EVENT
from dspex_jobs.pipeline.handle import (
    PipelineHandle,
    PipelineResult,
    PipelineStatus,
    StepStatus,
)
from dspex_jobs.pipeline.operations import OperationSpec, operation_spec, register_spec
from dspex_jobs.pipeline.pipeline import Pipeline
from dspex_jobs.pipeline.plan import Plan
from dspex_jobs.pipeline.policy import Fail, FailurePolicy, Fallback, Retry, Skip
from dspex_jobs.pipeline.predicate import Predicate
from dspex_jobs.pipeline.state import RunState, StepState
from dspex_jobs.pipeline.steps import Dspy, Map, Native, Parallel, Step, When
from dspex_jobs.pipeline.submit import run_pipeline

__all__ = [
    # Building pipelines
    "Dspy",
    "Map",
    "Native",
    "Parallel",
    "Pipeline",
    "Predicate",
    "Step",
    "When",
    # Failure policies
    "Fail",
    "FailurePolicy",
    "Fallback",
    "Retry",
    "Skip",
    # Operations, tools, rewards and programs
    "OperationSpec",
    "components",
    "operation_spec",
    "register_spec",
    # Running and following
    "PipelineHandle",
    "PipelineResult",
    "PipelineStatus",
    "RunState",
    "StepState",
    "StepStatus",
    "run_pipeline",
    # Compiling
    "MERGE_TASK",
    "STEP_TASK",
    "Plan",
    "compile_canvas",
    # Events
    "START_EVENT",
    "STEP_EVENT",
    "STOP_EVENT",
    # Errors
    "PipelineDeadlineExceeded",
    "PipelineStepFailed",
    "PipelineValidationError",
    "StepTimeout",
]
