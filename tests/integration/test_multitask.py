"""Multitask strategies through real worker processes and an LM that takes its time.

A ``general`` worker subprocess running two jobs at a time (so without the session gate a
second job *would* run beside the first), a ``webhooks`` worker subprocess, and the local
LM server adding 400 ms to every call and 150 ms between streamed chunks. Each test shows
the order jobs ran in (their stored timings) and the session's state afterwards
(database 33).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator

import pytest
import redis
from conftest import redis_db_url
from pydantic import SecretStr
from webhook_receiver import Receiver

from dspex_jobs import Client, JobCancelled, JobStatus, SessionBusy, StreamChunk, ValidationError
from dspex_jobs.embedded import EmbeddedRedis
from dspex_jobs.sessions import Session
from dspex_jobs.stack import LocalStack

pytestmark = pytest.mark.integration

DB = 33
SIG = "history: dspy.History, question, context: list[str] -> answer"
CONTEXT = [
    "A session runs one job at a time and the next one waits for it in Redis in order.",
    "An interrupted job keeps the partial answer it had streamed when it was stopped early.",
    "A rolled back job leaves the session exactly as it was before that job had started.",
]


@pytest.fixture(scope="module")
def stack(redis_server: EmbeddedRedis) -> Iterator[LocalStack]:
    url = redis_db_url(redis_server, DB)
    redis.Redis.from_url(url).flushdb()
    with LocalStack(
        redis_url=url,
        queues=["general", "webhooks"],
        worker_args={"general": ["--concurrency", "2"]},
        lm_server_options={"latency_ms": 400, "token_delay_ms": 150},
        env={"DSPEX_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1", "DSPEX_WEBHOOK_SECRET": "s"},
    ) as s:
        yield s
    redis.Redis.from_url(url).flushdb()


@pytest.fixture
def client(stack: LocalStack) -> Iterator[Client]:
    assert stack.settings is not None
    settings = stack.settings.model_copy(
        update={"webhook_allowed_hosts": ("127.0.0.1",), "webhook_secret": SecretStr("s")}
    )
    with Client(settings) as c:
        yield c


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
def session(client: Client) -> Iterator[Session]:
    with client.session(ttl_s=120, vars={"context": CONTEXT}) as s:
        yield s


def _questions(session: Session) -> list[str]:
    return [turn["question"] for turn in session.state().history]


def test_enqueue_runs_jobs_one_after_another_in_order(client: Client, session: Session) -> None:
    # Given three jobs submitted at once to one session (the worker has room for two at a time)
    handles = [session.predict(SIG, question=f"q{i}?") for i in range(3)]
    assert session.running() == handles[0].id
    assert session.waiting() == [handles[1].id, handles[2].id]
    # Expect each to start only after the one before it finished, in submission order
    results = [h.result(timeout=60) for h in handles]
    for before, after in itertools.pairwise(results):
        assert after.timings.started_at >= before.timings.finished_at
    # And every turn in the session's history, in that order
    assert _questions(session) == ["q0?", "q1?", "q2?"]
    # The worker releases the session just after storing the last result
    deadline = time.monotonic() + 10
    while session.running() is not None:
        assert time.monotonic() < deadline, "the session was never released"
        time.sleep(0.02)
    assert session.waiting() == []


def test_reject_refuses_a_second_job_at_once(client: Client, session: Session) -> None:
    # Given a job running in the session
    first = session.predict(SIG, question="first?")
    # Expect a second one with multitask="reject" refused at once, and nothing enqueued
    with pytest.raises(SessionBusy, match="running job") as caught:
        session.predict(SIG, question="refused?", multitask="reject")
    assert caught.value.details["running_job_id"] == first.id
    assert session.waiting() == []
    first.result(timeout=60)
    # And once the session is idle, the same submit runs
    session.predict(SIG, question="later?", multitask="reject").result(timeout=60)
    assert _questions(session) == ["first?", "later?"]


def test_interrupt_stops_the_running_job_and_keeps_its_partial_output(
    client: Client,
    session: Session,
    receiver: Receiver,
) -> None:
    # Given a streaming job that has started producing its answer (with a webhook, sent by
    # the webhooks worker process)
    first = session.predict(
        SIG,
        question="What does an interrupted job keep?",
        stream=True,
        webhook=receiver.url("/interrupted"),
    )
    chunk = next(e for e in first.stream(timeout=60) if isinstance(e, StreamChunk))
    assert chunk.text
    # When a new job interrupts it
    second = session.predict(SIG, question="And after it?", multitask="interrupt")
    # Expect the first cancelled mid-answer, its partial output kept on its result
    with pytest.raises(JobCancelled, match="interrupted") as caught:
        first.result(timeout=60)
    stopped = client._store.get(first.id)
    assert stopped is not None and stopped.status is JobStatus.CANCELLED
    partial = (stopped.outputs or {}).get("answer", "")
    assert partial and caught.value.details["outputs"] == stopped.outputs
    # Then the new job, after it, on the state the first left: its partial turn included
    done = second.result(timeout=60)
    assert done.timings.started_at >= stopped.timings.finished_at
    history = session.state().history
    assert [t["question"] for t in history] == [
        "What does an interrupted job keep?",
        "And after it?",
    ]
    assert history[0]["answer"] == partial
    full = next(s for s in CONTEXT if s.startswith("An interrupted"))
    assert len(partial) < len(full)  # stopped while streaming, not after
    # And the app told: job.cancelled, with the partial output
    (hook,) = receiver.wait_for("/interrupted", 1)
    body = json.loads(hook.body)
    assert body["event"] == "job.cancelled" and body["outputs"] == stopped.outputs


def test_rollback_restores_the_state_from_before_the_running_job(
    client: Client,
    session: Session,
) -> None:
    # Given a session with one finished turn, and a second job running (not streaming)
    session.predict(SIG, question="kept?").result(timeout=60)
    before = session.state()
    doomed = session.predict(SIG, question="rolled back?")
    deadline = time.monotonic() + 30
    while client.job(doomed.id).status() is not JobStatus.RUNNING:
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.01)
    # When a new job rolls it back
    newer = session.predict(SIG, question="instead?", multitask="rollback")
    # Expect the running job cancelled, its outputs discarded
    with pytest.raises(JobCancelled, match="rolled back"):
        doomed.result(timeout=60)
    stopped = client._store.get(doomed.id)
    assert stopped is not None and stopped.outputs is None
    # And the new job run after it, on the state from before it: its turn never happened
    done = newer.result(timeout=60)
    assert done.timings.started_at >= stopped.timings.finished_at
    assert _questions(session) == ["kept?", "instead?"]
    assert session.state().history[0] == before.history[0]


def test_multitask_is_checked_before_anything_is_enqueued(client: Client, session: Session) -> None:
    with pytest.raises(ValidationError, match="multitask must be one of"):
        session.predict(SIG, question="x", multitask="replace")
    with pytest.raises(ValidationError, match="session jobs only"):
        client.submit("predict", "question -> answer", {"question": "x"}, multitask="interrupt")
    assert session.running() is None
