"""Run one job with real DSPy: build (or reuse) the module, call it under the job's LM.

DSPy is configured once per process (``dspy.configure`` may only be called from the thread
that first called it); each job then runs inside ``dspy.context(lm=...)``, which any thread
may use. History is off and usage tracking on, so a long-lived worker does not grow and every
result carries its token counts.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dspex_jobs.connections import REDIS_DOWN
from dspex_jobs.errors import LMError
from dspex_jobs.jobs import Job, LMOptions
from dspex_jobs.resilience.breaker import endpoint_id
from dspex_jobs.resilience.guard import GATE_SETTING, LMGate, LMGuard, RateLimitWait
from dspex_jobs.sessions import SessionState
from dspex_jobs.settings import Settings

if TYPE_CHECKING:
    from dspex_jobs.runtime.cache import SharedLMCache
from dspex_jobs.telemetry import lm as lm_events

__all__ = ["ChunkCallback", "RunOutcome", "Runtime"]

ChunkCallback = Callable[[str, str, bool], None]
"""Receives (output field, text, is_last) as a job's output streams."""


@dataclass(frozen=True)
class RunOutcome:
    """What a job produced."""

    outputs: dict[str, Any]
    usage: dict[str, dict[str, Any]]
    model: str | None


logger = logging.getLogger("dspex_jobs.runtime")

_configured_lock = threading.Lock()
_configured = False


def _prepare_environment(settings: Settings) -> None:
    # Both are read by LiteLLM / DSPy at import time, so they must be set before importing them.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    cache_dir = settings.dspy_cache_dir or os.path.join(
        os.path.expanduser("~"), ".cache", "dspex-jobs", "dspy"
    )
    os.environ.setdefault("DSPY_CACHEDIR", cache_dir)


