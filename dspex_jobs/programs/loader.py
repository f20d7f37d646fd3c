"""Worker side: build a program's DSPy module, load a stored version into it, cache it.

A stored version is loaded once per worker process and kept in a bounded LRU keyed by
``(name, version)``. Versions never change, so the cache never goes stale; an alias (``qa@
production``) is resolved per job with one ``HGET``, which is how a promote reaches every
worker at its next job without any broadcast.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import dspy

from dspex_jobs.errors import ProgramLoadError
from dspex_jobs.programs.classes import lookup_class
from dspex_jobs.programs.registry import ProgramRegistry
from dspex_jobs.programs.spec import ProgramRef, ProgramSpec, ProgramVersion

__all__ = ["ProgramCache", "build_module", "code_version", "load_version"]


def build_module(spec: ProgramSpec) -> dspy.Module:
    """A fresh, uncompiled module for ``spec``.

    Raises:
        ProgramLoadError: Its class is not registered here or does not build.
    """
    parsed = spec.parsed_signature()
    if spec.module == "predict":
        assert parsed is not None
        return dspy.Predict(parsed.to_dspy())
    if spec.module == "chain_of_thought":
        assert parsed is not None
        return dspy.ChainOfThought(parsed.to_dspy())
    registered = lookup_class(spec.module)
    options = dict(spec.options)
    if parsed is not None:
        options.setdefault("signature", parsed.to_dspy())
    try:
        module = registered.cls(**options)
    except Exception as exc:
        raise ProgramLoadError(
            f"program class {spec.module!r} did not build with options {sorted(options)}: {exc}",
            module=spec.module,
        ) from exc
    if not isinstance(module, dspy.Module):
        raise ProgramLoadError(
            f"program class {spec.module!r} is not a dspy.Module", module=spec.module
        )
    return module


def code_version(spec: ProgramSpec) -> str:
    """What code builds ``spec``: the class's code version, or the built-in module's name."""
    if spec.module in ("predict", "chain_of_thought"):
        return f"dspy.{spec.module}"
    return lookup_class(spec.module).code_version


def load_version(stored: ProgramVersion) -> dspy.Module:
    """Build the module of a stored version and load its JSON state into it.

    Raises:
        ProgramLoadError: The class is missing or the state does not fit it.
    """
    module = build_module(stored.spec)
    if stored.state:
        try:
            module.load_state(_without_lms(stored.state))
        except Exception as exc:
            raise ProgramLoadError(
                f"{stored.ref}: its stored state does not load into {stored.spec.module} "
                f"({type(exc).__name__}: {exc}); it was made by code version "
                f"{stored.metadata.get('code_version')!r}",
                ref=stored.ref,
            ) from exc
    return module


def _without_lms(state: Any) -> Any:
    """The state with every predictor's saved ``lm`` dropped: the worker's own LM (and its
    breakers, rate limits and credentials) always answers, whatever an imported file says.

    A predictor's state (a dict whose ``signature`` is a dict) is applied by ``setattr`` for
    each key DSPy does not handle itself, so a key starting with ``_`` (``__dict__``,
    ``_compiled``) is refused: an imported file sets data, never the module's internals.

    Raises:
        ValueError: A predictor state key starting with ``_`` (wrapped by :func:`load_version`).
    """
    if isinstance(state, dict):
        if isinstance(state.get("signature"), dict):  # a predictor's, not a demo's field
            private = sorted(str(key) for key in state if str(key).startswith("_"))
            if private:
                raise ValueError(f"predictor state keys may not start with '_': {private}")
            if state.get("lm") is not None:
                state = {**state, "lm": None}
        return {key: _without_lms(value) for key, value in state.items()}
    return state


class ProgramCache:
    """A bounded LRU of loaded program versions for one worker process."""

    def __init__(self, registry: ProgramRegistry, max_entries: int = 64) -> None:
        self.registry = registry
        self.max_entries = max_entries
        self._modules: OrderedDict[tuple[str, int], tuple[ProgramVersion, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0

    def get(self, ref: str) -> tuple[ProgramVersion, dspy.Module]:
        """The stored version ``ref`` names now, and its loaded module (shared: read only).

        Raises:
            ProgramNotFound: ``ref`` names nothing.
            ProgramLoadError: The version does not load.
        """
        parsed = ProgramRef.parse(ref)
        key = (parsed.name, self.registry.resolve(parsed))
        with self._lock:
            found = self._modules.get(key)
            if found is not None:
                self._modules.move_to_end(key)
                return found[0], found[1]
        stored = self.registry.load(*key)
        module = load_version(stored)
        with self._lock:
            self.loads += 1
            self._modules[key] = (stored, module)
            while len(self._modules) > self.max_entries:
                self._modules.popitem(last=False)
        return stored, module

    def __len__(self) -> int:
        return len(self._modules)
