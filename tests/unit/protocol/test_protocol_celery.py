"""The protocol plugged into kombu and Celery: serializer names, settings, results, imports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from kombu.serialization import dumps, loads

from dspex_jobs.app import ACCEPTED_CONTENT, make_app
from dspex_jobs.errors import ConfigurationError, DecompressedTooLarge, PayloadDecodeError
from dspex_jobs.protocol import (
    CONTENT_TYPE,
    SERIALIZER_NAME,
    Codec,
    EncodeOptions,
    check_task_body,
    decode_result,
    decoder_limit_bytes,
    encode_result,
    inspect_frame,
    is_dspex_serializer,
    register_serializer,
)
from dspex_jobs.results import JobResult, JobStatus, Timings
from dspex_jobs.settings import Settings


def test_the_app_sends_dspex_frames_and_accepts_json_and_msgpack_but_never_pickle() -> None:
    app = make_app(Settings.from_env({}))
    assert app.conf.task_serializer == SERIALIZER_NAME == app.conf.result_serializer
    assert ACCEPTED_CONTENT == ("dspex", "json", "msgpack")
    assert "pickle" not in app.conf.accept_content
    # Celery resolves the names to content types: ours is among them
    from kombu.serialization import prepare_accept_content

    assert CONTENT_TYPE in prepare_accept_content(app.conf.accept_content)


def test_settings_choose_the_encoder_and_any_reader_decodes_it() -> None:
    # Given an app forcing JSON, and a worker on the defaults
    forced = make_app(
        Settings.from_env({"DSPEX_PROTOCOL_CODEC": "json", "DSPEX_COMPRESS_THRESHOLD_BYTES": "0"})
    )
    name = forced.conf.task_serializer
    assert name.startswith("dspex-json") and is_dspex_serializer(name)
    # When a message is encoded by each
    content_type, encoding, data = dumps({"q": "why?"}, serializer=name)
    # Expect one content type, and the default decoder reading the JSON frame
    assert (content_type, encoding) == (CONTENT_TYPE, "binary")
    assert inspect_frame(data).codec is Codec.JSON
    assert loads(data, content_type, encoding, accept={CONTENT_TYPE}) == {"q": "why?"}
    assert dumps({"q": "why?"}, serializer="dspex")[0] == CONTENT_TYPE


def test_a_bad_codec_setting_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="DSPEX_PROTOCOL_CODEC"):
        Settings.from_env({"DSPEX_PROTOCOL_CODEC": "pickle"})
    options = EncodeOptions.from_settings(
        Settings.from_env(
            {"DSPEX_PROTOCOL_CODEC": "arrow", "DSPEX_COMPRESS_THRESHOLD_BYTES": "100"}
        )
    )
    assert (options.codec, options.compress_threshold_bytes) == ("arrow", 100)


def test_registering_is_idempotent_and_the_decoder_limit_is_the_largest() -> None:
    assert register_serializer() == register_serializer() == SERIALIZER_NAME
    register_serializer(max_decompressed_bytes=1_000)  # a smaller limit never lowers it
    assert decoder_limit_bytes() >= 64 * 1024 * 1024
    assert not is_dspex_serializer("json") and not is_dspex_serializer(None)


def test_results_round_trip_through_the_same_layer_and_old_json_still_reads() -> None:
    result = JobResult(
        job_id="j1",
        kind="predict",
        status=JobStatus.SUCCEEDED,
        outputs={"answer": "42", "scores": [0.5] * 100},
        timings=Timings(created_at=1.0, started_at=2.0, finished_at=3.0),
        worker="w1",
    )
    stored = encode_result(result)
    assert stored[:2] == b"DX"
    assert JobResult.model_validate(decode_result(stored)) == result
    legacy = result.model_dump_json()  # what the store writes today
    assert JobResult.model_validate(decode_result(legacy)) == result
    assert JobResult.model_validate(decode_result(legacy.encode())) == result
    with pytest.raises(PayloadDecodeError, match="neither a frame nor JSON"):
        decode_result(b"\x00garbage")


def test_producers_import_no_pyarrow_numpy_or_zstandard_for_small_messages() -> None:
    code = (
        "import sys, dspex_jobs\n"
        "from dspex_jobs.protocol import encode, decode\n"
        "assert decode(encode({'q': 'why?', 'context': ['a'] * 10})) == "
        "{'q': 'why?', 'context': ['a'] * 10}\n"
        "print(json.dumps([m for m in ('pyarrow', 'numpy', 'zstandard', 'dspy') "
        "if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", "import json\n" + code], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == []


@pytest.mark.parametrize(
    "body",
    [
        b"",
        5,
        None,
        [[], {}],
        [(), {}, {}, {}],
        ["a", {}, None],
        [[], [], None],
        [[], {}, "x"],
        {"kwargs": {}},
    ],
)
def test_task_bodies_celery_would_crash_on_are_refused(body: object) -> None:
    from celery.exceptions import InvalidTaskError

    with pytest.raises(InvalidTaskError, match=r"\[payload_decode_error\]"):
        check_task_body(body)


@pytest.mark.parametrize(
    "body", [[[], {}, None], ((1,), {"a": 1}, {"chord": None}), {"args": [], "kwargs": {}}]
)
def test_task_bodies_of_the_right_shape_pass(body: object) -> None:
    check_task_body(body)


@pytest.mark.parametrize("method", ["zlib", "bzip2", "lzma", "zstd"])
def test_kombu_compression_is_bounded_too(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from kombu.compression import compress, decompress

    from dspex_jobs.protocol import _kombu

    register_serializer()
    body, content_type = compress(b"hello " * 100, method)
    assert decompress(body, content_type) == b"hello " * 100
    # Given a body that inflates past the budget (lowered here to keep the test small)
    monkeypatch.setitem(_kombu._limit, "bytes", 10_000)
    bomb, content_type = compress(b"\x00" * 50_000, method)
    with pytest.raises(DecompressedTooLarge, match="inflates past 10000 bytes"):
        decompress(bomb, content_type)
