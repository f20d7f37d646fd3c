"""run_bounded: deadlines and time limits that hold where the pool cannot enforce them."""

from __future__ import annotations

import contextvars
import threading
import time

import pytest

from dspex_jobs.deadlines import run_bounded
from dspex_jobs.errors import DeadlineExceeded, JobCancelled

_probe: contextvars.ContextVar[str] = contextvars.ContextVar("probe", default="unset")


def test_work_within_its_bounds_returns_its_value_with_the_callers_context() -> None:
    _probe.set("caller")
    assert run_bounded(lambda: _probe.get(), job_id="j", limit_s=5.0) == "caller"
    assert run_bounded(lambda: 7, job_id="j") == 7  # no bound: runs directly


def test_errors_of_the_work_reach_the_caller() -> None:
    def boom() -> None:
        raise KeyError("inside")

    with pytest.raises(KeyError, match="inside"):
        run_bounded(boom, job_id="j", limit_s=5.0)


def test_a_time_limit_stops_waiting_on_time() -> None:
    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match=r"time limit of 0\.2 s") as caught:
        run_bounded(lambda: release.wait(10), job_id="slow", limit_s=0.2)
    assert time.monotonic() - started < 2.0
    assert caught.value.code == "deadline_exceeded" and caught.value.retryable is False
    release.set()


def test_a_deadline_that_passes_mid_run_stops_waiting() -> None:
    release = threading.Event()
    with pytest.raises(DeadlineExceeded, match="reached its deadline"):
        run_bounded(
            lambda: release.wait(10), job_id="late", limit_s=30.0, deadline_at=time.time() + 0.2
        )
    release.set()


def test_a_cancel_request_stops_waiting() -> None:
    release = threading.Event()
    asked = time.monotonic() + 0.2
    with pytest.raises(JobCancelled):
        run_bounded(
            lambda: release.wait(10),
            job_id="c",
            limit_s=30.0,
            cancelled=lambda: time.monotonic() > asked,
            poll_s=0.05,
        )
    release.set()
