"""DSPy 3.4 reaching the local LM server over real HTTP, through both of its engines.

``engine="auto"`` is DSPy's native client (its vendored lm15 OpenAI-chat adapter), which
``dspy.LM("openai/...", api_base=...)`` picks by default; ``engine="litellm"`` is the
LiteLLM compatibility engine. Both must parse answers, stream, and map injected faults.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio
from collections.abc import Iterator
from typing import Any, Literal

import dspy
import pytest
from dspy.streaming import StreamListener, StreamResponse
from dspy.utils.exceptions import (
    LMAuthError,
    LMRateLimitError,
    LMServerError,
    LMTimeoutError,
    LMTransportError,
)

from dspex_jobs.lmserver import LMServerConfig, LocalLMServer
from dspex_jobs.lmserver.faults import FaultInjector
from dspex_jobs.lmserver.model import split_sentences

CONTEXT = [
    "Paris is the capital of France. It is famous for the Eiffel Tower.",
    "Berlin is the capital of Germany.",
    "The Nile is the longest river in Africa.",
]
SENTENCES = {s for passage in CONTEXT for s in split_sentences(passage)}
ENGINES = ["auto", "litellm"]


@pytest.fixture(scope="module")
def server() -> Iterator[LocalLMServer]:
    with LocalLMServer() as running:
        yield running


def _lm(url: str, engine: str, **kwargs: Any) -> dspy.LM:
    return dspy.LM(
        "openai/extractive-minilm",
        api_base=url,
        api_key="local",
        cache=False,
        engine=engine,
        **kwargs,
    )


def _causes(exc: BaseException) -> list[str]:
    names = []
    current: BaseException | None = exc
    while current is not None:
        names.append(f"{type(current).__module__}.{type(current).__name__}")
        current = current.__cause__ or current.__context__
    return names


@pytest.mark.parametrize("engine", ENGINES)
def test_predict_answers_with_a_context_sentence(server: LocalLMServer, engine: str) -> None:
    predict = dspy.Predict("question: str, context: list[str] -> answer: str, confidence: float")
    with dspy.context(lm=_lm(server.url, engine)):
        result = predict(question="What is the capital of Germany?", context=CONTEXT)
    assert result.answer == "Berlin is the capital of Germany."
    assert isinstance(result.confidence, float) and 0.0 <= result.confidence <= 1.0


@pytest.mark.parametrize("engine", ENGINES)
def test_chain_of_thought_says_what_it_did(server: LocalLMServer, engine: str) -> None:
    cot = dspy.ChainOfThought("question: str, context: list[str] -> answer: str, confidence: float")
    with dspy.context(lm=_lm(server.url, engine)):
        result = cot(question="Which river is the longest in Africa?", context=CONTEXT)
    assert result.answer in SENTENCES and "Nile" in result.answer
    assert 0.0 <= result.confidence <= 1.0
    assert "similarity" in result.reasoning


class Check(dspy.Signature):
    """Classify the claim against the context."""

    claim: str = dspy.InputField()
    context: list[str] = dspy.InputField()
    topic: Literal["geography", "cooking", "music"] = dspy.OutputField()
    supported: bool = dspy.OutputField()
    evidence: list[str] = dspy.OutputField()


@pytest.mark.parametrize("engine", ENGINES)
def test_literal_bool_and_list_outputs(server: LocalLMServer, engine: str) -> None:
    with dspy.context(lm=_lm(server.url, engine)):
        related = dspy.Predict(Check)(claim="Berlin is Germany's capital city.", context=CONTEXT)
        unrelated = dspy.Predict(Check)(claim="Knead the dough for ten minutes.", context=CONTEXT)
    assert related.topic == "geography"
    assert related.supported is True and unrelated.supported is False
    assert related.evidence[0] == "Berlin is the capital of Germany."
    assert set(related.evidence) <= SENTENCES


@pytest.mark.parametrize("engine", ENGINES)
def test_json_adapter_gets_a_json_object(server: LocalLMServer, engine: str) -> None:
    # (LiteLLM sends response_format={"type": "json_object"}; the native engine sends none,
    # and the server recognises the JSONAdapter's prompt instead.)
    with dspy.context(lm=_lm(server.url, engine), adapter=dspy.JSONAdapter()):
        result = dspy.Predict(Check)(claim="The Nile is in Africa.", context=CONTEXT)
    assert result.topic == "geography" and "Nile" in result.evidence[0]
    assert len(server.stats.recent(1)) == 1


@pytest.mark.parametrize("engine", ENGINES)
def test_async_calls(server: LocalLMServer, engine: str) -> None:
    predict = dspy.Predict("question: str, context: list[str] -> answer: str")

    async def run() -> Any:
        with dspy.context(lm=_lm(server.url, engine)):
            return await predict.acall(question="Capital of France?", context=CONTEXT)

    assert asyncio.run(run()).answer == "Paris is the capital of France."


# LiteLLM's streaming path builds a pydantic schema of a TypedDict with ReadOnly items.
@pytest.mark.filterwarnings(
    "ignore:Items? .* on TypedDict class .* using the `ReadOnly` qualifier:UserWarning"
)
@pytest.mark.parametrize("engine", ENGINES)
def test_streamify_with_a_stream_listener(engine: str) -> None:
    # Given a server that spaces out its SSE chunks
    with LocalLMServer(LMServerConfig(token_delay_ms=2)) as server:
        program = dspy.streamify(
            dspy.ChainOfThought("question: str, context: list[str] -> answer: str"),
            stream_listeners=[StreamListener(signature_field_name="answer")],
            async_streaming=False,
        )
        chunks: list[str] = []
        final = None
        # When DSPy streams the program's answer field
        with dspy.context(lm=_lm(server.url, engine)):
            for item in program(question="What is the capital of Germany?", context=CONTEXT):
                if isinstance(item, StreamResponse):
                    assert item.signature_field_name == "answer"
                    chunks.append(item.chunk)
                elif isinstance(item, dspy.Prediction):
                    final = item
        # Expect the answer to arrive in several pieces that join to the final value
        assert final is not None and final.answer == "Berlin is the capital of Germany."
        assert len([c for c in chunks if c]) >= 4
        assert "".join(chunks).strip() == final.answer
        assert server.stats.snapshot()["streamed"] == 1


def test_what_reached_the_lm_is_dspy_prompt(server: LocalLMServer) -> None:
    with dspy.context(lm=_lm(server.url, "auto")):
        dspy.Predict("question -> answer")(question="Is this logged?")
    messages = server.stats.recent(1)[0]["messages"]
    assert messages[0]["role"] == "system" and "Your input fields are:" in messages[0]["content"]
    assert "Is this logged?" in messages[-1]["content"]


def _first_status_is(status: int) -> LMServerConfig:
    """An always-5xx config whose seed makes the first answer ``status``."""
    for seed in range(100):
        config = LMServerConfig(server_error_rate=1.0, seed=seed)
        if FaultInjector(config).draw().status == status:
            return config
    raise AssertionError(f"no seed below 100 gives {status}")


FAULTS = {
    "429": (
        LMServerConfig(rate_limit_rate=1.0, retry_after_s=2),
        LMRateLimitError,
        "litellm.exceptions.RateLimitError",
    ),
    "500": (_first_status_is(500), LMServerError, "litellm.exceptions.InternalServerError"),
    "503": (_first_status_is(503), LMServerError, "litellm.exceptions.ServiceUnavailableError"),
    "401": (
        LMServerConfig(api_key="not-local"),
        LMAuthError,
        "litellm.exceptions.AuthenticationError",
    ),
}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_injected_faults_map_to_dspy_errors(engine: str, fault: str) -> None:
    config, dspy_error, litellm_error = FAULTS[fault]
    with LocalLMServer(config) as server:
        lm = _lm(server.url, engine, num_retries=0)
        with dspy.context(lm=lm), pytest.raises(dspy_error) as info:
            dspy.Predict("question -> answer")(question="Anyone there?")
        assert getattr(info.value, "status", None) == int(fault)
        if fault == "429":
            assert info.value.retry_after == 2.0
        if engine == "litellm":
            assert litellm_error in _causes(info.value)
        assert server.stats.snapshot()["by_status"] == {fault: 1}


@pytest.mark.parametrize(
    ("engine", "error"), [("auto", LMTransportError), ("litellm", LMTimeoutError)]
)
def test_hang_trips_the_client_timeout(engine: str, error: type[Exception]) -> None:
    with LocalLMServer(LMServerConfig(hang_rate=1.0)) as server:
        lm = _lm(server.url, engine, num_retries=0, timeout=0.5)
        with dspy.context(lm=lm), pytest.raises(error) as info:
            dspy.Predict("question -> answer")(question="Anyone there?")
        assert any("Timeout" in name for name in _causes(info.value))
        assert server.stats.snapshot()["faults"] == {"hang": 1}
