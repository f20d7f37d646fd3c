"""The HTTP layer over a real socket: routes, SSE, concurrency, auth, faults, counters."""

from __future__ import annotations

import http.client
import io
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from dspex_jobs.lmserver import READY_LINE_PREFIX, LMServerConfig, LocalLMServer, serve

MODEL = "extractive-minilm"
QUESTION = "Paris is in France. Berlin is in Germany. Where is Berlin?"


@pytest.fixture(scope="module")
def server() -> Iterator[LocalLMServer]:
    with LocalLMServer() as running:
        yield running


def _call(
    server: LocalLMServer,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout_s: float = 10.0,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout_s)
    try:
        payload = (
            body
            if isinstance(body, bytes)
            else (json.dumps(body).encode() if body is not None else None)
        )
        conn.request(method, path, payload, headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def _chat(content: str = QUESTION, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}


def test_health_models_and_url(server: LocalLMServer) -> None:
    assert server.url == f"http://127.0.0.1:{server.port}/v1"
    status, _, body = _call(server, "GET", "/health")
    assert (status, json.loads(body)["status"]) == (200, "ok")
    status, _, body = _call(server, "GET", "/v1/models")
    assert status == 200 and [m["id"] for m in json.loads(body)["data"]] == [MODEL]
    assert _call(server, "GET", f"/v1/models/{MODEL}")[0] == 200
    assert _call(server, "GET", "/v1/models/gpt-4o")[0] == 404


def test_chat_completion_shape(server: LocalLMServer) -> None:
    status, headers, raw = _call(server, "POST", "/v1/chat/completions", _chat())
    body = json.loads(raw)
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert body["object"] == "chat.completion" and body["model"] == MODEL
    assert body["id"].startswith("chatcmpl-") and isinstance(body["created"], int)
    choice = body["choices"][0]
    assert choice["message"] == {
        "role": "assistant",
        "content": "Berlin is in Germany.",
        "refusal": None,
    }
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["completion_tokens"] == 5  # Berlin / is / in / Germany / .
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # The /v1 prefix is optional, like api_base with or without it.
    assert _call(server, "POST", "/chat/completions", _chat())[0] == 200


def _sse_events(raw: bytes) -> list[str]:
    events = raw.decode().split("\n\n")
    assert events[-1] == ""
    assert all(e.startswith("data: ") for e in events[:-1])
    return [e[len("data: ") :] for e in events[:-1]]


@pytest.mark.parametrize("include_usage", [True, False])
def test_streaming_is_sse_chunks_then_done(server: LocalLMServer, include_usage: bool) -> None:
    body = _chat(stream=True, stream_options={"include_usage": include_usage})
    status, headers, raw = _call(server, "POST", "/v1/chat/completions", body)
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = _sse_events(raw)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Berlin is in Germany."
    pieces = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(pieces) == 4
    finished = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert [c["choices"][0]["finish_reason"] for c in finished] == ["stop"]
    if include_usage:
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5
    else:
        assert all("usage" not in c for c in chunks)


def test_token_delay_spaces_out_chunks() -> None:
    with LocalLMServer(LMServerConfig(token_delay_ms=40)) as server:
        started = time.perf_counter()
        _call(server, "POST", "/v1/chat/completions", _chat(stream=True))
        # role chunk + 4 pieces + stop chunk + [DONE]: six gaps of 40 ms
        assert time.perf_counter() - started >= 0.24


def test_latency_overlaps_across_concurrent_requests() -> None:
    # Given 300 ms of added latency per request
    with LocalLMServer(LMServerConfig(latency_ms=300)) as server:
        statuses: list[int] = []

        def one() -> None:
            statuses.append(_call(server, "POST", "/v1/chat/completions", _chat())[0])

        # When 8 requests arrive at once
        threads = [threading.Thread(target=one) for _ in range(8)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
        # Expect them to overlap: ~0.3 s in all, not 2.4 s
        assert statuses == [200] * 8
        assert 0.3 <= elapsed < 1.0
        assert server.stats.snapshot()["max_in_flight"] == 8


def test_api_key_is_required_when_configured() -> None:
    with LocalLMServer(LMServerConfig(api_key="sekret")) as server:
        status, _, body = _call(server, "POST", "/v1/chat/completions", _chat())
        assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"
        wrong = {"Authorization": "Bearer nope"}
        assert _call(server, "GET", "/v1/models", headers=wrong)[0] == 401
        right = {"Authorization": "Bearer sekret"}
        assert _call(server, "POST", "/v1/chat/completions", _chat(), right)[0] == 200
        assert _call(server, "GET", "/health")[0] == 200
        assert server.stats.snapshot()["faults"] == {"auth": 2}


def test_stats_requests_log_and_reset() -> None:
    with LocalLMServer(LMServerConfig(request_log_size=2)) as server:
        for i in range(3):
            _call(server, "POST", "/v1/chat/completions", _chat(f"message {i}"))
        _call(server, "POST", "/v1/chat/completions", {"model": MODEL})  # 400
        stats = json.loads(_call(server, "GET", "/v1/stats")[2])
        assert stats["requests_total"] == 4 and stats["chat_completions"] == 3
        assert stats["by_status"] == {"200": 3, "400": 1} and stats["in_flight"] == 0
        logged = json.loads(_call(server, "GET", "/v1/requests?last=5")[2])["data"]
        assert [r["messages"][0]["content"] for r in logged] == ["message 1", "message 2"]
        assert [r["seq"] for r in logged] == [2, 3]
        assert _call(server, "POST", "/v1/stats/reset")[0] == 200
        stats = json.loads(_call(server, "GET", "/v1/stats")[2])
        assert stats["requests_total"] == 0 and stats["by_status"] == {}
        assert json.loads(_call(server, "GET", "/v1/requests?last=5")[2])["data"] == []


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_value"),
        ({"model": MODEL, "messages": []}, 400, "invalid_value"),
        (
            {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
            404,
            "model_not_found",
        ),
    ],
)
def test_bad_requests_get_openai_errors(
    server: LocalLMServer, body: Any, status: int, code: str
) -> None:
    got, _, raw = _call(server, "POST", "/v1/chat/completions", body)
    assert (got, json.loads(raw)["error"]["code"]) == (status, code)


def test_oversized_body_is_413() -> None:
    with LocalLMServer(LMServerConfig(max_request_bytes=1000)) as server:
        status, _, raw = _call(server, "POST", "/v1/chat/completions", _chat("x " * 1000))
        assert (status, json.loads(raw)["error"]["code"]) == (413, "request_too_large")


def test_unknown_route_is_404(server: LocalLMServer) -> None:
    assert _call(server, "GET", "/v1/nothing")[0] == 404
    assert _call(server, "POST", "/v1/completions", {"prompt": "x"})[0] == 404


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": [{"type": "text", "text": "Parts. Are fine?"}]}],
        [{"role": "system", "content": "Only a system message."}],
        [{"role": "user", "content": None}],
        [{"role": "user"}, "junk", 5],
        [{"role": "user", "content": "[[ ## broken ## ]]\n\n[[ ## also ## ]]"}],
    ],
)
def test_unexpected_prompt_shapes_never_500(server: LocalLMServer, messages: Any) -> None:
    status, _, raw = _call(
        server, "POST", "/v1/chat/completions", {"model": MODEL, "messages": messages}
    )
    assert status == 200
    assert isinstance(json.loads(raw)["choices"][0]["message"]["content"], str)


