"""Split signature text into tokens, with one compiled pattern.

:func:`scan` runs one compiled pattern over the text once. :func:`offsets` runs it again to find
where each token starts, which only an error message needs, so the accepting path never tracks
positions. Most signatures are not tokenized whole at all: the quick path (:mod:`.quick`) cuts
them with string methods and tokenizes only each distinct type text, once (the parser caches it).

A token is a delimiter, a quoted string, or a *word*: a run of any other non-space characters.
Words are classified (identifier, integer, junk) by the parser. Whitespace is what
:meth:`str.isspace` says, as for :meth:`str.strip`, which the quick path uses.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["EscapeError", "decode_string", "offsets", "scan"]

_TOKEN: Final = re.compile(
    r"""\s*(
        [^\s,:\[\]|.'"-]+(?:-(?!>)[^\s,:\[\]|.'"-]*)*     # a word (see below)
      | [,:\[\]|]                                      # one-character delimiters
      | ->                                              # the arrow
      | -(?!>)[^\s,:\[\]|.'"-]*(?:-(?!>)[^\s,:\[\]|.'"-]*)*  # a word starting with '-'
      | \.\.\.|\.                                        # ellipsis, dot
      | '[^'\\\n\r]*(?:\\.[^'\\\n\r]*)*'                  # single-quoted string
      | "[^"\\\n\r]*(?:\\.[^"\\\n\r]*)*"                  # double-quoted string
      | \S                                              # an unterminated quote
    )""",
    re.VERBOSE,
)
"""One token: a word is a run of anything but whitespace, delimiters and quotes, where a '-'
never starts an arrow. Loops are unrolled (runs, not single characters) for speed."""

_ESCAPE: Final = re.compile(
    r"""\\(?:x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|N\{[^}]*\}|[0-7]{1,3}|[\\'"abfnrtv])"""
)
_SIMPLE_ESCAPES: Final = {
    "\\": "\\", "'": "'", '"': '"', "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r",
    "t": "\t", "v": "\v",
}  # fmt: skip


def scan(text: str) -> list[str]:
    """Tokens of ``text``, found by one pass of a regular expression."""
    return _TOKEN.findall(text)


def offsets(text: str) -> list[int]:
    """Where each token of ``text`` starts (0-based), in the order :func:`scan` yields them."""
    return [match.start(1) for match in _TOKEN.finditer(text)]


class EscapeError(ValueError):
    """A backslash escape in a string that Python would not accept.

    Args:
        message: What is wrong with it.
        index: Where the backslash is, counted from the token's opening quote.
    """

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.message = message
        self.index = index


def decode_string(token: str) -> str:
    """The value of a quoted string token, with Python's backslash escapes applied.

    Raises:
        EscapeError: For an escape Python does not define, or one naming no character.
    """
    body = token[1:-1]
    if "\\" not in body:
        return body
    parts: list[str] = []
    start = 0
    while (backslash := body.find("\\", start)) >= 0:
        parts.append(body[start:backslash])
        match = _ESCAPE.match(body, backslash)
        if match is None:
            raise EscapeError("unknown escape sequence in string", backslash + 1)
        parts.append(_unescape(match.group()[1:], backslash + 1))
        start = match.end()
    parts.append(body[start:])
    return "".join(parts)


def _unescape(escape: str, index: int) -> str:
    head = escape[0]
    if head in "xuU":
        code = int(escape[1:], 16)
        if code > 0x10FFFF:
            raise EscapeError("escape names no Unicode character", index)
        return chr(code)
    if head == "N":
        import unicodedata

        try:
            return unicodedata.lookup(escape[2:-1])
        except KeyError:
            raise EscapeError("unknown Unicode character name", index) from None
    if head in "01234567":
        return chr(int(escape, 8))
    return _SIMPLE_ESCAPES[head]