class Runtime:
    """The DSPy side of one worker process."""

    def __init__(self, settings: Settings, guard: LMGuard | None = None) -> None:
        _prepare_environment(settings)
        import dspy

        from dspex_jobs.runtime.lm import LMFactory
        from dspex_jobs.runtime.model_metadata import install_model_info_memo
        from dspex_jobs.runtime.modules import ModuleCache
        from dspex_jobs.runtime.type_adapters import install_type_adapter_memo

        self.settings = settings
        self.guard = guard or LMGuard(None, None)
        self._dspy = dspy
        self.lms = LMFactory(settings)
        self.modules = ModuleCache(settings.module_cache_size)
        self.lm_cache = _shared_lm_cache(dspy, settings)
        _route_dspy_logs()
        install_model_info_memo()  # self-hosted model names cost DSPy a scan per call
        install_type_adapter_memo()  # DSPy builds a pydantic adapter per value it formats
        _configure_once(dspy, self.lms.get())

    def run(
        self,
        job: Job,
        on_chunk: ChunkCallback | None = None,
        session: SessionState | None = None,
        module: Any = None,
    ) -> RunOutcome:
        """Run a job: its outputs (JSON-able), LM usage by model, and the model that answered.

        Each candidate LM (the job's, then its fallbacks) is guarded by its endpoint's
        shared circuit breaker and rate limit, checked when its first LM call is due (a job
        answered from the shared cache is not held up by them: :class:`LMGate`); a
        retryable failure or an open breaker moves on to the next candidate.

        Args:
            job: The job to run.
            on_chunk: Called with (field, text, is_last) for each piece of output as the LM
                streams it; a field the LM did not stream (a non-streaming LM, a cache hit)
                arrives as one last chunk. ``None`` runs without streaming.
            session: The session the job belongs to: inputs it was not given come from the
                session's variables, and ``dspy.History`` inputs from its history.
            module: Run this module (a registered program's loaded version) instead of
                one built from the job's signature.

        Raises:
            DSPexError: Every failure, mapped to a typed error with a stable code (the last
                candidate's, when every candidate failed).
            RateLimitWait: The shared rate limit says to wait; the job should be parked.
        """
        from dspex_jobs.runtime.errors import map_exception

        try:
            if module is None:  # a registered program's job brings its loaded module
                module = self.modules.get(job.kind, job.signature or "", job.instructions)
            inputs = self._with_session(module, job.inputs, session) if session else job.inputs
        except Exception as exc:
            raise map_exception(exc, job_id=job.id) from exc
        candidates = self._candidates(job.lm)
        for position, options in enumerate(candidates):
            lm = self.lms.get(options)
            endpoint = endpoint_id(lm.model, lm.kwargs.get("api_base"))
            started = time.perf_counter()
            gate = self.guard.gate(endpoint)
            try:
                if not lm.cache:  # DSPy will not ask the shared cache first: check now
                    gate.check()
                with self._dspy.context(
                    lm=lm, track_usage=True, disable_history=True, **{GATE_SETTING: gate}
                ):
                    if on_chunk is None:
                        prediction = module(**inputs)
                    else:
                        prediction = self._stream(module, inputs, on_chunk)
            except RateLimitWait:
                raise
            except REDIS_DOWN:  # not the LM's fault: the task requeues the job
                raise
            except Exception as exc:
                error = map_exception(exc, job_id=job.id)
                lm_events.lm_call(
                    job,
                    lm.model,
                    endpoint,
                    time.perf_counter() - started,
                    None,
                    error,
                    position > 0,
                )
                self.guard.failed(endpoint, error)
                last = position == len(candidates) - 1
                if last or not (isinstance(error, LMError) and error.retryable):
                    raise error from exc
                logger.warning(
                    "job %s: %s failed (%s); falling back to %s",
                    job.id,
                    lm.model,
                    error.code,
                    candidates[position + 1].model,
                )
                continue
            outcome = self._outcome(prediction, lm.model, gate)
            lm_events.lm_call(
                job,
                lm.model,
                endpoint,
                time.perf_counter() - started,
                outcome.usage,
                None,
                position > 0,
            )
            return outcome
        raise AssertionError("unreachable: there is always at least one candidate")

    def _candidates(self, options: LMOptions) -> list[LMOptions]:
        """The job's LM options, then one per fallback model (job's, else settings')."""
        fallbacks = (
            options.fallbacks if options.fallbacks is not None else self.settings.lm_fallbacks
        )
        primary = options.model_copy(update={"fallbacks": None})
        return [primary] + [primary.model_copy(update={"model": m}) for m in fallbacks]

    def _outcome(self, prediction: Any, model: str, gate: LMGate) -> RunOutcome:
        from pydantic_core import to_jsonable_python

        outputs = to_jsonable_python(prediction.toDict(), fallback=str)
        usage = to_jsonable_python(prediction.get_lm_usage() or {}, fallback=str)
        usage = {str(m): dict(u) for m, u in usage.items()}
        tokens = sum(int(u.get("total_tokens") or 0) for u in usage.values())
        gate.succeeded(tokens)
        return RunOutcome(dict(outputs), usage, model)

    def _with_session(
        self, module: Any, inputs: dict[str, Any], session: SessionState
    ) -> dict[str, Any]:
        """Fill the inputs a session job was not given from the session."""
        filled = dict(inputs)
        _, predictor = next(iter(module.named_predictors()))
        for name, field in predictor.signature.input_fields.items():
            if name in filled:
                continue
            if field.annotation is self._dspy.History:
                filled[name] = self._dspy.History(messages=list(session.history))
            elif name in session.vars:
                filled[name] = session.vars[name]
        return filled

    def _stream(self, module: Any, inputs: dict[str, Any], on_chunk: ChunkCallback) -> Any:
        """Run ``module`` through ``dspy.streamify`` with a fresh listener per output field."""
        from dspy.streaming import StreamListener, StreamResponse

        fields = [
            name
            for _, predictor in module.named_predictors()
            for name in predictor.signature.output_fields
        ]
        listeners = [StreamListener(signature_field_name=name) for name in fields]
        program = self._dspy.streamify(module, stream_listeners=listeners, async_streaming=False)
        streamed: set[str] = set()
        prediction = None
        for item in program(**inputs):
            if isinstance(item, StreamResponse):
                streamed.add(item.signature_field_name)
                on_chunk(item.signature_field_name, item.chunk, item.is_last_chunk)
            elif isinstance(item, self._dspy.Prediction):
                prediction = item
        if prediction is None:
            raise RuntimeError("the stream ended without a prediction")
        for name in fields:
            if name not in streamed and name in prediction:
                on_chunk(name, str(prediction[name]), True)
        return prediction


def _shared_lm_cache(dspy: Any, settings: Settings) -> SharedLMCache:
    """This process's ``dspy.cache``: LM responses in Redis, shared with every worker."""
    from dspex_jobs.connections import process_redis
    from dspex_jobs.keys import Keys
    from dspex_jobs.lmcache import LMCacheStore
    from dspex_jobs.runtime.cache import install_shared_cache

    store = LMCacheStore(
        process_redis(settings),
        Keys(settings.key_prefix),
        settings.lm_cache_ttl_s,
        settings.lm_cache_max_entries,
    )
    return install_shared_cache(dspy, store, settings.lm_cache_max_entry_bytes)


def _configure_once(dspy: Any, lm: Any) -> None:
    """Process-wide defaults, set by the first thread that gets here."""
    global _configured
    with _configured_lock:
        if _configured:
            return
        try:
            dspy.configure(lm=lm, track_usage=True, disable_history=True)
        except RuntimeError as exc:  # another thread owns DSPy's settings: contexts still work
            logger.debug("dspy.configure skipped: %s", exc)
        _configured = True


def _route_dspy_logs() -> None:
    """DSPy's logger does not propagate; send its records to the worker's handlers."""
    dspy_logger = logging.getLogger("dspy")
    for handler in list(dspy_logger.handlers):
        if getattr(handler, "name", None) == "dspy_handler":
            dspy_logger.removeHandler(handler)
    dspy_logger.propagate = True
