"""Telemetry through a real worker: job events with one trace id, JSON logs, the Celery task
events Flower reads, and a failed job reported to Sentry (through a transport of our own).

One in-process worker (Redis DB 28) for the module."""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import sentry_sdk
from celery import Celery
from conftest import inprocess_worker, make_settings, redis_db_url

from dspex_jobs import telemetry
from dspex_jobs.client import Client
from dspex_jobs.embedded import EmbeddedRedis
from dspex_jobs.errors import DeadlineExceeded, DSPexError
from dspex_jobs.results import JobStatus
from dspex_jobs.telemetry.context import ContextFilter, JsonFormatter
from dspex_jobs.telemetry.sentry import HANDLER_ID, init_sentry

pytestmark = pytest.mark.integration

Event = tuple[str, dict[str, float], dict[str, Any]]


@pytest.fixture(scope="module")
def app(redis_server: EmbeddedRedis, lm_server: object) -> Iterator[Celery]:
    url = redis_db_url(redis_server, 28)
    with inprocess_worker(make_settings(url, lm_server.url)) as worker_app:  # type: ignore[attr-defined]
        yield worker_app


@pytest.fixture
def client(app: Celery) -> Iterator[Client]:
    with Client(app.dspex_settings, app=app) as client:  # type: ignore[attr-defined]
        yield client


@pytest.fixture
def events() -> Iterator[list[Event]]:
    seen: list[Event] = []
    lock = threading.Lock()

    def record(name: str, measurements: Any, metadata: Any) -> None:
        with lock:
            seen.append((name, dict(measurements), dict(metadata)))

    telemetry.attach("test-observability", "dspex.*", record)
    yield seen
    telemetry.detach("test-observability")


def _wait_for(events: list[Event], name: str, job_id: str, timeout_s: float = 10) -> Event:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for event in list(events):
            if event[0] == name and event[2].get("job_id") == job_id:
                return event
        time.sleep(0.02)
    raise AssertionError(f"no {name} for {job_id}: {[e[0] for e in events]}")


def test_a_job_emits_its_lifecycle_with_one_trace_id(
    client: Client,
    events: list[Event],
) -> None:
    # Given two jobs with the same signature, the first continuing the caller's trace
    first = client.submit(
        "predict",
        "question, context -> answer",
        {"question": "Who?", "context": "Ada wrote it."},
        trace_id="trace-1",
    )
    result = first.result(timeout=60)
    second = client.predict("question, context -> answer", question="Who?", context="Bo.")
    second.result(timeout=60)
    # Expect the trace id in the result and in every event of the first job
    assert result.status is JobStatus.SUCCEEDED and result.trace_id == "trace-1"
    mine = [e for e in events if e[2].get("job_id") == first.id]
    assert {"dspex.job.submit", "dspex.job.start", "dspex.lm.call", "dspex.job.stop"} <= {
        e[0] for e in mine
    }
    assert {e[2]["trace_id"] for e in mine} == {"trace-1"}
    stop = _wait_for(events, "dspex.job.stop", first.id)
    assert stop[2]["status"] == "succeeded" and stop[1]["duration_s"] > 0
    lm = _wait_for(events, "dspex.lm.call", first.id)
    assert lm[2]["ok"] is True and lm[1]["duration_s"] > 0 and lm[1]["total_tokens"] > 0
    # and the module cache: built for one job, reused for the other
    caches = [e[0] for e in events if e[0].startswith("dspex.cache.")]
    assert "dspex.cache.hit" in caches


def test_a_raising_handler_never_breaks_a_job(client: Client) -> None:
    def broken(name: str, measurements: Any, metadata: Any) -> None:
        raise RuntimeError("exporter bug")

    telemetry.attach("test-broken-exporter", "dspex.job.*", broken)
    try:
        result = client.ping().result(timeout=30)
    finally:
        telemetry.detach("test-broken-exporter")
    assert result.status is JobStatus.SUCCEEDED


