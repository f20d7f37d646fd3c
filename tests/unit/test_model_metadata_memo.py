"""The memo in front of DSPy's model-metadata lookup gives DSPy's answers, each a fresh copy."""

from __future__ import annotations

from typing import Any

import pytest

from dspex_jobs.runtime.model_metadata import MAX_MODELS, install_model_info_memo, memoized

pytest.importorskip("dspy")


def counting(answers: dict[str, dict[str, Any]]) -> tuple[Any, list[tuple[Any, ...]]]:
    calls: list[tuple[Any, ...]] = []

    def model_info(provider: Any, model: Any, *, namespaces: Any = None) -> dict[str, Any]:
        calls.append((provider, model, namespaces))
        price = answers.get(model, {}).get("price") if isinstance(model, str) else None
        return {"model": model, "nested": {"price": price}}

    return model_info, calls


def test_each_lookup_reaches_dspy_once_and_callers_get_their_own_copy() -> None:
    original, calls = counting({"gpt": {"price": 1.0}})
    lookup = memoized(original)
    first = lookup("openai", "gpt")
    first["nested"]["price"] = 99.0  # a caller that edits its answer
    second = lookup("openai", "gpt")
    assert second == {"model": "gpt", "nested": {"price": 1.0}}
    assert calls == [("openai", "gpt", None)]
    lookup("openai", "gpt", namespaces=["openai"])
    lookup("openai", "gpt", namespaces=("openai",))  # the same key as the list
    lookup("vllm", "gpt")
    assert calls == [
        ("openai", "gpt", None),
        ("openai", "gpt", ["openai"]),
        ("vllm", "gpt", None),
    ]


def test_the_memo_is_bounded_and_unhashable_arguments_go_straight_through() -> None:
    original, calls = counting({})
    lookup = memoized(original)
    for i in range(MAX_MODELS + 10):
        lookup("openai", f"m{i}")
    lookup("openai", f"m{MAX_MODELS + 5}")  # past the bound: asked again
    lookup("openai", "m0")  # remembered
    assert len(calls) == MAX_MODELS + 11
    lookup("openai", ["not", "hashable"])
    lookup("openai", ["not", "hashable"])
    assert len(calls) == MAX_MODELS + 13


def test_installed_memo_answers_as_dspy_does_for_known_and_self_hosted_models() -> None:
    import dspy.clients.costs as costs
    import dspy.clients.model_metadata as metadata

    before = metadata.model_info
    assert install_model_info_memo() is True
    assert install_model_info_memo() is True  # once per process
    assert costs.model_info is metadata.model_info
    original = getattr(before, "__wrapped__", before)
    for provider, model in [
        ("openai", "gpt-4o-mini"),
        ("openai", "extractive-minilm"),  # the local LM server: not in DSPy's map
        ("openai-chat", "gpt-4o-mini"),
    ]:
        assert costs.model_info(provider, model) == original(provider, model)
        assert costs.model_info(provider, model) == original(provider, model)
    assert costs.model_info("openai", "gpt-4o-mini")  # a known model has an entry


def test_the_installed_memo_is_reported_with_the_other_caches() -> None:
    import dspy.clients.costs as costs

    from dspex_jobs.caches import cache_sizes

    install_model_info_memo()
    costs.model_info("openai", "extractive-minilm")
    report = cache_sizes()["runtime.model_metadata"]
    assert report["max"] == MAX_MODELS
    assert 1 <= report["size"] <= MAX_MODELS
