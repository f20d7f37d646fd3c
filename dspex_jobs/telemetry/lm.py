"""``dspex.lm.call``, ``dspex.cache.*``, ``dspex.breaker.state`` and ``dspex.session.*``:
the worker-side events that are not about a job's lifecycle. Cheap when nobody listens."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from dspex_jobs.telemetry.catalogue import (
    BREAKER_STATE,
    CACHE_HIT,
    CACHE_MISS,
    LM_CALL,
    SESSION_BIND,
    SESSION_REBIND,
)
from dspex_jobs.telemetry.context import current
from dspex_jobs.telemetry.events import emit, has_handlers

if TYPE_CHECKING:
    from dspex_jobs.errors import DSPexError
    from dspex_jobs.jobs import Job

__all__ = ["breaker_changed", "cache_lookup", "lm_call", "session_bound"]


def lm_call(
    job: Job,
    model: str,
    endpoint: str,
    duration_s: float,
    usage: Mapping[str, Mapping[str, Any]] | None,
    error: DSPexError | None,
    fallback: bool,
) -> None:
    """One LM attempt of ``job`` under ``model``; ``usage`` is DSPy's per-model token usage."""
    if not has_handlers(LM_CALL):
        return
    prompt = completion = total = 0
    for counts in (usage or {}).values():
        prompt += int(counts.get("prompt_tokens") or 0)
        completion += int(counts.get("completion_tokens") or 0)
        total += int(counts.get("total_tokens") or 0)
    emit(
        LM_CALL,
        {
            "duration_s": duration_s,
            "prompt_tokens": float(prompt),
            "completion_tokens": float(completion),
            "total_tokens": float(total or prompt + completion),
        },
        {
            "job_id": job.id,
            "kind": job.kind.value,
            "queue": job.target_queue,
            "trace_id": job.trace_id,
            "model": model,
            "endpoint": endpoint,
            "ok": error is None,
            "error_code": error.code if error else None,
            "fallback": fallback,
        },
    )


def cache_lookup(cache: str, hit: bool) -> None:
    """A lookup in one of the worker's caches (``module``: built DSPy modules)."""
    name = CACHE_HIT if hit else CACHE_MISS
    if has_handlers(name):
        emit(name, {}, {"cache": cache})


def breaker_changed(endpoint: str, state: str, previous: str) -> None:
    """A circuit breaker moved from ``previous`` to ``state``."""
    if has_handlers(BREAKER_STATE):
        emit(BREAKER_STATE, {}, {"endpoint": endpoint, "state": state, "previous": previous})


def session_bound(session_id: str, worker: str, previous: str | None) -> None:
    """A session's job ran on ``worker``; ``previous`` is where its last one ran."""
    if previous == worker:
        return
    name = SESSION_BIND if previous is None else SESSION_REBIND
    if has_handlers(name):
        metadata: dict[str, Any] = {
            "session_id": session_id,
            "worker": worker,
            "trace_id": current().get("trace_id"),
        }
        if previous is not None:
            metadata["previous"] = previous
        emit(name, {}, metadata)
