"""The session gate on a real Redis, without workers: one job runs, the rest wait or are
refused, atomically, however many producers race (database 34)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import redis
from conftest import redis_db_url

from dspex_jobs.embedded import EmbeddedRedis
from dspex_jobs.keys import Keys
from dspex_jobs.multitask import SessionGate

pytestmark = pytest.mark.integration


@pytest.fixture
def gate(redis_server: EmbeddedRedis) -> Iterator[SessionGate]:
    client = redis.Redis.from_url(redis_db_url(redis_server, 34))
    client.flushdb()
    yield SessionGate(client, Keys(), ttl_s=60)
    client.flushdb()
    client.close()


def _admit(gate: SessionGate, job_id: str, strategy: str) -> str:
    return gate.admit(
        "s1",
        job_id,
        strategy,
        task="dspex.predict",  # type: ignore[arg-type]
        queue="general",
        payload={"id": job_id},
    ).decision


def test_racing_producers_admit_exactly_one_job(gate: SessionGate) -> None:
    # Given 16 producers submitting with multitask="reject" to an idle session at once
    decisions: list[str] = []
    start = threading.Barrier(16)

    def submit(i: int) -> None:
        start.wait()
        decisions.append(_admit(gate, f"j{i}", "reject"))

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Expect one to run and fifteen refused
    assert sorted(decisions) == ["busy"] * 15 + ["run"]


def test_enqueue_keeps_order_and_interrupt_jumps_the_line(gate: SessionGate) -> None:
    assert _admit(gate, "a", "enqueue") == "run"
    assert [_admit(gate, j, "enqueue") for j in ("b", "c")] == ["queued", "queued"]
    # An interrupt flags the running job and goes first
    assert _admit(gate, "d", "interrupt") == "queued"
    assert gate.client.get(gate.keys.cancel("a")) == b"interrupt"
    assert gate.waiting("s1") == ["d", "b", "c"]
    # Releasing hands the session on in that order; only the running job can release it
    assert gate.release("s1", "b") is None
    order = []
    running = "a"
    while (nxt := gate.release("s1", running)) is not None:
        assert nxt.message()["payload"] == {"id": nxt.id}
        gate.sent(nxt)
        order.append(nxt.id)
        running = nxt.id
    assert order == ["d", "b", "c"] and gate.running("s1") is None
    assert gate.client.zcard(gate.keys.delayed()) == 0  # every safety copy dropped


def test_a_released_job_has_a_safety_copy_until_sent(gate: SessionGate) -> None:
    _admit(gate, "a", "enqueue")
    _admit(gate, "b", "enqueue")
    nxt = gate.release("s1", "a")
    assert nxt is not None and gate.running("s1") == "b"
    # Until the releasing worker confirms it sent b, the delayed set would send it
    assert gate.client.zcard(gate.keys.delayed()) == 1
    gate.sent(nxt)
    assert gate.client.zcard(gate.keys.delayed()) == 0


def test_a_finished_job_that_never_released_does_not_block(gate: SessionGate) -> None:
    # Given a running job whose result is stored but whose worker died before releasing
    _admit(gate, "a", "enqueue")
    gate.client.set(gate.keys.result("a"), "{}")
    # Expect the next job to run at once, and no stop flag set on the finished one
    assert _admit(gate, "b", "rollback") == "run"
    assert gate.client.get(gate.keys.cancel("a")) is None