def test_json_logs_carry_job_and_trace_ids(client: Client) -> None:
    # Given JSON logs on the worker's task logger
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect(level=logging.WARNING)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    task_logger = logging.getLogger("dspex_jobs.tasks")
    level = task_logger.level  # the test worker logs errors only
    task_logger.setLevel(logging.WARNING)
    task_logger.addHandler(handler)
    try:
        # When a job is refused (its deadline passed before a worker took it)
        handle = client.submit("ping", deadline_s=-1.0, trace_id="trace-logs")
        with pytest.raises(DeadlineExceeded):
            handle.result(timeout=30)
    finally:
        task_logger.removeHandler(handler)
        task_logger.setLevel(level)
    # Expect its failure line as JSON with both ids
    entries = [json.loads(line) for line in lines]
    mine = [e for e in entries if e.get("job_id") == handle.id]
    assert mine and mine[0]["trace_id"] == "trace-logs" and mine[0]["kind"] == "ping"


class _CeleryEvents:
    """Listens to the worker's Celery events (what Flower reads) until given jobs succeeded."""

    def __init__(self, app: Celery) -> None:
        self.seen: list[dict[str, Any]] = []
        self.done = threading.Event()
        self._expected: set[str] | None = None  # set by expect(), after submitting
        self._succeeded: set[str] = set()
        self._lock = threading.Lock()
        ready = threading.Event()

        def listen() -> None:
            def on_event(event: dict[str, Any]) -> None:
                self.seen.append(event)
                if event["type"] == "task-succeeded":
                    with self._lock:
                        self._succeeded.add(event.get("uuid", ""))
                    self._check()
                if self.done.is_set():
                    receiver.should_stop = True

            with app.connection_for_read() as connection:
                receiver = app.events.Receiver(connection, handlers={"*": on_event})
                ready.set()
                # A timeout ends the capture; the test fails on what it did not see.
                with contextlib.suppress(TimeoutError, OSError):
                    receiver.capture(limit=None, timeout=30, wakeup=True)

        self.thread = threading.Thread(target=listen, daemon=True)
        self.thread.start()
        assert ready.wait(10)
        time.sleep(0.5)  # the receiver subscribes once capture() starts consuming

    def _check(self) -> None:
        with self._lock:
            if self._expected is not None and self._expected <= self._succeeded:
                self.done.set()

    def wait_for(self, job_ids: set[str]) -> None:
        """Until every job in ``job_ids`` has its ``task-succeeded`` event."""
        self._expected = job_ids
        self._check()
        missing = lambda: len(job_ids - self._succeeded)  # noqa: E731
        assert self.done.wait(15), (missing(), collections.Counter(e["type"] for e in self.seen))
        self.thread.join(5)


def test_celery_task_events_name_and_summarise_our_tasks(app: Celery, client: Client) -> None:
    # Given a receiver of the worker's Celery events (what Flower listens to)
    listener = _CeleryEvents(app)
    # When a job runs
    handle = client.submit(
        "predict", "question -> answer", {"question": "Hi?"}, trace_id="trace-flower"
    )
    handle.result(timeout=60)
    listener.wait_for({handle.id})
    seen = listener.seen
    # Expect received/started/succeeded events, with the readable name and summary
    mine = {e["type"]: e for e in seen if e.get("uuid") == handle.id}
    assert {"task-received", "task-started", "task-succeeded"} <= set(mine)
    received = mine["task-received"]
    assert received["name"] == "dspex.predict"
    assert (
        received["args"] == "predict 'question -> answer' inputs=[question] "
        "queue=general trace=trace-flower"
    )
    assert "Hi?" not in json.dumps(received)


