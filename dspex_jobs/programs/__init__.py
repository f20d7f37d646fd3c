"""Registered programs: DSPy modules by name, and a versioned registry of compiled ones.

- :mod:`.spec`: what a program is (:class:`ProgramSpec`), references (``qa@3``,
  ``qa@latest``, ``qa@production``) and stored versions (:class:`ProgramVersion`).
- :mod:`.registry`: the Redis registry (define, save, resolve, promote, export, import).
- :mod:`.classes`: your own DSPy module classes, registered by name (:func:`program_class`).
- :mod:`.loader` and :mod:`.execute`: worker side (DSPy): build, load state, cache per
  process, run ``program`` and ``program_batch`` jobs.

Importing this package imports no DSPy.
"""

from dspex_jobs.programs.classes import ENTRY_POINT_GROUP, program_class
from dspex_jobs.programs.registry import ProgramRegistry
from dspex_jobs.programs.spec import (
    BUILTIN_MODULES,
    EXPORT_FORMAT,
    ProgramRef,
    ProgramSpec,
    ProgramVersion,
)

__all__ = [
    "BUILTIN_MODULES",
    "ENTRY_POINT_GROUP",
    "EXPORT_FORMAT",
    "ProgramRef",
    "ProgramRegistry",
    "ProgramSpec",
    "ProgramVersion",
    "program_class",
]
