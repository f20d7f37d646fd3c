"""Put a replacement in front of a DSPy function, everywhere DSPy calls it by name.

The worker's memos (:mod:`.model_metadata`, :mod:`.type_adapters`) stand in front of DSPy
functions that it calls with the same arguments on every LM call. DSPy modules import
those functions by name (``from dspy.clients.model_metadata import model_info``), so the
replacement must take the place of each such binding, not only of the defining module's.
A binding that is not DSPy's original (a newer DSPy that moved the call, another patch) is
left alone: the memo is then just not used there.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["original", "rebind"]

logger = logging.getLogger("dspex_jobs.runtime")

_originals: dict[str, Callable[..., Any]] = {}
_lock = threading.Lock()


def original(module_name: str, name: str) -> Callable[..., Any] | None:
    """DSPy's own function that :func:`rebind` replaced, or ``None`` if it replaced none."""
    return _originals.get(f"{module_name}.{name}")


def rebind(
    module_name: str,
    name: str,
    replace: Callable[[Callable[..., Any]], Callable[..., Any]],
    callers: Sequence[str] = (),
) -> bool:
    """Replace ``module_name.name`` by ``replace(original)`` there and in ``callers``, once
    per process (later calls find it done); thread-safe.

    Returns ``False`` (and replaces nothing) if a module or the function is missing.
    """
    with _lock:
        if f"{module_name}.{name}" in _originals:
            return True
        return _replace(module_name, name, replace, callers)


def _replace(
    module_name: str,
    name: str,
    replace: Callable[[Callable[..., Any]], Callable[..., Any]],
    callers: Sequence[str],
) -> bool:
    try:
        defining = importlib.import_module(module_name)
        modules = [defining, *(importlib.import_module(caller) for caller in callers)]
        function = getattr(defining, name)
    except (ImportError, AttributeError) as exc:
        logger.debug("DSPy's %s.%s not found (%s); not replaced", module_name, name, exc)
        return False
    replacement = replace(function)
    _originals[f"{module_name}.{name}"] = function
    for module in modules:
        if getattr(module, name, None) is function:
            setattr(module, name, replacement)
        else:
            logger.debug("%s does not use %s by name; left alone", module.__name__, name)
    return True
