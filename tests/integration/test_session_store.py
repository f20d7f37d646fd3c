"""Session state in a real Redis: versions, limits, concurrency, bindings, cleanup."""

from __future__ import annotations

import threading

import pytest
import redis

from dspex_jobs.errors import SessionNotFound, SessionStateTooLarge
from dspex_jobs.keys import Keys
from dspex_jobs.sessions import SessionStore

pytestmark = pytest.mark.integration


@pytest.fixture
def store(redis_url: str) -> SessionStore:
    return SessionStore(
        redis.Redis.from_url(redis_url), Keys(), max_history=3, max_state_bytes=2_000
    )


def test_state_is_versioned_and_expires(store: SessionStore) -> None:
    state = store.create(ttl_s=30, vars={"user": "Ada"})
    updated = store.set_vars(state.id, {"topic": "queues"})
    assert updated.version == state.version + 1
    assert store.require(state.id).vars == {"user": "Ada", "topic": "queues"}
    assert 0 < store.client.ttl(store.keys.session(state.id)) <= 30


def test_history_is_trimmed_oldest_first(store: SessionStore) -> None:
    state = store.create(ttl_s=30)
    for turn in range(5):
        store.record_turn(state.id, {"question": f"q{turn}"}, {"answer": f"a{turn}"})
    history = store.require(state.id).history
    assert [h["question"] for h in history] == ["q2", "q3", "q4"]
    assert store.require(state.id).vars == {"answer": "a4"}


def test_an_oversized_write_is_refused_and_nothing_changes(store: SessionStore) -> None:
    state = store.create(ttl_s=30)
    with pytest.raises(SessionStateTooLarge, match="DSPEX_SESSION_MAX_STATE_BYTES"):
        store.set_vars(state.id, {"blob": "x" * 5_000})
    assert store.require(state.id).version == state.version


def test_concurrent_writers_lose_no_history(redis_url: str) -> None:
    # Given one session and eight threads, each with its own connection, recording turns
    store = SessionStore(
        redis.Redis.from_url(redis_url), Keys(), max_history=1000, max_state_bytes=1_000_000
    )
    state = store.create(ttl_s=30)

    def write(worker: int) -> None:
        mine = SessionStore(
            redis.Redis.from_url(redis_url), Keys(), max_history=1000, max_state_bytes=1_000_000
        )
        for turn in range(10):
            mine.record_turn(state.id, {"q": f"{worker}-{turn}"}, {})

    threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Expect every one of the 80 turns recorded exactly once
    turns = [h["q"] for h in store.require(state.id).history]
    assert sorted(turns) == sorted(f"{w}-{t}" for w in range(8) for t in range(10))
    assert store.require(state.id).version == 80


def test_ended_or_unknown_sessions_are_typed_errors(store: SessionStore) -> None:
    state = store.create(ttl_s=30)
    assert store.end(state.id) is True
    assert store.end(state.id) is False
    with pytest.raises(SessionNotFound):
        store.record_turn(state.id, {}, {})


def test_cleanup_removes_dead_and_expired_bindings_and_requeues_stranded_jobs(
    store: SessionStore,
) -> None:
    live, dead, gone = (store.create(ttl_s=30) for _ in range(3))
    store.bind(live.id, "w-live")
    store.bind(dead.id, "w-dead")
    store.bind(gone.id, "w-live")
    store.client.delete(store.keys.session(gone.id))
    store.client.rpush("w-dead.dq2", "stranded-message")
    removed = store.cleanup(lambda worker: worker == "w-live")
    assert removed == 2
    assert store.binding(live.id) == "w-live" and store.binding(dead.id) is None
    assert store.client.lrange("general", 0, -1) == [b"stranded-message"]
