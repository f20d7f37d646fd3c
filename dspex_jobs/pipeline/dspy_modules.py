"""DSPy modules beyond Predict and ChainOfThought, built in a worker and cached per process.

``ReAct`` gets the registered tools its step names, ``BestOfN`` and ``Refine`` wrap a
``Predict`` (or ``ChainOfThought``) with the registered reward, and a program step calls the
registered factory once. Modules are cached by everything that shapes them, like the runtime's
:class:`~dspex_jobs.runtime.modules.ModuleCache`. Each call runs inside
``dspy.context(lm=...)`` with the step's LM options, usage tracking on and history off.

Worker-only: this module imports DSPy.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any, Final

import dspy
from pydantic_core import to_jsonable_python

from dspex_jobs.errors import ConfigurationError
from dspex_jobs.pipeline import components
from dspex_jobs.pipeline.execute import StepOutcome
from dspex_jobs.pipeline.steps import Dspy

__all__ = ["MODULE_CACHE_SIZE", "build_module", "run_module"]

MODULE_CACHE_SIZE: Final = 128
"""Built modules kept per worker process."""

_lock = threading.Lock()
_modules: OrderedDict[str, dspy.Module] = OrderedDict()


def _component(kind: str, name: str) -> Any:
    found = components.lookup(kind, name)
    if found is None:
        raise ConfigurationError(
            f"this worker has no {kind} named {name!r}: register it (components.{kind}) in a "
            "module the worker imports, or as a dspex_jobs entry point",
            **{kind: name},
        )
    return found.function


def build_module(step: Dspy) -> dspy.Module:
    """The module a step runs, built on first use.

    Raises:
        ConfigurationError: A tool, reward or program the step names is not registered here.
    """
    options = step.module_options()
    key = json.dumps([options, step.signature, step.instructions], sort_keys=True, default=str)
    with _lock:
        module = _modules.get(key)
        if module is not None:
            _modules.move_to_end(key)
            return module
    module = _build(step, options)
    with _lock:
        _modules[key] = module
        while len(_modules) > MODULE_CACHE_SIZE:
            _modules.popitem(last=False)
    return module


def _build(step: Dspy, options: dict[str, Any]) -> dspy.Module:
    name = str(options["module"])
    if step.is_program:
        built = _component("program", name)()
        if not isinstance(built, dspy.Module):
            raise ConfigurationError(
                f"program {name!r} built a {type(built).__name__}, not a dspy.Module"
            )
        return built
    signature = step.parsed_signature().to_dspy()
    if name == "ReAct":
        tools = [_component("tool", tool) for tool in options["tools"]]
        return dspy.ReAct(signature, tools=tools, max_iters=int(options["max_iters"]))
    base = (
        dspy.ChainOfThought(signature)
        if options["base"] == "ChainOfThought"
        else dspy.Predict(signature)
    )
    wrapper = dspy.BestOfN if name == "BestOfN" else dspy.Refine
    return wrapper(
        module=base,
        N=int(options["n"]),
        reward_fn=_component("reward", str(options["reward"])),
        threshold=float(options["threshold"]),
    )


def run_module(runtime: Any, step: Dspy, values: dict[str, Any], job_id: str) -> StepOutcome:
    """Run the step's module under its LM; outputs and usage as JSON-able values.

    Raises:
        DSPexError: Every failure, typed as the runtime types a job's.
    """
    from dspex_jobs.runtime.errors import map_exception

    try:
        module = build_module(step)
        lm = runtime.lms.get(step.lm)
        with dspy.context(lm=lm, track_usage=True, disable_history=True):
            prediction = module(**values)
    except Exception as exc:
        raise map_exception(exc, job_id=job_id) from exc
    outputs = to_jsonable_python(prediction.toDict(), fallback=str)
    usage = to_jsonable_python(prediction.get_lm_usage() or {}, fallback=str)
    return StepOutcome(dict(outputs), {str(m): dict(u) for m, u in usage.items()}, lm.model)
