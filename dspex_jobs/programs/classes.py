"""DSPy module classes registered by name, so a program can be a class of your own.

Register with the decorator (in a module the workers import: ``DSPEX_PROGRAM_MODULES``) or an
entry point in the ``dspex_jobs.programs`` group::

    @program_class("rag", input_fields=("question",))
    class RAG(dspy.Module):
        def __init__(self): ...
        def forward(self, question): ...

The decorator itself imports nothing heavy; the class's own module imports DSPy. A class may
set ``code_version`` (a string) so that stored versions record which code made them.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any, TypeVar

from dspex_jobs.errors import ProgramLoadError

__all__ = [
    "ENTRY_POINT_GROUP",
    "RegisteredClass",
    "import_program_modules",
    "lookup_class",
    "program_class",
    "registered_classes",
]

ENTRY_POINT_GROUP = "dspex_jobs.programs"
"""Entry point group scanned for program classes (``name = "pkg.module:Class"``)."""

logger = logging.getLogger("dspex_jobs.programs")

C = TypeVar("C", bound=type)


@dataclass(frozen=True, slots=True)
class RegisteredClass:
    """A program class and what the registry needs to know about it."""

    name: str
    cls: type
    input_fields: tuple[str, ...]
    code_version: str


_classes: dict[str, RegisteredClass] = {}
_lock = threading.Lock()
_entry_points_loaded = False


def program_class(
    name: str, *, input_fields: Iterable[str] = (), code_version: str | None = None
) -> Callable[[C], C]:
    """Register a DSPy module class as program module ``name``.

    Args:
        name: What a :class:`~dspex_jobs.programs.ProgramSpec` calls it (``module=name``).
        input_fields: The inputs its ``forward`` takes (rows of a dataset must give them).
        code_version: Recorded with every stored version (default: the class's
            ``code_version`` attribute, else ``module:qualname``).
    """

    def decorate(cls: C) -> C:
        version = (
            code_version
            or str(getattr(cls, "code_version", ""))
            or f"{cls.__module__}:{cls.__qualname__}"
        )
        with _lock:
            _classes[name] = RegisteredClass(name, cls, tuple(input_fields), version)
        return cls

    return decorate


def registered_classes() -> dict[str, RegisteredClass]:
    """Every registered class by name (entry points included)."""
    _load_entry_points()
    with _lock:
        return dict(_classes)


def lookup_class(name: str) -> RegisteredClass:
    """The class registered as ``name``.

    Raises:
        ProgramLoadError: Nothing is registered under ``name`` in this process.
    """
    found = _classes.get(name)
    if found is None:
        _load_entry_points()
        found = _classes.get(name)
    if found is None:
        raise ProgramLoadError(
            f"no program class {name!r} is registered in this worker; register it with "
            "@program_class and list its module in DSPEX_PROGRAM_MODULES (or an entry point "
            f"in {ENTRY_POINT_GROUP!r})",
            module=name,
        )
    return found


def import_program_modules(modules: Iterable[str]) -> None:
    """Import the modules that register program classes (``DSPEX_PROGRAM_MODULES``).

    Raises:
        ProgramLoadError: A module does not import.
    """
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise ProgramLoadError(
                f"DSPEX_PROGRAM_MODULES: cannot import {module!r}: {exc}", module=module
            ) from exc


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls: Any = entry.load()
        except Exception:  # one broken plugin must not hide the others
            logger.exception("could not load program class entry point %s", entry.value)
            continue
        with _lock:
            _classes.setdefault(
                entry.name,
                RegisteredClass(
                    entry.name,
                    cls,
                    tuple(getattr(cls, "input_fields", ()) or ()),
                    str(getattr(cls, "code_version", "")) or entry.value,
                ),
            )
