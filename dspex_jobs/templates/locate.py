"""Where in a template something went wrong: line, column, and the line with a caret.

Jinja reports a line number only, and for an unclosed block it reports the *last* line (where
it ran out of template) rather than the tag that was left open. A user fixing a template wants
the column too, and the opening tag, so this module recovers both from the source and Jinja's
message: the offset in ``unexpected char '$' at 5``, the token it quotes (``got 'b'``,
``unknown tag 'foo'``, ``No filter named 'x'``), a name used on that line, or the innermost
block tag that was never closed. Lines and columns are 1-based.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

__all__ = ["Position", "name_position", "pointer", "syntax_error_position", "token_position"]

_TAG: Final = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)
_BLOCK_TAG: Final = re.compile(r"\{%[-+]?\s*(\w+)(.*?)[-+]?%\}", re.DOTALL)
_OPENERS: Final = frozenset(
    {"for", "if", "macro", "call", "filter", "block", "with", "autoescape", "trans", "set"}
)
_STRING: Final = r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\""
_AT_OFFSET: Final = re.compile(r" at (\d+)$")
_QUOTED: Final = re.compile(r"got '([^']+)'|unknown tag '(\w+)'|named '(\w+)'|unexpected '([^']+)'")
_END_TOKENS: Final = {"end of print statement": "}}", "end of statement block": "%}"}


class Position(NamedTuple):
    """A 1-based line and column in a template's source."""

    line: int
    column: int


def position_of(source: str, offset: int) -> Position:
    """The line and column of a 0-based character offset."""
    line_start = source.rfind("\n", 0, offset) + 1
    return Position(source.count("\n", 0, offset) + 1, offset - line_start + 1)


def pointer(source: str, where: Position | None) -> str:
    """`` at line L, column C`` plus the source line and a caret under the column."""
    if where is None:
        return ""
    lines = source.splitlines() or [""]
    text = lines[min(where.line, len(lines)) - 1]
    start = max(0, min(where.column - 40, len(text) - 80))  # keep long lines readable
    shown = text[start : start + 80]
    return (
        f" (line {where.line}, column {where.column})\n"
        f"  {shown}\n  {' ' * (where.column - 1 - start)}^"
    )


def name_position(source: str, line: int, name: str) -> Position:
    """Where variable ``name`` is used on ``line`` (in a tag; not in a string, not after a dot)."""
    return _find(source, line, rf"(?<![\w.]){re.escape(name)}(?!\w)")


def token_position(source: str, line: int, token: str) -> Position:
    """Where ``token`` (an attribute, operator, tag or filter name) is in a tag on ``line``."""
    escaped = re.escape(token)
    return _find(source, line, rf"(?<!\w){escaped}(?!\w)" if token.isidentifier() else escaped)


def _find(source: str, line: int, wanted: str) -> Position:
    # String literals are matched first, so that a name inside one is skipped.
    pattern = re.compile(f"{_STRING}|{wanted}")
    return _search_tags(source, line, pattern) or _first_tag(source, line)


def syntax_error_position(source: str, line: int | None, message: str) -> Position:
    """Best position for a Jinja ``TemplateSyntaxError`` with this ``line`` and ``message``."""
    line = line or 1
    at_offset = _AT_OFFSET.search(message)
    if at_offset:
        return position_of(source, int(at_offset.group(1)))
    if message.startswith("Unexpected end of template"):
        innermost = re.search(r"innermost block that needs to be closed is '(\w+)'", message)
        opened = unclosed_block(source, innermost.group(1) if innermost else None)
        if opened is not None:
            return opened
    if message.startswith(("unexpected end of template", "Missing end of")):
        opened = unclosed_tag(source)
        if opened is not None:
            return opened
    quoted = _QUOTED.search(message)
    if quoted:
        token = next(group for group in quoted.groups() if group)
        return token_position(source, line, _END_TOKENS.get(token, token))
    return _first_tag(source, line)


def unclosed_block(source: str, name: str | None = None) -> Position | None:
    """The innermost block tag (``{% for %}``, ``{% if %}``, ...) that is never closed."""
    stack: list[tuple[str, int]] = []
    for match in _BLOCK_TAG.finditer(source):
        keyword, rest = match.group(1), match.group(2)
        if keyword in _OPENERS and not (keyword == "set" and "=" in rest):
            stack.append((keyword, match.start()))
        elif keyword.startswith("end"):
            for i in range(len(stack) - 1, -1, -1):
                if stack[i][0] == keyword[3:]:
                    del stack[i:]
                    break
    for keyword, offset in reversed(stack):
        if name is None or keyword == name:
            return position_of(source, offset)
    return None


def unclosed_tag(source: str) -> Position | None:
    """The last ``{{``, ``{%`` or ``{#`` that has no closing delimiter."""
    closers = {"{{": "}}", "{%": "%}", "{#": "#}"}
    found: int | None = None
    for match in re.finditer(r"\{[{%#]", source):
        closer = closers[match.group()]
        if source.find(closer, match.end()) < 0:
            found = match.start()
            break
    return None if found is None else position_of(source, found)


def _search_tags(source: str, line: int, pattern: re.Pattern[str]) -> Position | None:
    for tag in _TAG.finditer(source):
        first = source.count("\n", 0, tag.start()) + 1
        if first > line:
            break
        for hit in pattern.finditer(source, tag.start() + 2, tag.end()):
            if hit.group().startswith(("'", '"')) and len(hit.group()) > 1:
                continue  # inside a string literal
            where = position_of(source, hit.start())
            if where.line == line:
                return where
    return None


def _first_tag(source: str, line: int) -> Position:
    for tag in _TAG.finditer(source):
        where = position_of(source, tag.start())
        if where.line >= line:
            return where if where.line == line else Position(line, 1)
    return Position(line, 1)
