"""Write docs/api_reference.md from the package's ``__all__`` lists and docstrings.

Run it after changing a public name or its docstring::

    python docs/gen_api_reference.py            # rewrite docs/api_reference.md
    python docs/gen_api_reference.py --check    # exit 1 if the committed page is stale

``tests/unit/test_api_reference.py`` fails while the committed page differs from what this
prints, so the reference cannot drift from the code. The page covers ``dspex_jobs.__all__``
(grouped by the comment headers of that list) and, for each module in :data:`MODULES` that
has an ``__all__``, every name it lists. A subpackage gains its section by itself once it
defines ``__all__``.
"""

from __future__ import annotations

import argparse
import enum
import importlib
import inspect
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "api_reference.md"

MODULES: list[tuple[str, str]] = [
    ("dspex_jobs.errors", "docs/troubleshooting.md"),
    ("dspex_jobs.signature", "docs/signatures.md"),
    ("dspex_jobs.templates", "docs/routing_and_templates.md"),
    ("dspex_jobs.router", "docs/routing_and_templates.md"),
    ("dspex_jobs.neural", "docs/neural.md"),
    ("dspex_jobs.neural.retrieval", "docs/neural.md"),
    ("dspex_jobs.protocol", "docs/protocol.md"),
    ("dspex_jobs.pipeline", "docs/examples/pipelines.md"),
    ("dspex_jobs.programs", "docs/optimizer.md"),
    ("dspex_jobs.optimize", "docs/optimizer.md"),
    ("dspex_jobs.batch", "docs/optimizer.md"),
    ("dspex_jobs.webhooks", "docs/webhooks.md"),
    ("dspex_jobs.telemetry", "docs/observability.md"),
    ("dspex_jobs.resilience", "docs/resilience.md"),
    ("dspex_jobs.lmserver", "docs/lm_server.md"),
    ("dspex_jobs.stack", "docs/getting_started.md"),
    ("dspex_jobs.keys", "docs/architecture.md"),
    ("dspex_jobs.settings", "docs/getting_started.md"),
]
"""Documented modules after the top level, with the page that explains them."""

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_QUOTED = re.compile(r"""(: |-> )(['"])(.*?)\2(?=[,)=]| =|$)""")
_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):`~?([^`]+)`")
_SECTION = re.compile(
    r"^(Args|Arguments|Returns|Raises|Yields|Attributes|Example|Examples|Note|Notes):\s*$"
)


# -- docstrings to Markdown ----------------------------------------------------------------


def _inline(text: str) -> str:
    """reST inline markup to Markdown: ``x`` -> `x`, :class:`~a.B` -> `B`."""
    text = _ROLE.sub(lambda m: f"`{m.group(1)}`", text)
    return text.replace("``", "`")


def _doc_to_markdown(doc: str) -> str:
    """A Google-style docstring as Markdown: sections become lists, examples code blocks."""
    out: list[str] = []
    lines = doc.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        section = _SECTION.match(line)
        if section:
            name = section.group(1)
            body: list[str] = []
            i += 1
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
                body.append(lines[i])
                i += 1
            while body and not body[-1].strip():
                body.pop()
            out.extend(_section(name, inspect.cleandoc("\n".join(body)).splitlines()))
            continue
        if line.rstrip().endswith("::"):
            out.append(_inline(line.rstrip()[:-1]))
            block: list[str] = []
            i += 1
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
                block.append(lines[i])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            out += ["", "```text", inspect.cleandoc("\n".join(block)), "```", ""]
            continue
        out.append(_inline(line))
        i += 1
    return "\n".join(out).strip()


def _section(name: str, body: list[str]) -> list[str]:
    if name in ("Example", "Examples"):
        return ["", f"**{name}:**", "", "```pycon", *body, "```", ""]
    items: list[str] = []
    for line in body:
        if not line.strip():
            continue
        if items and (line.startswith(" ") or name in ("Returns", "Yields", "Note", "Notes")):
            items[-1] += " " + line.strip()
        else:
            head, sep, rest = line.partition(": ")
            if sep and name in ("Args", "Arguments", "Raises", "Attributes") and " " not in head:
                items.append(f"- `{head}`: {rest.strip()}")
            else:
                items.append(f"- {line.strip()}")
    return ["", f"**{name}:**", "", *(_inline(item) for item in items), ""]


def _own_doc(obj: Any) -> str:
    """The object's own docstring (a class without one does not inherit its base's)."""
    doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc) if isinstance(doc, str) else ""