class _Capture(sentry_sdk.transport.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.envelopes: list[Any] = []

    def capture_envelope(self, envelope: Any) -> None:
        self.envelopes.append(envelope)


def test_task_events_leave_the_worker_in_batches_and_none_is_lost(
    app: Celery, client: Client, redis_server: EmbeddedRedis
) -> None:
    # Given a receiver of the worker's Celery events, and Redis's PUBLISH count
    jobs = 40
    listener = _CeleryEvents(app)
    redis_client = redis.Redis.from_url(redis_server.url)
    before = redis_client.info("commandstats").get("cmdstat_publish", {}).get("calls", 0)
    # When a burst of jobs runs
    handles = [client.ping() for _ in range(jobs)]
    for handle in handles:
        handle.result(timeout=60)
    listener.wait_for({h.id for h in handles})
    published = redis_client.info("commandstats")["cmdstat_publish"]["calls"] - before
    # Expect every job's started and succeeded events to arrive (dspex_jobs.worker_consumer)
    for kind in ("task-received", "task-started", "task-succeeded"):
        ids = {e.get("uuid") for e in listener.seen if e["type"] == kind}
        assert {h.id for h in handles} <= ids, kind
    # in far fewer publishes than jobs (Celery alone publishes about one per job under load;
    # idle workers of other test modules add a few worker heartbeats)
    assert published <= jobs // 2, published


def test_a_failing_job_reaches_sentry_tagged_and_scrubbed(app: Celery, client: Client) -> None:
    settings = make_settings(
        app.dspex_settings.redis_url,  # type: ignore[attr-defined]
        sentry_dsn="http://public@127.0.0.1:9/1",
        lm_api_key="sk-observability-secret",
    )
    transport = _Capture()
    init_sentry(settings, transport=transport)
    try:
        # When a job fails on the worker (the LM server does not serve this model)
        handle = client.submit(
            "predict",
            "question -> answer",
            {"question": "Q?"},
            lm={"model": "openai/no-such-model"},
            trace_id="trace-sentry",
        )
        with pytest.raises(DSPexError) as failure:
            handle.result(timeout=60)
        # The worker reports right after storing the result: give it a moment
        deadline = time.monotonic() + 10
        while not transport.envelopes and time.monotonic() < deadline:
            time.sleep(0.05)
        sentry_sdk.flush()
    finally:
        telemetry.detach(HANDLER_ID)
        sentry_sdk.init()
    # Expect one event for it, with the job's tags, and no secret
    events = [
        item.payload.json
        for envelope in transport.envelopes
        for item in envelope.items
        if item.type == "event"
    ]
    mine = [e for e in events if e.get("tags", {}).get("job.id") == handle.id]
    assert len(mine) == 1
    tags = mine[0]["tags"]
    assert tags["job.kind"] == "predict" and tags["job.queue"] == "general"
    assert tags["trace_id"] == "trace-sentry" and tags["error.code"] == failure.value.code
    assert "sk-observability-secret" not in json.dumps(mine[0])


def test_opentelemetry_span_joins_the_jobs_trace(client: Client) -> None:
    sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
    export = pytest.importorskip("opentelemetry.sdk.trace.export")
    in_memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
    from opentelemetry import trace

    # Given a tracer provider that keeps spans in memory (set once for this process)
    exporter = in_memory.InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    # When a job runs with a W3C-shaped trace id
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    try:
        client.submit("ping", trace_id=trace_id).result(timeout=30)
        deadline = time.monotonic() + 5
        while not exporter.get_finished_spans() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        provider.shutdown()  # later tests in this process record nothing
    # Expect the worker's span in that very trace, with the job's attributes
    spans = [s for s in exporter.get_finished_spans() if s.name == "dspex.ping"]
    assert spans and spans[0].context.trace_id == int(trace_id, 16)
    assert spans[0].attributes["dspex.kind"] == "ping"
    assert spans[0].attributes["dspex.trace_id"] == trace_id


def test_session_jobs_emit_bind(client: Client, events: list[Event]) -> None:
    # Given a session whose first job binds it to the worker
    with client.session(ttl_s=60) as session:
        session.predict("question, context -> answer", question="Who?", context="Ada.").result(
            timeout=60
        )
        session.predict("question, context -> answer", question="Who?", context="Bo.").result(
            timeout=60
        )
        session_id = session.id
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(e[0] == "dspex.session.bind" for e in events):
        time.sleep(0.02)
    # Expect one bind (the second job ran on the same worker: no rebind)
    binds = [e for e in events if e[0].startswith("dspex.session.")]
    assert [e[0] for e in binds] == ["dspex.session.bind"]
    assert binds[0][2]["session_id"] == session_id and binds[0][2]["trace_id"]
