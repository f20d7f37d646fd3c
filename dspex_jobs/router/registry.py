"""The operation registry: which implementations each operation has, and where they run.

An *operation* is a named capability (``signature.validate``, ``template.render``, ``predict``,
``metric.exact_match``); an *implementation* is one way to perform it, of one of two kinds:

* ``native``: plain Python that runs anywhere, producer or worker, without importing DSPy;
* ``dspy``: code that needs DSPy (and usually an LM), run by a worker on a workload queue
  (``general``, ``optimizer``, ``neural``).

Implementations are referenced by an import path (``"package.module:function"``) and imported
on first use, so registering the built-ins costs nothing and a producer never imports DSPy by
accident; a function can also be registered directly. Users add their own with
:meth:`Registry.implementation` (a decorator), :meth:`Registry.register`, or an entry point in
the ``dspex_jobs.operations`` group, loaded the first time an unknown operation is looked up::

    [project.entry-points."dspex_jobs.operations"]
    "acme.score" = "acme.metrics:score"     # a function: a native implementation
    "acme.rerank" = "acme.ops:RERANK"       # an Implementation, or a list of them

Registering the same (operation, name) twice is an error unless ``replace=True`` says so.
"""

from __future__ import annotations

import importlib
import logging
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import metadata
from typing import Any, Final, TypeVar

from dspex_jobs.errors import ConfigurationError, DuplicateImplementation, NoImplementation
from dspex_jobs.settings import QUEUES

__all__ = ["ENTRY_POINT_GROUP", "Implementation", "ImplementationKind", "Registry"]

logger = logging.getLogger("dspex_jobs.router")

ENTRY_POINT_GROUP: Final = "dspex_jobs.operations"
"""The entry-point group third-party packages add operations to."""

_OPERATION: Final = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_TARGET: Final = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")

F = TypeVar("F", bound=Callable[..., Any])


class ImplementationKind(StrEnum):
    """Where an implementation can run."""

    NATIVE = "native"
    """Anywhere, in process; never imports DSPy."""
    DSPY = "dspy"
    """In a worker with DSPy, on the implementation's queue."""


@dataclass(frozen=True, slots=True)
class Implementation:
    """One way to perform an operation.

    Attributes:
        operation: The operation's dotted name.
        name: Unique among the operation's implementations; defaults to the kind.
        kind: ``native`` or ``dspy``.
        target: ``"module:function"``: what is imported and called (workers import it too).
        queue: The workload queue a ``dspy`` implementation runs on; ``None`` for ``native``.
        unsupported: Capabilities this implementation declares it cannot handle, such as
            ``"type:dspy.Image"`` (see :func:`~dspex_jobs.router.strategy.requirements_of`).
        priority: Higher is tried first among implementations of the same kind.
        description: One line for listings and docs.
    """

    operation: str
    name: str
    kind: ImplementationKind
    target: str
    queue: str | None = None
    unsupported: frozenset[str] = frozenset()
    priority: int = 0
    description: str = ""
    function: Callable[..., Any] | None = field(default=None, compare=False, repr=False)

    def resolve(self) -> Callable[..., Any]:
        """The callable, importing ``target`` on first use.

        Raises:
            ConfigurationError: ``target`` cannot be imported.
        """
        function = self.function
        if function is None:
            function = _import_target(self.target)
            object.__setattr__(self, "function", function)  # a cache, not part of its identity
        return function


