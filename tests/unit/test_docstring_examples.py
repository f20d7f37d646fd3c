"""The examples in docstrings run, so the API reference built from them cannot rot.

``docs/gen_api_reference.py`` copies each docstring's ``Example:`` into
``docs/api_reference.md``; this runs them with :mod:`doctest`, in their module's namespace.
An example whose first line is marked ``# doctest: +SKIP`` is an illustration that needs a
running deployment (a ``client``): it is skipped whole. The examples on the pages in
``docs/`` run against a real stack in ``tests/integration/test_docs_examples.py``.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "dspex_jobs"
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules_with_examples() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__main__.py" or ">>>" not in path.read_text():
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_docstring_examples_run() -> None:
    # Given every docstring example that does not need a deployment
    ran, failures = 0, []
    for name in _modules_with_examples():
        module = importlib.import_module(name)
        for test in doctest.DocTestFinder(exclude_empty=True).find(module, name):
            if not test.examples or test.examples[0].options.get(doctest.SKIP):
                continue
            # When it runs in its module's namespace
            report: list[str] = []
            result = doctest.DocTestRunner(optionflags=FLAGS).run(test, out=report.append)
            ran += result.attempted
            if result.failed:
                failures.append("".join(report))
    # Expect every example to print what its docstring says
    assert failures == [], "\n".join(failures)
    assert ran > 0
