"""Named tools, rewards and programs that DSPy steps refer to.

A pipeline travels as JSON, so a ``ReAct`` step names its tools, a ``BestOfN``/``Refine`` step
names its reward function and a program step names its program; the worker looks the names up
here. Producers look them up too, to refuse unknown names before anything is enqueued, so
register them in a module both import (the producer's module and the worker's). Packages can
also declare them as entry points, loaded on first lookup::

    [project.entry-points."dspex_jobs.tools"]
    lookup_order = "shop.tools:lookup_order"

Registering a program gives its signature too: the pipeline checks its inputs and outputs like
any other step's, without building it. A program factory is called once per worker process.

Example::

    from dspex_jobs.pipeline import components

    @components.tool("lookup_order")
    def lookup_order(order_id: str) -> str:
        "Find an order's status by id."
        ...

    @components.reward("non_empty")
    def non_empty(args: dict, prediction) -> float:
        return float(all(prediction.values()))
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Final, TypeVar

from dspex_jobs.errors import ConfigurationError

__all__ = [
    "KINDS",
    "Component",
    "lookup",
    "names",
    "program",
    "register",
    "reward",
    "tool",
    "unregister",
]

KINDS: Final = ("tool", "reward", "program")
"""What can be registered."""

_GROUPS: Final = {kind: f"dspex_jobs.{kind}s" for kind in KINDS}

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Component:
    """One registered tool, reward or program.

    Attributes:
        kind: ``tool``, ``reward`` or ``program``.
        name: What steps call it.
        function: The tool, the reward ``(args, prediction) -> float``, or the program
            factory ``() -> dspy.Module``.
        signature: A program's signature text (inputs and outputs), for validation.
    """

    kind: str
    name: str
    function: Callable[..., Any]
    signature: str | None = None


_lock = threading.Lock()
_registered: dict[tuple[str, str], Component] = {}
_loaded_groups: set[str] = set()


def register(
    kind: str,
    name: str,
    function: Callable[..., Any],
    *,
    signature: str | None = None,
    replace: bool = False,
) -> Component:
    """Register a component.

    Raises:
        ValueError: Unknown kind, a program without a signature, or a name already taken
            (pass ``replace=True`` to replace it).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown component kind {kind!r}; expected one of {', '.join(KINDS)}")
    if kind == "program" and not signature:
        raise ValueError(f"program {name!r} needs its signature, e.g. 'question -> answer'")
    component = Component(kind, name, function, signature)
    with _lock:
        if (kind, name) in _registered and not replace:
            raise ValueError(
                f"a {kind} named {name!r} is already registered; pass replace=True to replace it"
            )
        _registered[(kind, name)] = component
    return component


def tool(name: str | None = None, *, replace: bool = False) -> Callable[[F], F]:
    """Decorator: register a function as a ReAct tool (its docstring tells the LM what it does)."""

    def decorate(function: F) -> F:
        register("tool", name or function.__name__, function, replace=replace)
        return function

    return decorate


def reward(name: str | None = None, *, replace: bool = False) -> Callable[[F], F]:
    """Decorator: register ``(args, prediction) -> float`` for BestOfN and Refine."""

    def decorate(function: F) -> F:
        register("reward", name or function.__name__, function, replace=replace)
        return function

    return decorate


def program(name: str, signature: str, *, replace: bool = False) -> Callable[[F], F]:
    """Decorator: register a factory ``() -> dspy.Module`` whose module has ``signature``."""

    def decorate(function: F) -> F:
        register("program", name, function, signature=signature, replace=replace)
        return function

    return decorate


def lookup(kind: str, name: str) -> Component | None:
    """The component, looking among entry points when it was not registered directly.

    Raises:
        ConfigurationError: An entry point for it failed to load.
    """
    found = _registered.get((kind, name))
    if found is None and kind in KINDS:
        _load_entry_points(kind)
        found = _registered.get((kind, name))
    return found


def names(kind: str) -> list[str]:
    """The names registered for ``kind``, sorted (for error messages)."""
    return sorted(name for k, name in _registered if k == kind)


def unregister(kind: str, name: str) -> None:
    """Remove a component (tests; never an error when it is absent)."""
    with _lock:
        _registered.pop((kind, name), None)


def _load_entry_points(kind: str) -> None:
    group = _GROUPS[kind]
    with _lock:
        if group in _loaded_groups:
            return
        _loaded_groups.add(group)
    for entry_point in metadata.entry_points(group=group):
        try:
            loaded = entry_point.load()
        except Exception as exc:
            raise ConfigurationError(
                f"entry point {entry_point.name!r} ({entry_point.value}) in {group!r} failed "
                f"to load: {type(exc).__name__}: {exc}"
            ) from exc
        if isinstance(loaded, Component):
            register(kind, loaded.name, loaded.function, signature=loaded.signature, replace=True)
        elif kind != "program":
            register(kind, entry_point.name, loaded, replace=True)
