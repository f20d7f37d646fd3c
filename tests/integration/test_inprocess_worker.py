"""Jobs through a real Celery worker running in this process (celery.contrib.testing)."""

from __future__ import annotations

import pickle
from collections.abc import Iterator

import pytest
import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker
from conftest import LM_MODEL, make_settings, redis_db_url

from dspex_jobs import Client, JobStatus, LMAuthError, LMUnavailable, SignatureValidationError
from dspex_jobs.app import make_app
from dspex_jobs.demo import DEMO_INPUTS, DEMO_SIGNATURE
from dspex_jobs.embedded import EmbeddedRedis
from dspex_jobs.keys import Keys
from dspex_jobs.stack import LocalStack
from dspex_jobs.store import ResultStore
from dspex_jobs.worker import install_worker_hooks

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def worker_app(redis_server: EmbeddedRedis, lm_server: object) -> Iterator[Celery]:
    url = redis_db_url(redis_server, 1)
    redis.Redis.from_url(url).flushdb()
    settings = make_settings(url, lm_server.url, job_max_retries=0)  # type: ignore[attr-defined]
    app = make_app(settings)
    install_worker_hooks(app)
    with start_worker(
        app,
        pool="threads",
        concurrency=2,
        perform_ping_check=False,
        queues=["general"],
        shutdown_timeout=30,
    ):
        yield app


@pytest.fixture
def client(worker_app: Celery) -> Iterator[Client]:
    with Client(worker_app.dspex_settings, app=worker_app) as c:  # type: ignore[attr-defined]
        yield c


def test_ping_round_trip(client: Client) -> None:
    result = client.ping().result(timeout=30)
    assert result.ok and result.outputs is not None
    assert result.outputs["pong"] is True and isinstance(result.outputs["pid"], int)
    assert isinstance(result.outputs["caches"], dict)  # per-process cache sizes ride along
    assert result.timings.finished_at >= result.timings.started_at >= result.timings.created_at


def test_predict_answers_from_the_context_through_the_local_lm(client: Client) -> None:
    handle = client.predict(DEMO_SIGNATURE, **DEMO_INPUTS)
    result = handle.result(timeout=60)
    assert result.outputs is not None
    assert result.outputs["answer"] in " ".join(DEMO_INPUTS["context"])
    assert 0.0 <= result.outputs["confidence"] <= 1.0
    assert result.total_tokens() > 0, result.usage
    assert handle.status() is JobStatus.SUCCEEDED
    assert client.job(handle.id).result(timeout=1).outputs == result.outputs


def test_chain_of_thought_adds_reasoning(client: Client) -> None:
    result = client.chain_of_thought(DEMO_SIGNATURE, **DEMO_INPUTS).result(timeout=60)
    assert result.outputs is not None
    assert set(result.outputs) == {"reasoning", "answer", "confidence"}
    assert result.outputs["reasoning"]


def test_bad_inputs_are_refused_before_anything_is_enqueued(client: Client) -> None:
    with pytest.raises(SignatureValidationError) as info:
        client.predict(DEMO_SIGNATURE, question="q", context="not a list", extra=1)
    fields = {e["field"] for e in info.value.errors}
    assert {"context", "extra"} <= fields


def test_malformed_and_pickled_messages_do_not_kill_the_worker(
    client: Client, worker_app: Celery
) -> None:
    # Given garbage sent as a job, and a pickle body that must never be decoded
    worker_app.send_task("dspex.predict", args=("garbage",), queue="general")
    worker_app.send_task(
        "dspex.predict", args=({"kind": "predict", "version": 99},), queue="general"
    )
    with worker_app.producer_or_acquire() as producer:
        producer.publish(
            pickle.dumps({"boom": 1}),
            routing_key="general",
            content_type="application/x-python-serialize",
            content_encoding="binary",
            headers={"task": "dspex.ping", "id": "x"},
        )
    # When a real job follows them, expect it to complete: the worker is still alive
    assert client.ping().result(timeout=30).ok


def test_a_template_becomes_the_instructions_the_lm_sees(client: Client, lm_server: object) -> None:
    import json
    import urllib.request

    from dspex_jobs import TemplateError

    # Given a template that uses an input, and an input value that looks like template code
    template = "Answer as {{ persona }} would. Stay under {{ limit }} words."
    result = client.predict(
        "question, persona, limit: int -> answer",
        template=template,
        question="What is {{ config }}?",
        persona="a pirate",
        limit=20,
    ).result(timeout=60)
    assert result.ok
    # Expect the rendered text in the prompt the LM received, and the value left literal
    url = lm_server.url + "/requests?last=1"  # type: ignore[attr-defined]
    with urllib.request.urlopen(url, timeout=5) as reply:
        messages = json.loads(reply.read())["data"][-1]["messages"]
    prompt = "\n".join(str(m["content"]) for m in messages)
    assert "Answer as a pirate would. Stay under 20 words." in prompt
    assert "What is {{ config }}?" in prompt
    # And a template naming a field the signature lacks is refused before enqueueing
    with pytest.raises(TemplateError, match="unknown"):
        client.predict("question -> answer", template="{{ nope }}", question="q")


# Tests below run a worker of their own as a process (LocalStack): a second in-process
# worker would share Celery's module state and Redis connections with the module's worker
# and can take it down ("I/O operation on closed file").
def test_wrong_api_key_fails_at_once_with_lm_auth_error(
    redis_server: EmbeddedRedis, lm_server: object
) -> None:
    # Given a worker with the wrong key for the LM, and retries allowed
    url = redis_db_url(redis_server, 4)
    redis.Redis.from_url(url).flushdb()
    stack = LocalStack(
        redis_url=url,
        lm=LM_MODEL,
        lm_api_base=lm_server.url,  # type: ignore[attr-defined]
        queues=["general"],
        worker_args={"general": ["--concurrency", "1"]},
        env={"DSPEX_LM_API_KEY": "wrong-key", "DSPEX_JOB_MAX_RETRIES": "3"},
    )
    with stack, Client(stack.settings) as c:
        handle = c.predict("question -> answer", question="let me in?")
        # Expect a permanent, typed failure on the first attempt: auth errors are not retried
        with pytest.raises(LMAuthError) as info:
            handle.result(timeout=60)
        assert not info.value.retryable
        stored = ResultStore(redis.Redis.from_url(url), Keys(), 60).get(handle.id)
        assert stored is not None and stored.attempt == 1
        assert "401" in info.value.message or info.value.details.get("status") == 401


def test_lm_connection_refused_is_lm_unavailable(redis_server: EmbeddedRedis) -> None:
    # Given a worker whose LM endpoint refuses connections, and no job retries
    url = redis_db_url(redis_server, 3)
    redis.Redis.from_url(url).flushdb()
    stack = LocalStack(
        redis_url=url,
        lm=LM_MODEL,
        lm_api_base="http://127.0.0.1:1/v1",
        queues=["general"],
        worker_args={"general": ["--concurrency", "1"]},
        env={"DSPEX_JOB_MAX_RETRIES": "0"},
    )
    with stack, Client(stack.settings) as c:
        handle = c.predict("question -> answer", question="hello?")
        # Expect the failure typed as a retryable LM error, and the job marked failed
        with pytest.raises(LMUnavailable) as info:
            handle.result(timeout=60)
        assert info.value.retryable and info.value.job_id == handle.id
        assert handle.status() is JobStatus.FAILED
