"""A guard in front of Celery's task strategy: a malformed task message is rejected, not fatal.

Checked here (Celery 5.7, kombu 5.7, Redis transport): Celery's default strategy assumes a
task message body decodes to ``(args, kwargs, embed)`` (or a protocol-1 dict with
``args``). A body that decodes to anything else (``5``, a pair) or an empty body (kombu
never runs a decoder on empty data and hands the raw bytes on) raises ``TypeError`` or
``ValueError`` inside the consumer, which Celery reports as "Unrecoverable error": the
worker stops. That holds for JSON bodies as much as for ours, so one stray message from
any producer with access to the queue takes a worker down.

The guard checks the decoded body's shape before Celery's strategy sees it, and raises
``InvalidTaskError``, which the consumer already handles: it logs the error and rejects
the message (Redis drops it), and the worker carries on. Decoding errors themselves are
left to the consumer too (``DecodeError``: logged and acknowledged; ``ContentDisallowed``:
rejected). The decoded body is memoized by kombu, so the check adds no second decode.

Tasks get it through their ``Strategy`` attribute (Celery's extension point for this),
set on the app's base task class by :func:`install_message_guard`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery
from celery.exceptions import InvalidTaskError
from celery.worker.strategy import default

from dspex_jobs.errors import PayloadDecodeError

__all__ = ["STRATEGY", "guarded_strategy", "install_message_guard"]

STRATEGY = "dspex_jobs.protocol._guard:guarded_strategy"
"""The import path Celery instantiates for each task's strategy."""


def install_message_guard(app: Celery) -> None:
    """Give every task of ``app`` created from now on the guarded strategy."""
    app.Task.Strategy = STRATEGY


def guarded_strategy(task: Any, app: Celery, consumer: Any, **options: Any) -> Callable[..., Any]:
    """Celery's default strategy, behind a check of the task message's shape."""
    handler: Callable[..., Any] = default(task, app, consumer, **options)

    def task_message_handler(
        message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **kwargs: Any
    ) -> Any:
        if body is None:  # protocol 2: the consumer has not decoded the body
            check_task_body(message.payload)
        return handler(message, body, ack, reject, callbacks, **kwargs)

    return task_message_handler


def check_task_body(payload: Any) -> None:
    """Refuse a decoded task message body Celery's strategy would crash on.

    Raises:
        InvalidTaskError: Carrying a :class:`PayloadDecodeError`'s code and message.
    """
    if isinstance(payload, dict) and "args" in payload:
        return  # protocol 1 (hybrid): Celery validates it itself
    if isinstance(payload, list | tuple) and len(payload) == 3:
        args, kwargs, embed = payload
        if (
            isinstance(args, list | tuple)
            and isinstance(kwargs, dict)
            and (embed is None or isinstance(embed, dict))
        ):
            return
    shape = f"{len(payload)} bytes" if isinstance(payload, bytes) else type(payload).__name__
    error = PayloadDecodeError(
        f"a task message body must decode to (args, kwargs, embed), not {shape}; dropped it"
    )
    raise InvalidTaskError(f"[{error.code}] {error.message}")
