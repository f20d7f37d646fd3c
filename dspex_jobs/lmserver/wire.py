"""OpenAI Chat Completions response bodies: whole completions and SSE chunks.

Token counts are an estimate, not a tokenizer: every word and every punctuation mark
counts as one token (``\\w+|[^\\w\\s]``), which lands near what BPE tokenizers report for
English text and is cheap and deterministic.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from dspex_jobs.lmserver.prompt import message_text

__all__ = [
    "completion_body",
    "count_tokens",
    "models_body",
    "new_completion_id",
    "sse_chunks",
    "split_for_stream",
    "usage",
]

_TOKEN = re.compile(r"\w+|[^\w\s]")
_STREAM_PIECE = re.compile(r"\s*\S+")
_MAX_PIECE_CHARS = 12
"""Longer words are cut into pieces this long, so streams look token-sized."""


def count_tokens(text: str) -> int:
    """Estimated token count of ``text`` (words plus punctuation marks)."""
    return len(_TOKEN.findall(text))


def usage(messages: Sequence[Any], completion: str) -> dict[str, int]:
    """OpenAI ``usage`` for a request's messages and the completion text."""
    prompt_tokens = sum(count_tokens(message_text(m)) + 3 for m in messages)
    completion_tokens = count_tokens(completion)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def new_completion_id() -> str:
    """A fresh ``chatcmpl-...`` id."""
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def completion_body(
    completion_id: str, model: str, content: str, usage_: dict[str, int]
) -> dict[str, Any]:
    """A non-streaming ``chat.completion`` object."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "dspex-extractive-minilm",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": usage_,
    }


def split_for_stream(content: str) -> list[str]:
    """Cut content into token-sized pieces (whitespace stays attached) that join back to it."""
    pieces: list[str] = []
    for match in _STREAM_PIECE.finditer(content):
        piece = match.group()
        while len(piece) > _MAX_PIECE_CHARS:
            pieces.append(piece[:_MAX_PIECE_CHARS])
            piece = piece[_MAX_PIECE_CHARS:]
        pieces.append(piece)
    tail = content[len("".join(pieces)) :]
    if tail:
        pieces.append(tail)
    return pieces


def sse_chunks(
    completion_id: str, model: str, content: str, usage_: dict[str, int] | None
) -> Iterator[bytes]:
    """The ``data: {...}`` events of a streamed completion, ending with ``data: [DONE]``.

    The first chunk carries the role, each later one a piece of content, then a chunk with
    ``finish_reason: "stop"``; when ``usage_`` is given (the request set
    ``stream_options.include_usage``) a last chunk with empty ``choices`` carries it.
    """
    created = int(time.time())

    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "dspex-extractive-minilm",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    yield event({"role": "assistant", "content": ""})
    for piece in split_for_stream(content):
        yield event({"content": piece})
    yield event({}, "stop")
    if usage_ is not None:
        final = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": usage_,
        }
        yield b"data: " + json.dumps(final).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"


def models_body(model: str, created: int) -> dict[str, Any]:
    """The ``GET /v1/models`` list with the one served model."""
    return {"object": "list", "data": [model_entry(model, created)]}


def model_entry(model: str, created: int) -> dict[str, Any]:
    """One ``model`` object."""
    return {"id": model, "object": "model", "created": created, "owned_by": "dspex-jobs"}
