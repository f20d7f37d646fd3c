"""Bad jobs are refused at submit time with a typed error, and nothing reaches the queue."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from conftest import make_settings

from dspex_jobs import (
    Client,
    JobKind,
    PayloadError,
    PayloadTooLarge,
    SignatureError,
    SignatureValidationError,
    UnknownJobKind,
    ValidationError,
)
from dspex_jobs.health import queue_depth

pytestmark = pytest.mark.integration

SIG = "question: str, context: list[str] -> answer: str"


@pytest.fixture
def client(redis_url: str) -> Iterator[Client]:
    with Client(make_settings(redis_url, max_payload_bytes=2_000)) as c:
        yield c


@pytest.fixture
def nothing_enqueued(redis_url: str) -> Iterator[None]:
    yield
    conn = redis.Redis.from_url(redis_url)
    assert [queue_depth(conn, q) for q in ("general", "optimizer", "neural")] == [0, 0, 0]


@pytest.mark.usefixtures("nothing_enqueued")
class TestRefusedAtSubmit:
    def test_unknown_kind(self, client: Client) -> None:
        with pytest.raises(UnknownJobKind, match="expected one of predict"):
            client.submit("summarize", SIG, {"question": "q", "context": []})

    def test_missing_and_extra_inputs_are_all_named(self, client: Client) -> None:
        with pytest.raises(SignatureValidationError) as info:
            client.predict(SIG, contxt=["typo"])
        fields = {e["field"] for e in info.value.errors}
        assert {"question", "context", "contxt"} <= fields

    def test_bad_signature(self, client: Client) -> None:
        with pytest.raises(SignatureError) as info:
            client.predict("question: list[str -> answer", question="q")
        assert info.value.position >= 0

    def test_unencodable_value_names_the_input(self, client: Client) -> None:
        with pytest.raises((PayloadError, SignatureValidationError)) as info:
            client.submit(
                JobKind.PREDICT,
                "question: str, blob -> answer",
                {"question": "q", "blob": object()},
            )
        assert "blob" in str(info.value)

    def test_payload_over_the_limit(self, client: Client) -> None:
        with pytest.raises(PayloadTooLarge, match="DSPEX_MAX_PAYLOAD_BYTES") as info:
            client.predict(SIG, question="q", context=["x" * 500] * 10)
        assert info.value.details["limit"] == 2_000

    def test_unknown_queue_and_bad_lm_options(self, client: Client) -> None:
        with pytest.raises(ValidationError, match="unknown queue"):
            client.submit(JobKind.PING, queue="gpu")
        with pytest.raises(ValidationError, match=r"lm\.temperature"):
            client.predict(SIG, question="q", context=[], lm={"temperature": 9})
        with pytest.raises(ValidationError, match=r"lm\.api_key"):
            client.predict(SIG, question="q", context=[], lm={"api_key": "sk-nope"})

    def test_ping_takes_no_inputs(self, client: Client) -> None:
        with pytest.raises(ValidationError, match="takes no signature"):
            client.submit(JobKind.PING, inputs={"a": 1})


def test_a_good_job_is_enqueued_on_its_kinds_queue(client: Client, redis_url: str) -> None:
    handle = client.predict(SIG, question="q", context=["c"], lm={"temperature": 0.0})
    conn = redis.Redis.from_url(redis_url)
    assert queue_depth(conn, "general") == 1
    assert handle.status().value == "pending"
    assert client.submit(JobKind.PING, queue="neural").kind is JobKind.PING
    assert queue_depth(conn, "neural") == 1
