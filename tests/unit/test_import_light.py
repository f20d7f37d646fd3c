"""Producers stay light: importing the package never pulls in worker-only weight.

``import dspex_jobs`` imports nothing but the version (PEP 562 lazy exports, see the package's
``__init__``); ``from dspex_jobs import Client`` imports what a Client needs and none of the
worker-only or optional parts. These tests check which modules get imported, never how long
it takes: bench/imports.py measures the time.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import dspex_jobs

HEAVY = ("dspy", "litellm", "torch", "sentence_transformers", "numpy")

INIT = Path(dspex_jobs.__file__)


def _imported_after(code: str, packages: tuple[str, ...]) -> list[str]:
    """The modules in ``packages`` (or under them) a fresh interpreter holds after ``code``."""
    script = (
        f"import sys\n{code}\n"
        f"print(','.join(sorted(m for m in sys.modules if m in {packages!r} "
        f"or m.startswith({tuple(p + '.' for p in packages)!r}))))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_import_dspex_jobs_imports_no_worker_only_module() -> None:
    code = (
        "import dspex_jobs\n"
        "from dspex_jobs import Client, Signature\n"
        "Signature.parse('question: str, context: list[str] -> answer: str')"
    )
    assert _imported_after(code, HEAVY) == []


def test_constructing_a_client_imports_no_worker_only_module() -> None:
    # Given a producer that builds a Client (no Redis needed until it submits)
    code = "from dspex_jobs import Client\nClient().close()"
    assert _imported_after(code, (*HEAVY, "jinja2")) == []


def test_import_dspex_jobs_imports_only_the_version() -> None:
    # The public names load on first use: the bare import pays for no submodule, no Celery
    imported = _imported_after("import dspex_jobs", ("dspex_jobs", "celery", "redis", "pydantic"))
    assert imported == ["dspex_jobs", "dspex_jobs._version"]


def test_importing_client_skips_the_optional_parts() -> None:
    # Given what `from dspex_jobs import Client` imports, expect none of the parts a Client
    # imports where they are used (embed/index, webhooks, optimizer, batch, pipelines)
    optional = (
        "dspex_jobs.batch",
        "dspex_jobs.neural",
        "dspex_jobs.optimize",
        "dspex_jobs.pipeline",
        "dspex_jobs.webhooks",
    )
    assert _imported_after("from dspex_jobs import Client", optional) == []


def test_exported_names_match_all() -> None:
    public = {n for n in dir(dspex_jobs) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(dspex_jobs, n)).__name__ == "module"}
    assert public - modules == set(dspex_jobs.__all__)
    assert not [n for n in dspex_jobs.__all__ if n.startswith("_")]


def test_each_public_name_is_the_object_its_submodule_defines() -> None:
    # Given the lazy table, expect every public name in it, once, resolving to its source
    table = dspex_jobs._EXPORTS
    assert sorted(table) == sorted(dspex_jobs.__all__)
    for name, module in table.items():
        source = importlib.import_module(module, "dspex_jobs")
        assert getattr(dspex_jobs, name) is getattr(source, name), name


def test_type_checking_imports_match_the_lazy_table() -> None:
    # What mypy and IDEs read (the imports under TYPE_CHECKING) is what runs (_EXPORTS)
    tree = ast.parse(INIT.read_text())
    block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
    )
    imported = {
        alias.name: (node.module or "").removeprefix("dspex_jobs")
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert imported == {n: m.removeprefix("dspex_jobs") for n, m in dspex_jobs._EXPORTS.items()}


def test_unknown_name_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'dspex_jobs' has no attribute 'Nope'"):
        _ = dspex_jobs.Nope  # type: ignore[attr-defined]
    with pytest.raises(ImportError, match="cannot import name 'Nope'"):
        from dspex_jobs import Nope  # type: ignore[attr-defined]  # noqa: F401


def test_client_embed_default_timeout_is_the_neural_default() -> None:
    # Client.embed writes the default as a literal so the client does not import dspex_jobs.neural
    from dspex_jobs.client import Client
    from dspex_jobs.neural.api import DEFAULT_TIMEOUT_S

    default = inspect.signature(Client.embed).parameters["timeout_s"].default
    assert default == DEFAULT_TIMEOUT_S
