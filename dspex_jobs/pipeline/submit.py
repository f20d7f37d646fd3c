"""Submitting a pipeline run: check everything, store the run, send its canvas.

Everything that can be checked on the producer is checked before anything is stored or sent:
the pipeline itself (when it was built), the run's inputs (names and types, against the
signatures of the steps that read them) and their encoded size. Then one Redis transaction
stores the plan, the inputs and a ``pending`` record per step, and one ``apply_async`` sends
the canvas (:mod:`.compiler`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kombu.exceptions import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from dspex_jobs.errors import (
    BrokerUnavailable,
    PayloadError,
    PayloadTooLarge,
    PipelineValidationError,
)
from dspex_jobs.jobs import new_job_id
from dspex_jobs.pipeline.compiler import compile_canvas, release_results
from dspex_jobs.pipeline.events import emit_start
from dspex_jobs.pipeline.handle import PipelineHandle
from dspex_jobs.pipeline.pipeline import Pipeline
from dspex_jobs.pipeline.state import RunStore
from dspex_jobs.pipeline.webhook import check_run_webhook

if TYPE_CHECKING:
    from dspex_jobs.client import Client

__all__ = ["as_pipeline", "run_pipeline"]

_REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OperationalError, ConnectionError)

PipelineLike = Pipeline | Mapping[str, Any] | str | Path
"""A pipeline, its document (a mapping), or the path of a ``.yaml``/``.json`` file."""


def as_pipeline(pipeline: PipelineLike) -> Pipeline:
    """A :class:`Pipeline` from any :data:`PipelineLike`.

    Raises:
        PipelineValidationError: The document is wrong.
    """
    if isinstance(pipeline, Pipeline):
        return pipeline
    if isinstance(pipeline, Mapping):
        return Pipeline.from_dict(pipeline)
    if isinstance(pipeline, str | Path):
        return Pipeline.load(pipeline)
    raise PipelineValidationError(
        f"cannot run a {type(pipeline).__name__}: give a Pipeline, its document, or the path of one"
    )


def run_pipeline(
    client: Client,
    pipeline: PipelineLike,
    inputs: Mapping[str, Any],
    *,
    timeout_s: float | None = None,
    trace_id: str | None = None,
    webhook: str | None = None,
) -> PipelineHandle:
    """Check and start a run of ``pipeline`` (what :meth:`Client.run` does).

    Args:
        client: Whose app, Redis and settings to use.
        pipeline: What to run.
        inputs: The run's inputs.
        timeout_s: The run's deadline (default: the pipeline's ``timeout_s``).
        trace_id: A trace id to continue (a fresh one otherwise); every task of the run and
            every LM job it makes carries it.
        webhook: POST a signed JSON body here when the run ends, however it ends
            (default ``DSPEX_WEBHOOK_URL``; checked like a job's). See ``docs/webhooks.md``.

    Raises:
        ValidationError: ``field="webhook"``: a URL webhooks may not go to.
        PipelineValidationError: Missing or unknown inputs (naming the step that reads them).
        SignatureValidationError: An input of the wrong type.
        PayloadTooLarge: The inputs are over ``DSPEX_MAX_PAYLOAD_BYTES`` encoded.
        BrokerUnavailable: Redis could not be reached.
    """
    checked = as_pipeline(pipeline)
    url = check_run_webhook(webhook, client.settings)
    values = checked.check_inputs(inputs)
    _check_size(values, client.settings.max_payload_bytes)
    plan = checked.plan()
    run_id = new_job_id()
    trace = trace_id or new_job_id()
    limit_s = timeout_s if timeout_s is not None else checked.timeout_s
    if limit_s is not None and limit_s <= 0:
        raise PipelineValidationError("timeout_s must be positive", field="timeout_s")
    deadline_at = None if limit_s is None else time.time() + limit_s
    store = RunStore(client._redis, client._keys, client.settings.result_ttl_s)
    try:
        store.create(run_id, plan, values, trace_id=trace, deadline_at=deadline_at, webhook=url)
        compile_canvas(client.app, plan, run_id).apply_async()
        release_results(client.app)
    except _REDIS_DOWN as exc:
        raise BrokerUnavailable(
            f"cannot start pipeline {checked.name!r} on "
            f"{client.settings.redacted_redis_url()}: {exc}"
        ) from exc
    emit_start(run_id, checked.name, trace, len(plan.nodes))
    return PipelineHandle(run_id, client)


def _check_size(values: Mapping[str, Any], limit_bytes: int) -> None:
    try:
        size = len(json.dumps(values, separators=(",", ":")).encode())
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"the inputs cannot be encoded as JSON: {exc}") from None
    if size > limit_bytes:
        raise PayloadTooLarge(
            f"the pipeline's inputs are {size} bytes encoded, over the limit of {limit_bytes} "
            "(DSPEX_MAX_PAYLOAD_BYTES)",
            size=size,
            limit=limit_bytes,
        )
