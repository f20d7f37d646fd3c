"""``pip install .`` builds a wheel that works without the repository.

The wheel is built from a copy of the source tree (what git tracks or would track), installed
into a scratch directory, and used from outside the checkout: every module imports from the
wheel, and the CLI reports the version written in ``dspex_jobs/_version.py``. Offline: the
build reuses this environment's setuptools (``--no-build-isolation``) and dependencies.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dspex_jobs._version import __version__
from dspex_jobs.protocol import _table

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

IMPORT_ALL = """
import importlib, importlib.resources, pkgutil, sys
import dspex_jobs
assert dspex_jobs.__file__.startswith(sys.argv[1]), dspex_jobs.__file__
names = [m.name for m in pkgutil.walk_packages(dspex_jobs.__path__, "dspex_jobs.")
         if not m.name.endswith("__main__")]
for name in names:
    module = importlib.import_module(name)
    assert module.__file__.startswith(sys.argv[1]), module.__file__
assert (importlib.resources.files("dspex_jobs") / "py.typed").is_file()
from dspex_jobs.protocol import _table
print(len(names), _table.COMPILED, dspex_jobs.__version__)
"""


def _source_tree(dest: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for raw in filter(None, listed):
        source = ROOT / raw.decode()
        if source.is_file():
            target = dest / raw.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def test_wheel_works_without_the_repository(tmp_path: Path) -> None:
    # Given a wheel built from a copy of the tree and installed into a scratch directory
    src, dist, site = tmp_path / "src", tmp_path / "dist", tmp_path / "site"
    _source_tree(src)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(dist)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    # (a wheel for this platform where setup.py built the C table helper, else a pure one)
    (wheel,) = dist.glob("dspex_jobs-*.whl")
    assert wheel.name.startswith(f"dspex_jobs-{__version__}-")
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    env = {**os.environ, "PYTHONPATH": str(site), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    # When every module is imported from it, outside the checkout
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL, str(site)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # Expect all of them to come from the wheel, the C helper built as it was for the
    # checkout (same machine, same compiler), and the CLI to print the one version
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-2:] == [str(_table.COMPILED), __version__]
    version = subprocess.run(
        [sys.executable, "-m", "dspex_jobs", "--version"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert version.returncode == 0 and version.stdout.strip().endswith(__version__)
