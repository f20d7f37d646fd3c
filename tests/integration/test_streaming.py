"""Streaming: chunks reach the producer through Redis while the LM is still producing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from celery import Celery
from click.testing import CliRunner
from conftest import inprocess_worker, make_settings, redis_db_url

from dspex_jobs import Client
from dspex_jobs.cli import main
from dspex_jobs.embedded import EmbeddedRedis
from dspex_jobs.streams import StreamChunk, StreamEnd

pytestmark = pytest.mark.integration

SIG = "question: str, context: list[str] -> answer: str"
INPUTS = {
    "question": "Where do results live?",
    "context": [
        "Results, streams and sessions live in Redis for every worker to see.",
        "Workers run DSPy modules.",
    ],
}


@pytest.fixture(scope="module")
def slow_tokens_lm() -> Iterator[object]:
    """An LM that streams its answer with 30 ms between chunks."""
    from dspex_jobs.lmserver import LMServerConfig, LMServerProcess

    with LMServerProcess(LMServerConfig(port=0, token_delay_ms=30)) as server:
        yield server


@pytest.fixture(scope="module")
def app(redis_server: EmbeddedRedis, slow_tokens_lm: object) -> Iterator[Celery]:
    url = redis_db_url(redis_server, 5)
    with inprocess_worker(make_settings(url, slow_tokens_lm.url)) as worker_app:  # type: ignore[attr-defined]
        yield worker_app


@pytest.fixture
def client(app: Celery) -> Iterator[Client]:
    with Client(app.dspex_settings, app=app) as c:  # type: ignore[attr-defined]
        yield c


def test_chunks_arrive_before_the_job_finishes_and_add_up_to_the_outputs(client: Client) -> None:
    # Given a streaming job against an LM that adds latency per token
    started = time.monotonic()
    handle = client.predict(SIG, stream=True, **INPUTS)
    # When the producer reads the stream
    events = []
    first_chunk_s = None
    for event in handle.stream(timeout=60):
        if first_chunk_s is None and isinstance(event, StreamChunk):
            first_chunk_s = time.monotonic() - started
        events.append(event)
    total_s = time.monotonic() - started
    first = first_chunk_s or 0.0
    print(f"\nstream: first chunk after {first:.3f} s of {total_s:.3f} s, {len(events)} events")
    # Expect several chunks, the first well before the end, and their text = the final value
    chunks = [e for e in events if isinstance(e, StreamChunk)]
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.outputs is not None
    assert len(chunks) >= 3, chunks
    assert first_chunk_s is not None and first_chunk_s < total_s * 0.8, (first_chunk_s, total_s)
    answer = "".join(c.text for c in chunks if c.field == "answer")
    assert answer.strip() == end.outputs["answer"]
    assert [c.is_last for c in chunks if c.field == "answer"][-1] is True
    assert handle.result(timeout=10).outputs == end.outputs


def test_chain_of_thought_streams_its_reasoning_too(client: Client) -> None:
    handle = client.chain_of_thought(SIG, stream=True, **INPUTS)
    fields = {e.field for e in handle.stream(timeout=60) if isinstance(e, StreamChunk)}
    assert {"reasoning", "answer"} <= fields


def test_a_dropped_consumer_resumes_and_gets_every_chunk_exactly_once(client: Client) -> None:
    handle = client.predict(SIG, stream=True, **INPUTS)
    # Given a consumer that read three events and dropped
    first_part = []
    for event in handle.stream(timeout=60):
        first_part.append(event)
        if len(first_part) == 3:
            break
    # When it reconnects after the last id it saw
    rest = list(handle.stream(after_id=first_part[-1].id, timeout=60))
    # Expect together exactly what a full read from the start gives
    full = list(handle.stream(timeout=60))
    assert [e.id for e in first_part + rest] == [e.id for e in full]
    assert len({e.id for e in full}) == len(full)


def test_async_iteration(client: Client) -> None:
    handle = client.predict(SIG, stream=True, **INPUTS)

    async def collect() -> list[object]:
        return [event async for event in handle.astream(timeout=60)]

    events = asyncio.run(collect())
    assert isinstance(events[-1], StreamEnd)
    assert any(isinstance(e, StreamChunk) for e in events)


def test_cli_prints_the_stream(client: Client, app: Celery) -> None:
    handle = client.predict(SIG, stream=True, **INPUTS)
    handle.result(timeout=60)
    out = CliRunner().invoke(
        main,
        ["stream", handle.id, "--timeout", "10"],
        env={"DSPEX_REDIS_URL": app.dspex_settings.redis_url},
    )  # type: ignore[attr-defined]
    assert out.exit_code == 0, out.output
    assert "[answer]" in out.output and '"answer":' in out.output
