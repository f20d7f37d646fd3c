"""The ``search`` operation, for the router and for pipeline steps.

:func:`search_operation` is a *native* implementation in the router's sense (plain Python, no
DSPy): the router imports it by path, ``dspex_jobs.neural.operations:search_operation``, and a
pipeline step ``Native("search", index="docs", k=5)`` calls it with the step's query. Where it
runs decides how it searches:

- inside a job taken from the ``neural`` queue (a pipeline's search step runs there), it
  searches in process, through the worker's own model, batcher and in-memory index: a job
  that waited on another job of its own worker could wait for ever on a one-thread pool;
- anywhere else (a producer, a ``general`` worker running a DSPy program), it submits an
  ``index_search`` job to the ``neural`` queue and waits, so no other process loads a model.

Hits come back as JSON-able dicts, ready to be the next step's input.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from dspex_jobs.neural.api import DEFAULT_TIMEOUT_S
from dspex_jobs.neural.limits import check_index_name, check_k
from dspex_jobs.settings import Settings

if TYPE_CHECKING:
    from dspex_jobs.client import Client

__all__ = ["default_client", "search_operation"]

_lock = threading.Lock()
_clients: list[tuple[int, Settings, Client]] = []


def search_operation(
    index: str,
    query: str,
    k: int = 5,
    *,
    client: Client | None = None,
    timeout_s: float | None = DEFAULT_TIMEOUT_S,
) -> list[dict[str, Any]]:
    """The ``k`` documents of ``index`` nearest to ``query``, best first.

    Args:
        index: The index's name.
        query: The text to search for.
        k: How many hits.
        client: Submit through this client (default: in process inside a neural job, else
            :func:`default_client`).
        timeout_s: Seconds to wait for the search job.

    Returns:
        ``{"id", "score", "document", "metadata"}`` per hit.

    Raises:
        NeuralInputError: A bad name, query or ``k``.
        IndexNotFound: There is no such index.
    """
    check_index_name(index)
    check_k(k)
    if client is None:
        settings = _neural_job_settings()
        if settings is not None:
            from dspex_jobs.neural.limits import check_texts
            from dspex_jobs.neural.service import neural_service

            service = neural_service(settings)
            queries = check_texts([query], service.limits, field="query")
            return list(service.search(index, queries, k)["results"][0])
        client = default_client()
    hits = client.index(index).search(query, k, timeout_s=timeout_s)
    return [hit.to_dict() for hit in hits]


def default_client(settings: Settings | None = None) -> Client:
    """One :class:`~dspex_jobs.client.Client` per process and settings (``DSPEX_*`` when
    omitted), reused by every operation call: a client per call would open a connection per
    call."""
    from dspex_jobs.client import Client

    settings = settings or Settings.from_env()
    pid = os.getpid()
    with _lock:
        for owner, known, client in _clients:
            if owner == pid and known == settings:
                return client
        client = Client(settings)
        _clients.append((pid, settings, client))
        return client


def _neural_job_settings() -> Settings | None:
    """The worker's settings when this runs inside a job taken from the ``neural`` queue."""
    from celery import current_task

    try:
        info = current_task.request.delivery_info or {}
        app = current_task.app
    except AttributeError:  # not inside a Celery task
        return None
    if info.get("routing_key") != "neural":
        return None
    settings = getattr(app, "dspex_settings", None)
    return settings if isinstance(settings, Settings) else None
