"""Find the runnable examples in the docs, and run one page's examples in order.

Imported by ``test_docs_examples.py`` (to find the blocks) and run as a script in a fresh
subprocess per page (to execute them)::

    python tests/integration/docs_examples.py docs/neural.md

What runs, in page order:

- every fenced ```` ```python ```` block, all in one namespace, so a later block may use the
  names an earlier one defined. Each block is compiled with the page's own path and line
  numbers, so a traceback points at the line in the Markdown file;
- in ```` ```console ```` and ```` ```bash ```` blocks, every line that starts with
  ``$ dspex-jobs `` (a trailing ``\\`` continues it), run as ``python -m dspex_jobs ...``
  without a shell. Long-running commands (``worker``, ``lm-server``, ``demo``) are not run:
  they never return. Other lines (output, other commands) are left alone.

A failure prints one line ``DOCS-EXAMPLE-FAILED <page> block <n> (<kind>, line <l>)``
followed by the traceback or the command's output, and exits 1.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LONG_RUNNING = frozenset({"worker", "lm-server", "demo"})
"""CLI subcommands that never return, so a console example of them is not run."""

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`\n]*)$")
FAILURE_MARK = "DOCS-EXAMPLE-FAILED"


@dataclass(frozen=True)
class Block:
    """One fenced code block: its position on the page, its language and its text."""

    number: int
    """1-based position among the page's fenced blocks (of any language)."""
    line: int
    """1-based line of the block's first code line."""
    language: str
    code: str

    def commands(self) -> list[tuple[int, list[str]]]:
        """The ``$ dspex-jobs ...`` commands of a console block: (line, argv after the name)."""
        found: list[tuple[int, list[str]]] = []
        lines = self.code.splitlines()
        i = 0
        while i < len(lines):
            text = lines[i].strip()
            start = i
            if text.startswith("$ dspex-jobs "):
                while text.endswith("\\") and i + 1 < len(lines):
                    i += 1
                    text = text[:-1] + " " + lines[i].strip()
                argv = shlex.split(text[len("$ dspex-jobs ") :], comments=True)
                if argv and argv[0] not in LONG_RUNNING:
                    found.append((self.line + start, argv))
            i += 1
        return found

    @property
    def runnable(self) -> bool:
        if self.language == "python":
            return True
        return self.language in ("console", "bash", "shell", "sh") and bool(self.commands())


def blocks(text: str) -> list[Block]:
    """Every fenced block of a Markdown text (indented fences, as in list items, included)."""
    found: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence = match["indent"], match["fence"]
        language = match["info"].strip().split(" ")[0].lower() if match["info"].strip() else ""
        body: list[str] = []
        i += 1
        while i < len(lines) and not (
            lines[i].strip().startswith(fence) and lines[i].strip().strip(fence[0]) == ""
        ):
            line = lines[i]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            i += 1
        start = i - len(body) + 1  # 1-based line of the first code line
        found.append(Block(len(found) + 1, start, language, "\n".join(body) + "\n"))
        i += 1
    return found


def pages() -> list[Path]:
    """README.md and every page under docs/, in a stable order."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def runnable_blocks(page: Path) -> list[Block]:
    """The blocks of ``page`` that the harness executes."""
    return [b for b in blocks(page.read_text()) if b.runnable]


def _fail(page: Path, block: Block, line: int, detail: str) -> None:
    rel = page.relative_to(ROOT) if page.is_relative_to(ROOT) else page
    print(
        f"{FAILURE_MARK} {rel} block {block.number} ({block.language}, line {line})",
        file=sys.stderr,
    )
    print(detail, file=sys.stderr)
    sys.exit(1)


def run_page(page: Path) -> None:
    """Run a page's examples in order in this process (its shell commands as children)."""
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for block in runnable_blocks(page):
        if block.language == "python":
            source = "\n" * (block.line - 1) + block.code  # line numbers of the page
            try:
                exec(compile(source, str(page), "exec"), namespace)
            except BaseException as exc:
                frames = [
                    f.lineno
                    for f in traceback.extract_tb(exc.__traceback__)
                    if f.filename == str(page) and f.lineno
                ]
                _fail(page, block, frames[-1] if frames else block.line, traceback.format_exc())
            continue
        for line, argv in block.commands():
            done = subprocess.run(
                [sys.executable, "-m", "dspex_jobs", *argv],
                capture_output=True,
                text=True,
                timeout=180,
            )
            print(f"$ dspex-jobs {shlex.join(argv)}\n{done.stdout}", end="")
            if done.returncode != 0:
                _fail(
                    page,
                    block,
                    line,
                    f"exit status {done.returncode}\n{done.stdout[-4000:]}{done.stderr[-4000:]}",
                )


if __name__ == "__main__":
    run_page(Path(sys.argv[1]).resolve())