class Registry:
    """Operations and their implementations, safe to use from many threads.

    Args:
        entry_point_group: Where to look for operations this registry does not know; ``None``
            (the default for registries built in tests) looks nowhere.
    """

    def __init__(self, *, entry_point_group: str | None = None) -> None:
        self._lock = threading.RLock()
        self._operations: dict[str, tuple[Implementation, ...]] = {}
        self._entry_point_group = entry_point_group
        self._entry_points: dict[str, list[metadata.EntryPoint]] | None = None
        self.version = 0
        """Bumped on every change, so routers know when their cached decisions are stale."""

    # -- adding and removing -----------------------------------------------------------------

    def register(
        self,
        operation: str,
        function: Callable[..., Any] | None = None,
        *,
        kind: ImplementationKind | str = ImplementationKind.NATIVE,
        name: str | None = None,
        target: str | None = None,
        queue: str | None = None,
        unsupported: Iterable[str] = (),
        priority: int = 0,
        description: str = "",
        replace: bool = False,
    ) -> Implementation:
        """Add an implementation of ``operation``, given as a function or a ``target`` path.

        Args:
            operation: Dotted name, such as ``"metric.exact_match"``.
            function: The implementation itself (its import path becomes the ``target``).
            kind: ``"native"`` (the default) or ``"dspy"``.
            name: Unique among the operation's implementations (default: the kind).
            target: ``"module:function"`` to import on first use, instead of ``function``.
            queue: For ``dspy`` implementations: the workload queue (default ``general``).
            unsupported: Capabilities it cannot handle (``"type:dspy.Image"``).
            priority: Higher runs first among implementations of the same kind.
            description: One line for listings.
            replace: Replace an implementation registered under the same name.

        Returns:
            The registered implementation.

        Raises:
            DuplicateImplementation: ``name`` is taken and ``replace`` is false.
            ValueError: A malformed name, kind, target or queue.
        """
        impl_kind = _kind(kind)
        if (function is None) == (target is None):
            raise ValueError(f"register {operation!r} with a function or a target, not both")
        if function is not None:
            target = f"{function.__module__}:{function.__qualname__}"
            if impl_kind is ImplementationKind.DSPY and "<locals>" in target:
                raise ValueError(f"a dspy implementation must be importable by workers: {target}")
        if impl_kind is ImplementationKind.DSPY:
            queue = queue or "general"
        elif queue is not None:
            raise ValueError("native implementations run in process and take no queue")
        implementation = Implementation(
            operation=operation,
            name=name or impl_kind.value,
            kind=impl_kind,
            target=str(target),
            queue=queue,
            unsupported=frozenset(unsupported),
            priority=priority,
            description=description,
            function=function,
        )
        return self.add(implementation, replace=replace)

    def add(self, implementation: Implementation, *, replace: bool = False) -> Implementation:
        """Add a ready-made :class:`Implementation` (see :meth:`register` for the rules)."""
        _check(implementation)
        with self._lock:
            existing = self._operations.get(implementation.operation, ())
            names = [impl.name for impl in existing]
            if implementation.name in names:
                if not replace:
                    raise DuplicateImplementation(
                        f"operation {implementation.operation!r} already has an implementation "
                        f"named {implementation.name!r}; pass replace=True to replace it, or "
                        "give the new one another name",
                        operation=implementation.operation,
                        implementation=implementation.name,
                    )
                position = names.index(implementation.name)
                updated = (*existing[:position], implementation, *existing[position + 1 :])
            else:
                updated = (*existing, implementation)
            self._operations[implementation.operation] = updated
            self.version += 1
        return implementation

    def implementation(
        self,
        operation: str,
        *,
        kind: ImplementationKind | str = ImplementationKind.NATIVE,
        name: str | None = None,
        queue: str | None = None,
        unsupported: Iterable[str] = (),
        priority: int = 0,
        description: str = "",
        replace: bool = False,
    ) -> Callable[[F], F]:
        """Decorator form of :meth:`register`; returns the function unchanged.

        Example::

            @registry.implementation("metric.exact_match", name="strict")
            def strict_match(prediction: str, answers: str | list[str]) -> float: ...
        """

        def decorate(function: F) -> F:
            self.register(
                operation,
                function,
                kind=kind,
                name=name,
                queue=queue,
                unsupported=unsupported,
                priority=priority,
                description=description,
                replace=replace,
            )
            return function

        return decorate

    def unregister(self, operation: str, name: str | None = None) -> None:
        """Remove one implementation (by name), or the whole operation (``name=None``).

        Raises:
            NoImplementation: There is no such operation or implementation.
        """
        with self._lock:
            existing = self._operations.get(operation)
            if existing is None or (name is not None and name not in {i.name for i in existing}):
                what = operation if name is None else f"{operation}/{name}"
                raise NoImplementation(f"nothing registered as {what!r}", operation=operation)
            kept = tuple(impl for impl in existing if name is not None and impl.name != name)
            if kept:
                self._operations[operation] = kept
            else:
                del self._operations[operation]
            self.version += 1

    # -- looking up ------------------------------------------------------------------------

    def implementations(self, operation: str) -> tuple[Implementation, ...]:
        """The implementations of ``operation``, in registration order.

        An unknown operation is looked up among the entry points first.

        Raises:
            NoImplementation: Nothing implements ``operation``.
            ConfigurationError: An entry point for it failed to load.
        """
        found = self._operations.get(operation)
        if found is None and self._entry_point_group is not None:
            self._load_entry_points(operation)
            found = self._operations.get(operation)
        if not found:
            known = ", ".join(sorted(self._operations)) or "none"
            raise NoImplementation(
                f"unknown operation {operation!r}; registered operations: {known}",
                operation=operation,
            )
        return found

    def operations(self) -> list[str]:
        """Every registered operation, sorted (entry points not loaded yet are not listed)."""
        return sorted(self._operations)

    def __contains__(self, operation: object) -> bool:
        return operation in self._operations

    # -- entry points ----------------------------------------------------------------------

    def _load_entry_points(self, operation: str) -> None:
        with self._lock:
            if self._entry_points is None:
                group = metadata.entry_points(group=str(self._entry_point_group))
                self._entry_points = {}
                for entry_point in group:
                    self._entry_points.setdefault(entry_point.name, []).append(entry_point)
            pending = self._entry_points.pop(operation, [])
        for entry_point in pending:
            try:
                loaded = entry_point.load()
            except Exception as exc:
                raise ConfigurationError(
                    f"entry point {entry_point.name!r} ({entry_point.value}) in group "
                    f"{self._entry_point_group!r} failed to load: {type(exc).__name__}: {exc}",
                    operation=operation,
                    entry_point=entry_point.value,
                ) from exc
            self._add_loaded(operation, loaded, entry_point.value)
            logger.info("loaded operation %r from entry point %s", operation, entry_point.value)

    def _add_loaded(self, operation: str, loaded: Any, source: str) -> None:
        if isinstance(loaded, Implementation):
            loaded = [loaded]
        if callable(loaded):
            self.register(operation, loaded)
            return
        if not isinstance(loaded, list | tuple) or not all(
            isinstance(impl, Implementation) and impl.operation == operation for impl in loaded
        ):
            raise ConfigurationError(
                f"entry point {source} for {operation!r} must be a function, an Implementation "
                f"of {operation!r}, or a list of them; got {type(loaded).__name__}",
                operation=operation,
                entry_point=source,
            )
        for impl in loaded:
            self.add(impl)


