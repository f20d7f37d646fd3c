"""`pip install .` must give a package that works without the repository.

Setuptools puts in the wheel only the packages it finds (folders with an ``__init__.py``)
and, of the other files, only those ``[tool.setuptools.package-data]`` names. A folder
without ``__init__.py`` or a data file nobody listed works from the checkout and is missing
from every install. The fast tests check the source tree against those two rules; the slow
one builds the wheel from a copy of the tree and compares its file list with the tree.
"""

from __future__ import annotations

import fnmatch
import importlib.machinery
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "dspex_jobs"


def _source_files() -> list[str]:
    """Every file of the package, relative to the repository root (caches left out)."""
    return sorted(
        path.relative_to(ROOT).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    )


def _package_data() -> dict[str, list[str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    data: dict[str, list[str]] = config["tool"]["setuptools"].get("package-data", {})
    return data


def test_every_folder_with_python_code_is_a_package() -> None:
    folders = {(ROOT / name).parent for name in _source_files() if name.endswith(".py")}
    missing = sorted(str(f.relative_to(ROOT)) for f in folders if not (f / "__init__.py").exists())
    assert not missing, f"no __init__.py (setuptools would leave these out): {missing}"


def test_every_data_file_is_named_by_package_data() -> None:
    data = _package_data()
    unlisted = []
    for name in _source_files():
        if name.endswith((".py", *importlib.machinery.EXTENSION_SUFFIXES)):  # code, or built
            continue
        path = Path(name)
        package = ".".join(path.parent.parts)
        patterns = data.get(package, []) + data.get("*", [])
        if not any(fnmatch.fnmatch(path.name, pattern) for pattern in patterns):
            unlisted.append(name)
    assert not unlisted, f"add to [tool.setuptools.package-data]: {unlisted}"


@pytest.mark.slow
def test_the_wheel_holds_every_file_of_the_package(tmp_path: Path) -> None:
    # Given a copy of what a clean checkout builds from (the checkout itself stays untouched)
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        PACKAGE, source / "dspex_jobs", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    # When pip builds the wheel (no build isolation: no network, the installed setuptools)
    out = tmp_path / "wheel"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            str(source),
            "-w",
            str(out),
        ],
        check=True,
        cwd=tmp_path,
        capture_output=True,
        timeout=110,
    )
    (wheel,) = out.glob("dspex_jobs-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    # Expect every file of the package in it, data files included, and the console script
    missing = [name for name in _source_files() if name not in names]
    assert not missing, f"missing from the wheel: {missing}"
    assert "dspex_jobs/py.typed" in names
    built = [n for n in names if n.startswith("dspex_jobs/protocol/_table_c.cpython")]
    assert built, "setup.py did not build the C table helper into the wheel"
    assert "dspex-jobs = dspex_jobs.cli:main" in scripts
