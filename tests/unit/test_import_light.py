"""Producers stay light: importing the package never pulls in worker-only weight."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("dspy", "litellm", "torch", "sentence_transformers", "numpy")


def test_import_dspex_jobs_imports_no_worker_only_module() -> None:
    code = (
        "import sys, dspex_jobs\n"
        "from dspex_jobs import Client, Signature\n"
        "Signature.parse('question: str, context: list[str] -> answer: str')\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"heavy modules imported: {out.stdout.strip()}"


def test_exported_names_match_all() -> None:
    import dspex_jobs

    public = {n for n in dir(dspex_jobs) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(dspex_jobs, n)).__name__ == "module"}
    assert public - modules == set(dspex_jobs.__all__)
    assert not [n for n in dspex_jobs.__all__ if n.startswith("_")]