def _first_paragraph(doc: str) -> str:
    return _inline(" ".join(doc.split("\n\n", 1)[0].split()))


# -- objects -------------------------------------------------------------------------------


def _signature(obj: Callable[..., Any]) -> str:
    try:
        text = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"
    text = _QUOTED.sub(lambda m: m.group(1) + m.group(3), text)  # 'str | None' -> str | None
    return _ADDRESS.sub("", text)


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|")


def _fields_table(cls: type) -> list[str]:
    """A pydantic model's fields; a settings class's are its DSPEX_ variables."""
    settings = any(b.__name__ == "BaseSettings" for b in cls.__mro__)
    rows = [
        "| variable | type | default | what |" if settings else "| field | type | default | what |",
        "| --- | --- | --- | --- |",
    ]
    for name, field in cls.model_fields.items():  # type: ignore[attr-defined]
        kind = inspect.formatannotation(field.annotation).replace("typing.", "")
        if field.is_required():
            default = "required"
        elif field.default_factory is not None:
            default = "(computed)"
        else:
            default = f"`{field.default!r}`"
        label = f"DSPEX_{name.upper()}" if settings else name
        what = _cell(" ".join((field.description or "").split()))
        rows.append(f"| `{label}` | `{_cell(kind)}` | {default} | {_inline(what)} |")
    return [*rows, ""]


def _class_signature(cls: type) -> str:
    if issubclass(cls, enum.Enum) or _is_pydantic(cls):
        return ""
    init = cls.__dict__.get("__init__")
    if init is None and not _is_pydantic(cls) and not hasattr(cls, "__dataclass_fields__"):
        # Inherited constructor: show it only when a base in this package defines one.
        owner = next((b for b in cls.__mro__[1:] if "__init__" in b.__dict__), object)
        if not owner.__module__.startswith("dspex_jobs"):
            return ""
    return _signature(cls)


def _is_pydantic(cls: type) -> bool:
    return any(b.__module__.startswith("pydantic") for b in cls.__mro__[1:])


def _members(cls: type) -> Iterator[tuple[str, str, str]]:
    """(name, kind, summary) of the public members a class defines itself."""
    for name, value in cls.__dict__.items():
        if name.startswith("_"):
            continue
        if isinstance(value, property):
            yield name, "property", _first_paragraph(_own_doc(value.fget) if value.fget else "")
        elif isinstance(value, classmethod | staticmethod):
            func = value.__func__
            yield (
                name
                + _signature(func if isinstance(value, staticmethod) else func.__get__(None, cls)),
                "classmethod" if isinstance(value, classmethod) else "staticmethod",
                _first_paragraph(_own_doc(func)),
            )
        elif inspect.isfunction(value):
            yield (
                name + _signature(value).replace("(self, ", "(").replace("(self)", "()"),
                "method",
                _first_paragraph(_own_doc(value)),
            )


def _stable_repr(value: Any) -> str:
    """``repr`` with sets sorted and modules without their path, so the page is the same on
    every checkout and under any hash randomization."""
    if isinstance(value, set | frozenset):
        items = ", ".join(sorted(_stable_repr(v) for v in value))
        return f"{{{items}}}" if isinstance(value, set) else f"frozenset({{{items}}})"
    if isinstance(value, dict):
        return (
            "{" + ", ".join(f"{_stable_repr(k)}: {_stable_repr(v)}" for k, v in value.items()) + "}"
        )
    if isinstance(value, tuple):
        return (
            "(" + ", ".join(_stable_repr(v) for v in value) + ("," if len(value) == 1 else "") + ")"
        )
    if isinstance(value, list):
        return "[" + ", ".join(_stable_repr(v) for v in value) + "]"
    if inspect.ismodule(value):  # its repr holds the checkout's path
        return f"<module {value.__name__!r}>"
    return repr(value)


