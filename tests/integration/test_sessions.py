"""Sessions through real workers: shared history and variables, affinity, recovery."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest
import redis
from celery import Celery
from click.testing import CliRunner
from conftest import LM_MODEL, inprocess_worker, make_settings, redis_db_url

from dspex_jobs import Client, SessionNotFound, SessionWorkerUnavailable
from dspex_jobs.cli import main
from dspex_jobs.embedded import EmbeddedRedis
from dspex_jobs.keys import Keys
from dspex_jobs.stack import LocalStack

pytestmark = pytest.mark.integration

CONTEXT = ["Sessions keep their state in Redis.", "Workers can die at any time."]


@pytest.fixture(scope="module")
def app(redis_server: EmbeddedRedis, lm_server: object) -> Iterator[Celery]:
    url = redis_db_url(redis_server, 6)
    with inprocess_worker(make_settings(url, lm_server.url)) as worker_app:  # type: ignore[attr-defined]
        yield worker_app


@pytest.fixture
def client(app: Celery) -> Iterator[Client]:
    with Client(app.dspex_settings, app=app) as c:  # type: ignore[attr-defined]
        yield c


def test_history_and_variables_carry_across_jobs(client: Client) -> None:
    with client.session(ttl_s=60) as s:
        # Given a variable set on the session
        s.set(context=CONTEXT)
        # When two jobs run without passing context, the second declaring a dspy.History
        s.predict("question, context: list[str] -> answer", question="Where is state?").result(
            timeout=60
        )
        second = s.predict(
            "history: dspy.History, question, context: list[str] -> answer",
            question="What can die?",
        ).result(timeout=60)
        # Expect the context read from the session, and both turns in its history
        assert second.outputs is not None and second.outputs["answer"] in CONTEXT
        state = s.state()
        assert [turn["question"] for turn in state.history] == ["Where is state?", "What can die?"]
        assert state.vars["answer"] == second.outputs["answer"]
        assert s.worker() is not None
    with pytest.raises(SessionNotFound):
        client.get_session(s.id)


def test_two_jobs_of_one_session_at_once_keep_both_turns(client: Client) -> None:
    s = client.session(ttl_s=60, vars={"context": CONTEXT})
    handles = [
        s.predict("question, context: list[str] -> answer", question=f"q{i}?") for i in range(4)
    ]
    for handle in handles:
        handle.result(timeout=60)
    assert sorted(t["question"] for t in s.state().history) == ["q0?", "q1?", "q2?", "q3?"]


def test_session_lm_options_apply_and_jobs_can_override(client: Client) -> None:
    s = client.session(ttl_s=60, lm={"temperature": 0.3})
    result = s.predict(
        "question -> answer", question="Which temperature?", lm={"max_tokens": 200}
    ).result(timeout=60)
    assert result.ok


def test_cli_lists_shows_and_ends(client: Client, app: Celery) -> None:
    s = client.session(ttl_s=60, vars={"user": "Ada"})
    env = {"DSPEX_REDIS_URL": app.dspex_settings.redis_url}  # type: ignore[attr-defined]
    runner = CliRunner()
    assert s.id in runner.invoke(main, ["sessions", "ls"], env=env).output
    assert '"user": "Ada"' in runner.invoke(main, ["sessions", "show", s.id], env=env).output
    assert runner.invoke(main, ["sessions", "end", s.id], env=env).exit_code == 0
    assert runner.invoke(main, ["sessions", "show", s.id], env=env).exit_code == 1


# -- affinity and recovery, with real worker processes -----------------------------------


@pytest.fixture(scope="module")
def two_workers(redis_server: EmbeddedRedis, lm_server: object) -> Iterator[LocalStack]:
    url = redis_db_url(redis_server, 7)
    redis.Redis.from_url(url).flushdb()
    stack = LocalStack(
        redis_url=url,
        lm=LM_MODEL,
        lm_api_base=lm_server.url,  # type: ignore[attr-defined]
        queues=["general", "general"],
        worker_args={"general": ["--concurrency", "1"]},
        env={"DSPEX_LM_API_KEY": "test-key"},
    )
    with stack:
        deadline = time.monotonic() + 60
        while len(list(redis.Redis.from_url(url).scan_iter("dspex:worker:*"))) < 2:
            assert time.monotonic() < deadline, "two workers never came up"
            time.sleep(0.2)
        yield stack


def _ask(session: object, question: str) -> str:
    result = session.predict(
        "history: dspy.History, question -> answer",  # type: ignore[attr-defined]
        question=question,
    ).result(timeout=60)
    return str(result.worker)


def test_affinity_reuses_the_bound_worker_and_recovers_when_it_dies(
    two_workers: LocalStack,
) -> None:
    assert two_workers.settings is not None
    with Client(two_workers.settings) as client:
        hint = client.session(ttl_s=60, affinity="hint")
        strict = client.session(ttl_s=60, affinity="strict")
        # Given each session bound to the worker that ran its first job
        first = _ask(hint, "one?")
        assert [_ask(hint, "two?"), _ask(hint, "three?")] == [first, first]
        strict_worker = _ask(strict, "one?")
        # When the worker bound to the hint session is killed between two jobs
        victim = next(w for w in two_workers.workers if f"-{w.pid}@" in first)
        os.killpg(victim.pid, signal.SIGKILL)
        heartbeat = Keys().worker_heartbeat(first)
        deadline = time.monotonic() + 30
        while client._redis.exists(heartbeat):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        # Expect the next job to rebind to the live worker, with no state lost
        survivor = _ask(hint, "four?")
        assert survivor != first
        assert hint.worker() == survivor
        assert [t["question"] for t in hint.state().history] == ["one?", "two?", "three?", "four?"]
        # And a strict session bound to the dead worker fails fast, with a clear error
        if strict_worker == first:
            with pytest.raises(SessionWorkerUnavailable, match="strict affinity"):
                strict.predict("question -> answer", question="still there?")
        else:
            assert _ask(strict, "two?") == strict_worker