def _kind(kind: ImplementationKind | str) -> ImplementationKind:
    try:
        return ImplementationKind(kind)
    except ValueError:
        raise ValueError(f"unknown implementation kind {kind!r}; expected native or dspy") from None


def _check(implementation: Implementation) -> None:
    if not _OPERATION.fullmatch(implementation.operation):
        raise ValueError(
            f"operation names are dotted identifiers, not {implementation.operation!r}"
        )
    if not implementation.name.isidentifier():
        raise ValueError(f"implementation names are identifiers, not {implementation.name!r}")
    if not _TARGET.fullmatch(implementation.target.replace("<locals>", "locals")):
        raise ValueError(
            f"target must look like 'package.module:function', not {implementation.target!r}"
        )
    if implementation.kind is ImplementationKind.DSPY and implementation.queue not in QUEUES:
        raise ValueError(
            f"unknown queue {implementation.queue!r} for a dspy implementation; "
            f"expected one of {', '.join(QUEUES)}"
        )


def _import_target(target: str) -> Callable[..., Any]:
    module_name, _, qualname = target.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(
            f"cannot import implementation {target!r}: {type(exc).__name__}: {exc}",
            target=target,
        ) from exc
    if not callable(found):
        raise ConfigurationError(f"implementation {target!r} is not callable", target=target)
    return found  # type: ignore[no-any-return]
