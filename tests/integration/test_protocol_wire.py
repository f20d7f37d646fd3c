"""The protocol on the wire: real redis-server, a real Celery worker, dspex frames both ways."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import pickle
import struct
import time
import uuid
import zlib
from collections.abc import Iterator
from typing import Any

import msgpack
import numpy as np
import pytest
import redis
import zstandard
from celery import Celery, chain, chord, group
from celery.canvas import Signature
from celery.contrib.testing.worker import start_worker
from celery.signals import task_postrun
from conftest import make_settings, redis_db_url
from kombu.utils.json import dumps as kombu_dumps
from kombu.utils.json import loads as kombu_loads

from dspex_jobs import Client, JobKind
from dspex_jobs.app import make_app
from dspex_jobs.embedded import EmbeddedRedis
from dspex_jobs.errors import ClaimCheckMissing, PayloadDecodeError, PayloadTooLarge
from dspex_jobs.keys import Keys
from dspex_jobs.protocol import (
    CLAIM_KEY,
    CONTENT_TYPE,
    MAGIC,
    EncodeOptions,
    check_in,
    check_out,
    decode,
    encode,
    encode_frame,
    inspect_frame,
)
from dspex_jobs.protocol._msgpack import EXT_COLUMNS
from dspex_jobs.settings import Settings

pytestmark = pytest.mark.integration

DB = 24
"""A Redis database no other test module uses."""
ECHO = "tests.protocol.echo"
ADD = "tests.protocol.add"
TOTAL = "tests.protocol.total"


@pytest.fixture(scope="module")
def worker_app(redis_server: EmbeddedRedis) -> Iterator[Celery]:
    """A worker on the default protocol settings, with an echo task whose result travels back
    through the ``dspex`` result serializer."""
    url = redis_db_url(redis_server, DB)
    redis.Redis.from_url(url).flushdb()
    app = make_app(make_settings(url, job_max_retries=0))

    @app.task(name=ECHO)
    def echo(value: Any) -> Any:
        return value

    @app.task(name=ADD)
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name=TOTAL)
    def total(values: list[int]) -> int:
        return sum(values)

    def release_in_worker(sender: Any = None, **_: Any) -> None:
        # A worker that applies a chord (a chain reaching one) tracks its header's results in
        # its thread's backend: let them go, as the pipeline engine does (see release()).
        backend = sender.app.backend
        for by_id in backend._pending_results:
            for entry in list(by_id.values()):
                for result in list(entry.values()) if isinstance(entry, dict) else [entry]:
                    backend.remove_pending_result(result)

    task_postrun.connect(release_in_worker, sender=add, weak=False)
    try:
        with start_worker(
            app,
            pool="threads",
            concurrency=2,
            perform_ping_check=False,
            queues=["general"],
            shutdown_timeout=30,
        ):
            yield app
    finally:
        task_postrun.disconnect(release_in_worker, sender=add)


@pytest.fixture
def conn(worker_app: Celery) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(worker_app.dspex_settings.redis_url)  # type: ignore[attr-defined]
    yield client
    client.close()


def settings_for(app: Celery, **overrides: Any) -> Settings:
    base: Settings = app.dspex_settings  # type: ignore[attr-defined]
    return make_settings(base.redis_url, **overrides)


def test_tables_matrices_and_bytes_go_to_a_worker_and_back(worker_app: Celery) -> None:
    # Given a message with a 2,000-row table, an embedding matrix, bytes and a datetime
    rows = [{"id": i, "text": f"row {i}", "score": i / 3, "ok": i % 2 == 0} for i in range(2000)]
    value = {
        "rows": rows,
        "matrix": np.ones((200, 384), dtype=np.float32),
        "blob": b"\x00\xff",
        "at": np.datetime64("2024-01-02T03:04:05"),
    }
    # When the worker echoes it (the task message and the result both dspex frames)
    back = worker_app.send_task(ECHO, args=(value,), queue="general").get(timeout=30)
    # Expect exactly what was sent
    assert back["rows"] == rows and back["blob"] == b"\x00\xff"
    assert back["matrix"].dtype == np.float32 and back["matrix"].shape == (200, 384)
    assert back["at"] == dt.datetime(2024, 1, 2, 3, 4, 5)  # numpy scalars: Python values


def test_chords_groups_and_chains_run_through_a_worker_on_the_dspex_serializer(
    worker_app: Celery, conn: redis.Redis
) -> None:
    # Given the app's own serializer: the default dspex frames (msgpack inside)
    assert worker_app.conf.task_serializer == "dspex" == worker_app.conf.result_serializer

    def add(x: int, *rest: int) -> Signature:
        return worker_app.signature(ADD, args=(x, *rest), queue="general")

    total = worker_app.signature(TOTAL, queue="general")
    # When a chord of ten, a group of ten, and a chain through a group (which Celery turns
    # into a chord whose header is a ``group``, a dict whose len() counts its tasks) run
    results = [
        chord([add(i, i) for i in range(10)], total).apply_async(),
        group([add(i, 1) for i in range(10)]).apply_async(),
        chain(add(1, 1), group([add(i) for i in range(7)]), total).apply_async(),
    ]
    try:
        # Expect the right answers: each message carried the canvas intact
        assert [result.get(timeout=30) for result in results] == [
            90,
            list(range(1, 11)),
            sum(2 + i for i in range(7)),
        ]
    finally:
        release(worker_app, results)
    # A group as a task's argument comes back as kombu's JSON would give it
    ten = group([add(i, 0) for i in range(10)])
    echoed = worker_app.send_task(ECHO, args=(ten,), queue="general").get(timeout=30)
    assert echoed == kombu_loads(kombu_dumps(ten))
    assert len(Signature.from_dict(echoed, app=worker_app)) == 10
    # and on the wire, the chain's first message is one frame whose embed holds the group
    sent = chain(add(1, 1).set(queue="protocol-idle"), group([add(i) for i in range(9)]))
    release(worker_app, [sent.apply_async()])  # never runs: the queue has no consumer
    raw = conn.lindex("protocol-idle", 0)
    conn.delete("protocol-idle")
    assert raw is not None
    envelope = json.loads(raw)
    assert envelope["content-type"] == CONTENT_TYPE
    _, _, embed = decode(base64.b64decode(envelope["body"]))
    [then] = embed["chain"]
    assert then["subtask_type"] == "group"
    assert len(Signature.from_dict(then, app=worker_app)) == 9


def release(app: Celery, results: list[Any]) -> None:
    """Unsubscribe from the results of a canvas (the chord header's too) now, while Redis is
    up: left to garbage collection, each would retry its unsubscribe for 20 s once the
    session's redis-server has stopped."""
    stack, seen = list(results), set()
    while stack:
        result = stack.pop()
        if result is None or id(result) in seen:
            continue
        seen.add(id(result))
        app.backend.remove_pending_result(result)
        stack.extend(getattr(result, "results", None) or ())
        stack.append(result.parent)


def test_a_worker_decodes_a_producer_with_other_protocol_settings(worker_app: Celery) -> None:
    # Given a producer forcing JSON without compression thresholds, on the same Redis
    producer = make_app(settings_for(worker_app, protocol_codec="json", compress_threshold_bytes=0))
    assert producer.conf.task_serializer != worker_app.conf.task_serializer
    # Expect the worker (auto) to read its messages, and its jobs to run
    assert producer.send_task(ECHO, args=({"q": [1, 2.5, "x"]},), queue="general").get(
        timeout=30
    ) == {"q": [1, 2.5, "x"]}
    with Client(settings_for(worker_app, protocol_codec="json"), app=producer) as client:
        assert client.ping().result(timeout=30).ok


def test_a_large_job_waits_in_redis_and_the_worker_fetches_it(
    worker_app: Celery, conn: redis.Redis
) -> None:
    # Given a producer whose claim-check threshold every job exceeds
    settings = settings_for(worker_app, claim_check_threshold_bytes=64, result_ttl_s=120)
    with Client(settings, app=worker_app) as client:
        # When it submits a job
        handle = client.ping()
        key = Keys().payload(handle.id)
        stored = conn.get(key)
        # Expect the frame in Redis with the result TTL, and a reference in the queue...
        assert stored is not None and stored[:2] == MAGIC
        assert 0 < conn.ttl(key) <= 120
        # ...and the job run by a worker that fetched it; the producer noticed nothing
        assert handle.result(timeout=30).ok
    # The payload is left to expire (a retry or redelivery would need it)
    assert conn.exists(key)


def test_submit_encodes_once_and_limits_the_job_before_compression(worker_app: Celery) -> None:
    with Client(settings_for(worker_app, max_payload_bytes=2_000), app=worker_app) as client:
        job = client._build(JobKind.PING, None, None, {}, queue=None)
        frame = client._encode(job)
        assert repr(frame).startswith("<dspex frame msgpack")
        # 5 KB of repetitive text compresses well below 2,000 bytes, and is still refused
        with pytest.raises(PayloadTooLarge, match="DSPEX_MAX_PAYLOAD_BYTES"):
            client.predict(
                "question: str, context: list[str] -> answer: str",
                question="q",
                context=["x" * 500] * 10,
            )


def test_the_claim_check_round_trips_and_expires(worker_app: Celery, conn: redis.Redis) -> None:
    # Given a 10,000-row table checked in for one second
    rows = [{"id": i, "text": f"row {i}", "score": i / 3} for i in range(10_000)]
    frame = encode_frame({"rows": rows})
    key = Keys().payload(uuid.uuid4().hex)
    reference = check_in(conn, key, frame, ttl_s=1, id="j1", kind="predict")
    assert reference[CLAIM_KEY] == key and reference["codec"] == "msgpack+zstd"
    assert reference["size"] == len(frame.data) < 400_000
    # Expect it back while it lives
    prefix = Keys().payload("")
    assert check_out(conn, reference, key_prefix=prefix)["rows"] == rows
    with pytest.raises(PayloadTooLarge):
        check_out(conn, reference, key_prefix=prefix, max_payload_bytes=1_000)
    # and a typed error once the key has expired
    deadline = time.monotonic() + 5
    while conn.exists(key) and time.monotonic() < deadline:
        time.sleep(0.1)
    with pytest.raises(ClaimCheckMissing, match="expired or was deleted"):
        check_out(conn, reference, key_prefix=prefix)


def test_a_reference_cannot_read_other_keys(conn: redis.Redis) -> None:
    conn.set("dspex:result:x", encode({"secret": 1}))
    with pytest.raises(PayloadDecodeError, match="not a key under"):
        check_out(conn, {CLAIM_KEY: "dspex:result:x"}, key_prefix=Keys().payload(""))


def zlib_bomb(mebibytes: int) -> bytes:
    """A zlib stream of that many MiB of zeros, about 1 KB per MiB (its trailer left off)."""
    deflate = zlib.compressobj()
    first = deflate.compress(b"\x00" * (1 << 20)) + deflate.flush(zlib.Z_FULL_FLUSH)
    # After a full flush the compressor starts afresh: every further MiB is the same bytes
    return first + first[2:] * (mebibytes - 1)


def _bad_bodies() -> dict[str, bytes]:
    good = encode(((), {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}))
    header = struct.Struct(">2sBBBBI")
    zeros = zstandard.ZstdCompressor().compress(b"\x00" * 20_000_000)
    compressed = bytearray(encode("spam " * 10_000))
    # A columns part (extension type 8) whose columns differ in length, and one of a single
    # column of 3 M one-byte values: 3 MB, within the decompression limit, but 3 M row dicts
    ragged = msgpack.packb(
        [[msgpack.ExtType(EXT_COLUMNS, msgpack.packb([["a", "b"], [1, 2], [3]]))], {}, None]
    )
    rows_bomb = msgpack.packb(
        [[msgpack.ExtType(EXT_COLUMNS, msgpack.packb([["a"], [0] * 3_000_000]))], {}, None]
    )
    compressed[len(compressed) // 2] ^= 0xFF
    return {
        "newer frame version": header.pack(MAGIC, 9, 1, 0, 0, 1) + b"\x90",
        "unknown codec": header.pack(MAGIC, 1, 7, 0, 0, 1) + b"\x90",
        "unknown compression": header.pack(MAGIC, 1, 1, 9, 0, 1) + b"\x90",
        "pickle bytes under our content type": pickle.dumps(((), {}, {"boom": 1})),
        "truncated body": good[: len(good) // 2],
        "corrupted zstd body": bytes(compressed),
        "zstd bomb": header.pack(MAGIC, 1, 1, 1, 0, 100) + zeros,
        "not a frame": b"garbage that is not ours",
        "empty body": b"",
        "a frame of the wrong shape": encode(5),
        "a frame of a pair": encode([[], {}]),
        "ragged table columns": header.pack(MAGIC, 1, 1, 0, 0, len(ragged)) + ragged,
        "a table that would inflate into 3 M rows": header.pack(MAGIC, 1, 1, 1, 0, len(rows_bomb))
        + zstandard.ZstdCompressor().compress(rows_bomb),
    }


def test_bad_messages_are_refused_with_typed_errors_and_the_worker_keeps_running(
    worker_app: Celery, conn: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    # Given bad bodies with our content type, a pickle, and a reference to a missing payload
    with worker_app.producer_or_acquire() as producer:
        for body in _bad_bodies().values():
            producer.publish(
                body,
                routing_key="general",
                content_type=CONTENT_TYPE,
                content_encoding="binary",
                headers={"task": ECHO, "id": uuid.uuid4().hex},
            )
        # Celery itself dies on a JSON body of the wrong shape, unless guarded
        producer.publish(
            b"5",
            routing_key="general",
            content_type="application/json",
            content_encoding="utf-8",
            headers={"task": ECHO, "id": "j5"},
        )
        # kombu inflates a compression header before anything else: a zlib bomb
        producer.publish(
            zlib_bomb(70),
            routing_key="general",
            content_type="application/json",
            content_encoding="utf-8",
            headers={"task": ECHO, "id": "z1", "compression": "application/x-gzip"},
        )
        producer.publish(
            pickle.dumps({"boom": 1}),
            routing_key="general",
            content_type="application/x-python-serialize",
            content_encoding="binary",
            headers={"task": ECHO, "id": "p1"},
        )
    missing = {CLAIM_KEY: Keys().payload("gone"), "id": "gone", "kind": "ping"}
    worker_app.send_task("dspex.ping", args=(missing,), queue="general")
    # When a good job follows them
    with Client(settings_for(worker_app), app=worker_app) as client:
        assert client.ping().result(timeout=30).ok  # Expect it to run: the worker is alive
    # and every bad message to be gone from the queue, none waiting unacknowledged
    deadline = time.monotonic() + 10
    while (conn.llen("general") or conn.hlen("unacked")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert conn.llen("general") == 0 and conn.hlen("unacked") == 0
    logged = caplog.text
    for name in (
        "ProtocolVersionError",
        "PayloadDecodeError",
        "DecompressedTooLarge",
        "claim_check_missing",
        "Refusing to deserialize untrusted content",
        "must decode to (args, kwargs, embed), not 0 bytes",
        "must decode to (args, kwargs, embed), not int",
        "zlib message body inflates past",
        "needs that many lists",
        "decompression limit",
        "compression id 9 is unknown",
        "not a dspex-jobs frame (starts with b'\\x80",
    ):
        assert name in logged, name


def test_compressed_messages_shrink_on_the_wire(worker_app: Celery, conn: redis.Redis) -> None:
    # Given a 1 MB repetitive document sent to a queue nobody consumes
    text = "the supplier shall deliver the goods within thirty days. " * 18_000
    worker_app.send_task(ECHO, args=(text,), queue="protocol-idle")
    raw = conn.lindex("protocol-idle", 0)
    conn.delete("protocol-idle")
    # Expect far fewer bytes than the text itself, base64 and envelope included
    assert raw is not None and len(raw) < len(text) / 10
    assert inspect_frame(encode(text, EncodeOptions())).describe() == "msgpack+zstd"
