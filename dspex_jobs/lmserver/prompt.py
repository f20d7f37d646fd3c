"""Read a DSPy adapter prompt back into input values and output fields.

DSPy 3.4's ChatAdapter writes a system message that starts with::

    Your input fields are:
    1. `question` (str): the question
    2. `context` (list[str]):
    Your output fields are:
    1. `answer` (str):
    2. `label` (Literal['yes', 'no']):
    All interactions will be structured in the following way, ...

followed by a structure section with one ``[[ ## name ## ]]`` block per field, and a last
user message with the current inputs as ``[[ ## name ## ]]`` sections, then
"Respond with the corresponding output fields, ...". The JSONAdapter uses the same field
lists but expects a JSON object back; the XMLAdapter uses ``<name>...</name>`` blocks.
Few-shot demos and conversation history sit in earlier user/assistant turns and are
ignored here: only the last user message carries the inputs to answer.

:func:`parse_messages` never raises on a strange prompt: what it cannot recognise comes back
as a ``plain`` prompt (no fields), which the model answers from the last user message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from dspex_jobs.lmserver.fields import FieldSpec, field_spec

__all__ = ["InputField", "ParsedPrompt", "Style", "message_text", "parse_messages"]

Style = Literal["chat", "json", "xml", "plain"]

_INPUTS_HEADER = "Your input fields are:"
_OUTPUTS_HEADER = "Your output fields are:"
_STRUCTURE_HEADER = "All interactions will be structured"
_FIELD_LINE = re.compile(r"^\s*\d+\.\s+`([^`]+)`\s+\(")
_CHAT_HEADER = re.compile(r"\[\[ ## (\w+) ## \]\]")
_XML_BLOCK = re.compile(r"<(\w+)>\n?(.*?)\n?</\1>", re.DOTALL)
_NOTE = re.compile(r"\{(\w+)\}\s+# note: the value you produce (.+)$")
_JSON_LINE = re.compile(r'^\s*"(\w+)":\s*(".*")\s*,?\s*$')
_TRAILER = re.compile(r"\n\s*Respond with (?:the corresponding output fields|a JSON object)")
_NUMBERED_ITEM = re.compile(
    r"^\[\d+\] «([^\n]*)»$|^\[\d+\] «««\n(.*?)\n»»»$", re.DOTALL | re.MULTILINE
)
_LIST_TYPES = ("list", "List", "tuple", "Tuple", "set", "Set", "Sequence")
_RESERVED = {"completed"}


@dataclass(frozen=True)
class InputField:
    """One input value from the last user message.

    Attributes:
        name: Field name.
        type_name: Type as the system message rendered it (``str`` when unknown).
        text: The raw text of the section.
        items: The list items, when the value is a list (JSON array or DSPy's numbered
            ``[1] «...»`` form); None otherwise.
    """

    name: str
    type_name: str
    text: str
    items: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ParsedPrompt:
    """What the server understood of a chat request.

    Attributes:
        style: ``chat`` (``[[ ## f ## ]]`` answer), ``json`` (JSON object), ``xml``
            (``<f>`` tags) or ``plain`` (no DSPy fields found).
        inputs: Input values, in prompt order.
        outputs: Output fields to produce, in prompt order.
        instructions: The signature's instructions, when found.
        last_user_text: Text of the last user message.
    """

    style: Style
    inputs: tuple[InputField, ...] = ()
    outputs: tuple[FieldSpec, ...] = ()
    instructions: str = ""
    last_user_text: str = ""


def message_text(message: Any) -> str:
    """The text of one chat message (string content or a list of text parts)."""
    if not isinstance(message, Mapping):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            str(part.get("text", ""))
            for part in content
            if isinstance(part, Mapping) and part.get("type") in ("text", "input_text")
        ]
        return "\n".join(texts)
    return ""


def _type_after(line: str, start: int) -> tuple[str, str]:
    """Read a balanced ``(type)`` beginning at ``start``; returns (type, rest of line)."""
    depth, quote = 0, ""
    for i in range(start, len(line)):
        ch = line[i]
        if quote:
            if ch == quote and line[i - 1] != "\\":
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
            if depth == 0:
                return line[start + 1 : i], line[i + 1 :].lstrip(":").strip()
    return line[start + 1 :].rstrip("):"), ""


def _declared_fields(block: str) -> list[tuple[str, str, str]]:
    """``(name, type, description)`` for each numbered field line of a field list."""
    fields: list[tuple[str, str, str]] = []
    for line in block.splitlines():
        match = _FIELD_LINE.match(line)
        if match:
            type_name, desc = _type_after(line, match.end() - 1)
            fields.append((match.group(1), type_name.strip() or "str", desc))
        elif fields and line.strip() and not line.startswith("Constraints:"):
            name, type_name, desc = fields[-1]
            fields[-1] = (name, type_name, (desc + " " + line.strip()).strip())
    return fields


def _notes(system: str) -> dict[str, str]:
    notes: dict[str, str] = {}
    for raw in system.splitlines():
        line = raw
        json_line = _JSON_LINE.match(raw)
        if json_line:
            try:
                line = str(json.loads(json_line.group(2)))
            except ValueError:
                line = raw
        match = _NOTE.search(line)
        if match:
            notes.setdefault(match.group(1), match.group(2).strip())
    return notes


def _list_items(text: str, type_name: str) -> tuple[str, ...] | None:
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            value = json.loads(stripped)
        except ValueError:
            value = None
        if isinstance(value, list):
            return tuple(v if isinstance(v, str) else json.dumps(v) for v in value)
    numbered = [a or b for a, b in _NUMBERED_ITEM.findall(stripped)]
    if numbered:
        return tuple(_dedent_blob(item) for item in numbered)
    if type_name.split("[", 1)[0].rsplit(".", 1)[-1] in _LIST_TYPES:
        if stripped in ("", "N/A", "[]"):
            return ()
        if stripped.startswith("«") and stripped.endswith("»"):
            return (stripped.strip("«»").strip(),)
        return (stripped,)
    return None


def _dedent_blob(item: str) -> str:
    """Undo the four-space indent DSPy gives the lines of a multi-line ``«««`` blob."""
    return "\n".join(line[4:] if line.startswith("    ") else line for line in item.split("\n"))


def _sections(text: str, style: Style) -> list[tuple[str, str]]:
    trailer = _TRAILER.search(text)
    if trailer:
        text = text[: trailer.start()]
    if style == "xml":
        return [(m.group(1), m.group(2).strip()) for m in _XML_BLOCK.finditer(text)]
    matches = list(_CHAT_HEADER.finditer(text))
    sections = []
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        sections.append((match.group(1), text[match.end() : end].strip()))
    return sections


def _style(system: str, user: str, outputs: Sequence[str], response_format: Any) -> Style:
    if not outputs:
        return "json" if response_format else "plain"
    if (
        response_format
        or "Outputs will be a JSON object" in system
        or ("Respond with a JSON object" in user)
    ):
        return "json"
    first = outputs[0]
    if f"[[ ## {first} ## ]]" not in system and f"<{first}>" in system:
        return "xml"
    return "chat"


def _split_system(system: str) -> tuple[str, str, str]:
    """(input field block, output field block, rest) of a DSPy system message."""
    if _INPUTS_HEADER not in system or _OUTPUTS_HEADER not in system:
        return "", "", system
    _, _, after_inputs = system.partition(_INPUTS_HEADER)
    inputs_block, _, after_outputs = after_inputs.partition(_OUTPUTS_HEADER)
    outputs_block, sep, rest = after_outputs.partition(_STRUCTURE_HEADER)
    return inputs_block, outputs_block, sep + rest


def _instructions(rest: str) -> str:
    marker = "your objective is:"
    if marker not in rest:
        return ""
    return " ".join(rest.split(marker, 1)[1].split())


def parse_messages(messages: Sequence[Any], response_format: Any = None) -> ParsedPrompt:
    """Understand an OpenAI chat request written by a DSPy adapter.

    Args:
        messages: The request's ``messages`` (dicts with ``role`` and ``content``).
        response_format: The request's ``response_format``, if any (JSONAdapter sends one).

    Returns:
        The prompt's style, input values and output fields; a ``plain`` prompt when no
        DSPy structure is found.
    """
    system = "\n".join(
        message_text(m)
        for m in messages
        if isinstance(m, Mapping) and m.get("role") in ("system", "developer")
    )
    users = [m for m in messages if isinstance(m, Mapping) and m.get("role") == "user"]
    last_user = (
        message_text(users[-1]) if users else (message_text(messages[-1]) if messages else "")
    )
    inputs_block, outputs_block, rest = _split_system(system)
    declared_in = _declared_fields(inputs_block)
    declared_out = [f for f in _declared_fields(outputs_block) if f[0] not in _RESERVED]
    if not declared_out:
        # Not DSPy's field lists: fall back to headers that the user message does not fill.
        in_user = {name for name, _ in _sections(last_user, "chat")}
        declared_out = [
            (name, "str", "")
            for name in dict.fromkeys(_CHAT_HEADER.findall(system))
            if name not in in_user and name not in _RESERVED
        ]
    style = _style(system, last_user, [f[0] for f in declared_out], response_format)
    notes = _notes(system)
    outputs = tuple(field_spec(n, t, notes.get(n, ""), d) for n, t, d in declared_out)
    types = {name: type_name for name, type_name, _ in declared_in}
    inputs = (
        tuple(
            InputField(
                name, types.get(name, "str"), text, _list_items(text, types.get(name, "str"))
            )
            for name, text in _sections(last_user, "xml" if style == "xml" else "chat")
            if name not in _RESERVED
        )
        if style != "plain"
        else ()
    )
    return ParsedPrompt(
        style=style,
        inputs=inputs,
        outputs=outputs,
        instructions=_instructions(rest),
        last_user_text=last_user,
    )
