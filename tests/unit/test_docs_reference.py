"""The reference pages stay true to the code: API reference, error codes, Redis keys, version."""

from __future__ import annotations

import importlib.util
import inspect
import re
import tomllib
from pathlib import Path
from types import ModuleType

from packaging.version import Version

import dspex_jobs
from dspex_jobs import _version, errors
from dspex_jobs.keys import Keys

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_api_reference", DOCS / "gen_api_reference.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_reference_is_current() -> None:
    # Given the generator, expect the committed page to be exactly what it writes now
    expected = _generator().render()
    current = (DOCS / "api_reference.md").read_text()
    assert current == expected, (
        "docs/api_reference.md is stale: run `python docs/gen_api_reference.py` and commit it"
    )


def test_api_reference_covers_every_public_name() -> None:
    text = (DOCS / "api_reference.md").read_text()
    missing = [n for n in dspex_jobs.__all__ if f"#### `{n}`" not in text]
    assert missing == []


def _error_classes() -> list[type[errors.DSPexError]]:
    return [
        c
        for _, c in inspect.getmembers(errors, inspect.isclass)
        if issubclass(c, errors.DSPexError) and c.__module__ == errors.__name__
    ]


def test_troubleshooting_explains_every_error_code() -> None:
    # Given every error class, expect a table row with its code and its class name
    text = (DOCS / "troubleshooting.md").read_text()
    rows = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^\| `([a-z_]+)` \| `([A-Za-z]+)` \|", text, flags=re.M)
    }
    missing = {c.code: c.__name__ for c in _error_classes() if rows.get(c.code) != c.__name__}
    assert missing == {}, f"add these codes to docs/troubleshooting.md: {missing}"


def test_troubleshooting_marks_exactly_the_retryable_codes() -> None:
    text = (DOCS / "troubleshooting.md").read_text()
    marked = {
        m.group(1) for m in re.finditer(r"^\| `([a-z_]+)` \| `[A-Za-z]+` \| R \|", text, flags=re.M)
    }
    assert marked == {c.code for c in _error_classes() if c.retryable}


def test_architecture_lists_every_redis_key_family() -> None:
    # Given each key builder, expect its key on the page, arguments as <placeholders>
    text = (DOCS / "architecture.md").read_text()
    keys = Keys()
    missing = []
    for name, method in inspect.getmembers(keys, inspect.ismethod):
        if name.startswith("_") or name.endswith("_pattern"):
            continue
        arity = len(inspect.signature(method).parameters)
        key = method(*["\0"] * arity)
        # Each argument may be written as any <placeholder>: dspex:index:<name>:meta
        pattern = "<[^<>`]+>".join(re.escape(part) for part in key.split("\0"))
        if not re.search(f"`{pattern}`", text):
            missing.append(key.replace("\0", "<...>"))
    assert missing == [], f"add these keys to docs/architecture.md: {missing}"


def test_version_lives_in_one_place() -> None:
    # Given pyproject.toml, expect the version to be read from dspex_jobs/_version.py
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    attr = project["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "dspex_jobs._version.__version__"
    assert dspex_jobs.__version__ == _version.__version__
    # And the changelog's newest section is that version
    changelog = (ROOT / "CHANGELOG.md").read_text()
    newest = re.search(r"^## \[?([0-9][^\] ]*)", changelog, flags=re.M)
    assert newest and newest.group(1) == Version(_version.__version__).base_version


def test_relative_links_in_the_docs_resolve() -> None:
    # Given every Markdown page, expect each relative link to name a file that exists
    pages = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted(DOCS.rglob("*.md"))]
    broken = []
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # not inside code
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            path = target.split("#", 1)[0]
            if not path or re.match(r"[a-z]+:", path):
                continue  # an anchor on the same page, or a URL
            if not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == [], "broken links:\n" + "\n".join(broken)
