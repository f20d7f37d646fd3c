"""``extractive-minilm``: answers built from the inputs by embedding similarity.

This is not a language model. It never writes new text: it splits the input fields into
sentences, embeds them with all-MiniLM-L6-v2, and answers each output field by type:

========================  ===========================================================
``str``                   the input sentence most similar to the question
``float``                 that similarity (cosine, clamped to [0, 1])
``bool``                  whether that similarity reaches ``bool_threshold``
``Literal``/enum          the allowed label whose embedding is nearest the question
``int``                   the first integer in the most similar sentence that has one
``list[str]``             the ``top_k`` most similar sentences
``dict``/models           an object filled from its JSON schema by the same rules
``reasoning``             one honest sentence saying which sentence was picked and why
========================  ===========================================================

The "question" is the input field named ``question`` or ``query`` when there is one, else
the first input that is not a list. When other sentences exist, the question's own
sentences are never the answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dspex_jobs.lmserver.embedder import Embedder, cosine
from dspex_jobs.lmserver.fields import FieldSpec
from dspex_jobs.lmserver.prompt import ParsedPrompt, Style

__all__ = ["Context", "ExtractiveModel", "format_answer", "split_sentences"]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_INTEGER = re.compile(r"(?<![\w.])-?\d+(?![\w.]\d)")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_QUESTION_NAMES = ("question", "query", "q")
_REASONING_NAMES = {"reasoning", "rationale", "thought", "thinking"}
_MAX_SCHEMA_DEPTH = 6


def split_sentences(text: str) -> list[str]:
    """Split text into sentences (at ``.``/``!``/``?`` followed by space, and newlines)."""
    parts = (p.strip().strip("«»").strip() for p in _SENTENCE_END.split(text))
    return [p for p in parts if any(ch.isalnum() for ch in p)]


@dataclass(frozen=True)
class Context:
    """The question and the ranked candidate sentences for one request.

    Attributes:
        question: The question text (what answers are compared against).
        ranked: ``(sentence, similarity)`` pairs, most similar first.
    """

    question: str
    ranked: tuple[tuple[str, float], ...]

    @property
    def best(self) -> tuple[str, float]:
        """The most similar sentence and its similarity (``("", 0.0)`` when none)."""
        return self.ranked[0] if self.ranked else ("", 0.0)


class ExtractiveModel:
    """Answers parsed DSPy prompts from their own inputs.

    Args:
        embedder: Produces unit-length sentence embeddings (all-MiniLM-L6-v2 in the server).
        top_k: How many sentences a ``list[str]`` output gets.
        bool_threshold: Similarity from which a ``bool`` output is True.
    """

    def __init__(self, embedder: Embedder, *, top_k: int = 3, bool_threshold: float = 0.5) -> None:
        self.embedder = embedder
        self.top_k = top_k
        self.bool_threshold = bool_threshold

    def respond(self, prompt: ParsedPrompt, response_format: Any = None) -> str:
        """The assistant message content for a parsed prompt.

        Args:
            prompt: What :func:`~dspex_jobs.lmserver.prompt.parse_messages` understood.
            response_format: The request's ``response_format``; a ``json_schema`` is used
                to shape the answer when the prompt itself names no output fields.

        Returns:
            Text in the prompt's style: ``[[ ## field ## ]]`` sections, a JSON object,
            ``<field>`` tags, or a plain sentence.
        """
        if prompt.style == "plain" or not prompt.outputs:
            schema = _response_schema(response_format)
            if schema is None and not response_format:
                return self.plain_reply(prompt.last_user_text)
            context = self.context(prompt.last_user_text, split_sentences(prompt.last_user_text))
            return json.dumps(self.from_schema(schema or {}, context), ensure_ascii=False)
        context = self.prompt_context(prompt)
        values = {spec.name: self.value(spec, context) for spec in prompt.outputs}
        return format_answer(values, prompt.style)

    def plain_reply(self, text: str) -> str:
        """Answer a chat that is not a DSPy prompt: its most relevant sentence, or an echo."""
        sentences = split_sentences(text)
        if len(sentences) < 2:
            return text.strip()
        return self.context(sentences[-1], sentences[:-1]).best[0]

    def prompt_context(self, prompt: ParsedPrompt) -> Context:
        """Pick the question among the inputs and rank every other input sentence."""
        inputs = prompt.inputs
        by_name = {f.name.lower(): f for f in inputs}
        question_field = next((by_name[n] for n in _QUESTION_NAMES if n in by_name), None)
        if question_field is None:
            question_field = next((f for f in inputs if f.items is None), None)
        if question_field is None and inputs:
            question_field = inputs[0]
        question = question_field.text if question_field else prompt.last_user_text
        own: list[str] = []
        others: list[str] = []
        for f in inputs:
            texts = f.items if f.items is not None else (f.text,)
            sentences = [s for t in texts for s in split_sentences(t)]
            (own if f is question_field else others).extend(sentences)
        candidates = others or own or split_sentences(prompt.last_user_text)
        return self.context(question, candidates)

    def context(self, question: str, candidates: Sequence[str]) -> Context:
        """Rank ``candidates`` by cosine similarity to ``question``."""
        unique = list(dict.fromkeys(candidates))
        if not unique:
            return Context(question, ())
        vectors = self.embedder.encode([question, *unique])
        sims = [cosine(vectors[0], v) for v in vectors[1:]]
        order = sorted(range(len(unique)), key=lambda i: -sims[i])
        return Context(question, tuple((unique[i], sims[i]) for i in order))

    def nearest_label(self, labels: Sequence[Any], text: str) -> Any:
        """The label whose embedding is most similar to ``text`` (the first on ties)."""
        if not labels:
            return ""
        vectors = self.embedder.encode([text, *(str(label) for label in labels)])
        sims = [cosine(vectors[0], v) for v in vectors[1:]]
        return labels[max(range(len(labels)), key=lambda i: sims[i])]

    def value(self, spec: FieldSpec, context: Context) -> Any:
        """The answer for one output field (a JSON-able Python value)."""
        sentence, similarity = context.best
        if spec.kind == "str":
            if spec.name.lower() in _REASONING_NAMES:
                return _reasoning(context)
            return sentence
        if spec.kind == "float":
            return _score(similarity)
        if spec.kind == "bool":
            return similarity >= self.bool_threshold
        if spec.kind == "int":
            return _first_integer(context)
        if spec.kind == "choice":
            return self.nearest_label(spec.choices, context.question)
        if spec.kind == "list":
            return self._list_value(spec, context)
        return self.from_schema(spec.schema or {"type": "object"}, context)

    def _list_value(self, spec: FieldSpec, context: Context) -> list[Any]:
        if spec.item_kind == "str":
            return [s for s, _ in context.ranked[: self.top_k]]
        if spec.item_kind in ("int", "float"):
            cast = int if spec.item_kind == "int" else float
            pattern = _INTEGER if spec.item_kind == "int" else _NUMBER
            numbers = [cast(m) for s, _ in context.ranked for m in pattern.findall(s)]
            return numbers[: self.top_k]
        if spec.item_kind == "choice":
            return [self.nearest_label(spec.choices, context.question)]
        if spec.item_kind == "bool":
            return [context.best[1] >= self.bool_threshold]
        if spec.schema:
            return [self.from_schema(spec.schema, context)]
        return []

    def from_schema(
        self,
        schema: Mapping[str, Any],
        context: Context,
        root: Mapping[str, Any] | None = None,
        depth: int = 0,
    ) -> Any:
        """A value that satisfies a (pydantic-style) JSON schema, filled by the same rules."""
        root = schema if root is None else root
        if depth > _MAX_SCHEMA_DEPTH:
            return None
        ref = schema.get("$ref")
        if isinstance(ref, str):
            target = root.get("$defs", {}).get(ref.rsplit("/", 1)[-1], {})
            return self.from_schema(target, context, root, depth + 1)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list):
            return self.nearest_label(schema["enum"], context.question)
        for key in ("anyOf", "oneOf", "allOf"):
            options = [o for o in schema.get(key, []) if o.get("type") != "null"]
            if options:
                return self.from_schema(options[0], context, root, depth + 1)
        kind = schema.get("type", "object")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        sentence, similarity = context.best
        simple: dict[str, Any] = {
            "string": sentence,
            "number": _score(similarity),
            "integer": _first_integer(context),
            "boolean": similarity >= self.bool_threshold,
            "null": None,
        }
        if kind in simple:
            return simple[kind]
        if kind == "array":
            items = schema.get("items", {})
            if items.get("type", "string") == "string" and "enum" not in items:
                return [s for s, _ in context.ranked[: self.top_k]]
            return [self.from_schema(items, context, root, depth + 1)]
        properties = schema.get("properties", {})
        return {
            name: self.from_schema(sub, context, root, depth + 1)
            for name, sub in properties.items()
        }


def _score(similarity: float) -> float:
    return round(min(1.0, max(0.0, similarity)), 4)


def _first_integer(context: Context) -> int:
    for sentence, _ in context.ranked:
        match = _INTEGER.search(sentence)
        if match:
            return int(match.group())
    return 0


def _reasoning(context: Context) -> str:
    sentence, similarity = context.best
    if not sentence:
        return "No input sentences to choose from, so the answer is empty."
    return (
        f"Picked the input sentence most similar to the question by all-MiniLM-L6-v2 "
        f"embeddings (cosine similarity {similarity:.2f}) out of {len(context.ranked)}; "
        "this is extraction, not reasoning."
    )


def _response_schema(response_format: Any) -> dict[str, Any] | None:
    if not isinstance(response_format, Mapping):
        return None
    spec = response_format.get("json_schema")
    if isinstance(spec, Mapping) and isinstance(spec.get("schema"), Mapping):
        return dict(spec["schema"])
    return None


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def format_answer(values: Mapping[str, Any], style: Style) -> str:
    """Write output values the way the prompt's adapter parses them.

    Args:
        values: Output field name -> value.
        style: ``chat`` (``[[ ## f ## ]]`` sections ending in ``[[ ## completed ## ]]``),
            ``json`` (one JSON object) or ``xml`` (``<f>value</f>`` blocks).

    Returns:
        The assistant message content.
    """
    if style == "json":
        return json.dumps(dict(values), ensure_ascii=False)
    if style == "xml":
        blocks = []
        for name, value in values.items():
            text = _format_value(value)
            if isinstance(value, str):
                text = text.replace("&", "&amp;").replace("<", "&lt;")
            blocks.append(f"<{name}>\n{text}\n</{name}>")
        return "\n\n".join(blocks)
    sections = [f"[[ ## {name} ## ]]\n{_format_value(value)}" for name, value in values.items()]
    return "\n\n".join([*sections, "[[ ## completed ## ]]"])
