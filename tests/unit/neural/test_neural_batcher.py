"""The micro-batcher: concurrent texts share model calls, big jobs are split, order holds."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from dspex_jobs.neural.batcher import Batcher


class FakeModel:
    """Encodes a text as [len(text), first char code]; records every call's size."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.calls: list[int] = []
        self.fail_next = False

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(len(texts))
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("CUDA out of memory")
        time.sleep(self.delay_s)
        return np.array([[len(t), ord(t[0])] for t in texts], dtype=np.float32)


def expected(texts: list[str]) -> np.ndarray:
    return np.array([[len(t), ord(t[0])] for t in texts], dtype=np.float32)


def run_concurrently(batcher: Batcher, jobs: list[list[str]]) -> list[np.ndarray]:
    results: list[np.ndarray | None] = [None] * len(jobs)
    start = threading.Barrier(len(jobs))

    def call(i: int) -> None:
        with batcher.job():
            start.wait()
            results[i] = batcher.encode(jobs[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


def test_concurrent_small_jobs_share_model_calls() -> None:
    # Given a model that takes 30 ms per call, and 16 concurrent one-text jobs
    model = FakeModel(delay_s=0.03)
    batcher = Batcher(model, max_batch=32, max_wait_ms=20)
    jobs = [[f"{chr(97 + i)}" * (i + 1)] for i in range(16)]
    # When they all encode at once
    results = run_concurrently(batcher, jobs)
    batcher.close()
    # Expect every job to get its own vector, from far fewer than 16 model calls
    for job, result in zip(jobs, results, strict=True):
        assert np.array_equal(result, expected(job))
    assert sum(model.calls) == 16 and len(model.calls) <= 4, model.calls
    stats = batcher.stats()
    assert stats.texts == 16 and stats.multi_request_batches >= 1 and stats.mean_batch >= 4


def test_a_big_job_is_split_into_model_sized_batches_in_order() -> None:
    model = FakeModel()
    batcher = Batcher(model, max_batch=16, max_wait_ms=5)
    texts = [f"{chr(97 + i % 26)}{'x' * (i * 7 % 40)}" for i in range(100)]
    vectors = batcher.encode(texts)
    batcher.close()
    assert np.array_equal(vectors, expected(texts))  # rows back in the caller's order
    assert max(model.calls) <= 16 and sum(model.calls) == 100
    assert len(model.calls) == 7


def test_chunks_are_sorted_by_length_so_padding_is_small() -> None:
    model = FakeModel()
    seen: list[list[int]] = []

    def recording(texts: list[str]) -> np.ndarray:
        seen.append([len(t) for t in texts])
        return model(texts)

    batcher = Batcher(recording, max_batch=4, max_wait_ms=0)
    texts = ["a" * n for n in (1, 9, 2, 8, 3, 7, 4, 6)]
    batcher.encode(texts)
    batcher.close()
    assert seen == [[9, 8, 7, 6], [4, 3, 2, 1]]


def test_a_lone_job_is_not_delayed_by_the_wait() -> None:
    batcher = Batcher(FakeModel(), max_batch=32, max_wait_ms=2000)
    started = time.perf_counter()
    with batcher.job():
        batcher.encode(["alone"])
    elapsed_s = time.perf_counter() - started
    batcher.close()
    assert elapsed_s < 1.0, elapsed_s


def test_the_batch_waits_for_a_running_job_that_has_not_sent_its_texts() -> None:
    # Given two running jobs, one of which sends its text 50 ms after the other
    model = FakeModel()
    batcher = Batcher(model, max_batch=32, max_wait_ms=1000)
    both_running = threading.Barrier(2)
    results: dict[str, np.ndarray] = {}

    def job(name: str, delay_s: float) -> None:
        with batcher.job():
            both_running.wait()
            time.sleep(delay_s)
            results[name] = batcher.encode([name])

    threads = [
        threading.Thread(target=job, args=("early", 0.0)),
        threading.Thread(target=job, args=("late", 0.05)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    batcher.close()
    # Expect one model call for both
    assert model.calls == [2]
    assert np.array_equal(results["late"], expected(["late"]))


def test_a_model_error_reaches_every_caller_and_the_batcher_goes_on() -> None:
    model = FakeModel()
    batcher = Batcher(model, max_batch=8, max_wait_ms=0)
    model.fail_next = True
    with pytest.raises(RuntimeError, match="out of memory"):
        batcher.encode(["boom"])
    assert np.array_equal(batcher.encode(["fine"]), expected(["fine"]))
    batcher.close()


def test_a_closed_batcher_refuses_work() -> None:
    batcher = Batcher(FakeModel(), max_batch=8, max_wait_ms=0)
    batcher.close()
    batcher.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        batcher.encode(["late"])


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(FakeModel(), max_batch=0, max_wait_ms=1)