def _render_object(name: str, obj: Any, qualifier: str) -> list[str]:
    out = [f"### `{qualifier}{name}`", ""]
    if isinstance(obj, type):
        bases = ", ".join(b.__name__ for b in obj.__bases__ if b is not object)
        kind = "exception" if issubclass(obj, BaseException) else "class"
        out += [
            "```text",
            f"{kind} {name}{_class_signature(obj)}" + (f"  # bases: {bases}" if bases else ""),
            "```",
            "",
        ]
        code = obj.__dict__.get("code") if issubclass(obj, BaseException) else None
        if isinstance(code, str):
            retryable = "yes" if getattr(obj, "retryable", False) else "no"
            out += [f"Code `{code}`, retryable: {retryable}.", ""]
        doc = _own_doc(obj)
        if doc:
            out += [_doc_to_markdown(doc), ""]
        if _is_pydantic(obj):
            out += _fields_table(obj)
        if issubclass(obj, enum.Enum):
            out += ["Members: " + ", ".join(f"`{m.name}` = `{m.value!r}`" for m in obj), ""]
        members = list(_members(obj))
        if members and not issubclass(obj, BaseException):
            out += ["| member | kind | what |", "| --- | --- | --- |"]
            out += [f"| `{_cell(m)}` | {k} | {_cell(s)} |" for m, k, s in members]
            out.append("")
    elif inspect.isfunction(obj) or inspect.isbuiltin(obj):
        out += ["```text", f"def {name}{_signature(obj)}", "```", ""]
        doc = _own_doc(obj)
        if doc:
            out += [_doc_to_markdown(doc), ""]
    else:
        text = _ADDRESS.sub("", _stable_repr(obj))
        if len(text) > 200:
            text = text[:197] + "..."
        out += ["```text", f"{name} = {text}", "```", ""]
    return out


# -- the page ------------------------------------------------------------------------------


def _top_level_groups() -> list[tuple[str, list[str]]]:
    """``dspex_jobs.__all__`` split by the comment headers written inside it."""
    source = (ROOT / "dspex_jobs" / "__init__.py").read_text()
    body = source.split("__all__ = [", 1)[1].split("\n]", 1)[0]
    groups: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            groups.append((stripped.lstrip("# ").strip(), []))
        elif stripped.startswith('"'):
            if not groups:
                groups.append(("Public names", []))
            groups[-1][1].append(stripped.strip('",'))
    return groups


def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9 _-]", "", title.lower()).replace(" ", "-")


def render() -> str:
    """The whole page."""
    import dspex_jobs

    out = [
        "# API reference",
        "",
        "<!-- Generated by docs/gen_api_reference.py from docstrings: do not edit by hand. -->",
        "",
        "Generated from the package's `__all__` lists and docstrings; regenerate it with",
        "`python docs/gen_api_reference.py` (a test fails while it is stale). Producers need",
        "only the top-level package: `from dspex_jobs import Client`. How-to guides:",
        "[getting started](getting_started.md), [basic usage](examples/basic_usage.md),",
        "[advanced patterns](examples/advanced_patterns.md).",
        "",
        f"Version {dspex_jobs.__version__}.",
        "",
        "## Contents",
        "",
    ]
    groups = _top_level_groups()
    listed = {n for _, names in groups for n in names}
    missing = sorted(set(dspex_jobs.__all__) - listed)
    if missing:
        groups.append(("Other public names", missing))
    modules = []
    for module_name, page in MODULES:
        module = importlib.import_module(module_name)
        names = [n for n in getattr(module, "__all__", []) if not n.startswith("_")]
        if names:
            modules.append((module_name, page, module, names))
    out += [f"- [`dspex_jobs`](#dspex_jobs): {', '.join(t for t, _ in groups)}"]
    out += [f"- [`{m}`](#{_anchor(m)})" for m, _, _, _ in modules]
    out += ["", "## dspex_jobs", "", _first_paragraph(_own_doc(dspex_jobs)), ""]
    for title, names in groups:
        out += [f"### {title}", ""]
        out += ["- " + ", ".join(f"[`{n}`](#{_anchor(n)})" for n in names), ""]
        for name in names:
            out += [
                "#" + line if line.startswith("### ") else line
                for line in _render_object(name, getattr(dspex_jobs, name), "")
            ]
    top = set(dspex_jobs.__all__)
    for module_name, page, module, names in modules:
        out += [
            f"## {module_name}",
            "",
            _first_paragraph(_own_doc(module)),
            "",
            f"Guide: [{page}]({Path(page).relative_to('docs').as_posix()}).",
            "",
        ]
        again = [n for n in names if n in top and getattr(module, n) is getattr(dspex_jobs, n)]
        if again:
            out += [
                "Also exported by `dspex_jobs` (described above): "
                + ", ".join(f"`{n}`" for n in again)
                + ".",
                "",
            ]
        for name in names:
            if name not in again:
                out += _render_object(name, getattr(module, name), f"{module_name}.")
    text = "\n".join(out)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text() if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT.relative_to(ROOT)} is stale: run python docs/gen_api_reference.py")
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(ROOT)} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