def test_injected_429_over_http() -> None:
    with LocalLMServer(LMServerConfig(rate_limit_rate=1.0, retry_after_s=3)) as server:
        status, headers, raw = _call(server, "POST", "/v1/chat/completions", _chat())
        assert status == 429 and headers["Retry-After"] == "3"
        assert json.loads(raw)["error"]["type"] == "requests"
        assert server.stats.snapshot()["faults"] == {"rate_limit": 1}


def test_hang_with_hang_s_answers_late() -> None:
    with LocalLMServer(LMServerConfig(hang_rate=1.0, hang_s=0.3)) as server:
        started = time.perf_counter()
        assert _call(server, "POST", "/v1/chat/completions", _chat())[0] == 200
        assert time.perf_counter() - started >= 0.3


def test_endless_hang_times_the_client_out_and_stop_still_returns() -> None:
    server = LocalLMServer(LMServerConfig(hang_rate=1.0)).start()
    try:
        with pytest.raises((TimeoutError, socket.timeout)):
            _call(server, "POST", "/v1/chat/completions", _chat(), timeout_s=0.5)
        # A second client hangs as well, until the server stops under it
        errors: list[BaseException] = []

        def hang() -> None:
            try:
                _call(server, "POST", "/v1/chat/completions", _chat(), timeout_s=30)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=hang)
        thread.start()
        time.sleep(0.3)
        assert server.stats.snapshot()["in_flight"] >= 1
    finally:
        started = time.perf_counter()
        server.stop()
    thread.join(5)
    assert time.perf_counter() - started < 3
    assert not thread.is_alive() and errors  # the connection closed without an answer


class _SlowEmbedder:
    """Loads for a while, then embeds every text as the same unit vector."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def load(self) -> None:
        self.release.wait(10)

    def encode(self, texts: Any) -> list[list[float]]:
        return [[1.0, 0.0] for _ in texts]


def test_health_is_503_until_the_model_is_loaded() -> None:
    # Given a server whose model is still loading
    embedder = _SlowEmbedder()
    server = LocalLMServer(LMServerConfig(), embedder=embedder)
    starter = threading.Thread(target=server.start)
    starter.start()
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                status, _, body = _call(server, "GET", "/health")
                break
            except (RuntimeError, OSError):
                time.sleep(0.02)  # not bound yet
        # Expect /health to say so, and a chat request to wait for the model
        assert (status, json.loads(body)["status"]) == (503, "loading")
        answers: list[int] = []
        waiting = threading.Thread(
            target=lambda: answers.append(_call(server, "POST", "/v1/chat/completions", _chat())[0])
        )
        waiting.start()
        time.sleep(0.2)
        assert answers == []
        embedder.release.set()
        starter.join(5)
        waiting.join(5)
        assert answers == [200]
        assert _call(server, "GET", "/health")[0] == 200
    finally:
        embedder.release.set()
        starter.join(5)
        server.stop()


def test_serve_prints_the_ready_line_and_stops_on_its_event() -> None:
    stop, out = threading.Event(), io.StringIO()
    thread = threading.Thread(
        target=serve, args=(LMServerConfig(),), kwargs={"stop_event": stop, "out": out}
    )
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.02)
        line = out.getvalue()
        assert line.startswith(READY_LINE_PREFIX + "http://127.0.0.1:") and line.endswith("/v1\n")
        url = line[len(READY_LINE_PREFIX) :].strip()
        with urllib.request.urlopen(url.removesuffix("/v1") + "/health", timeout=5) as response:
            assert response.status == 200
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
