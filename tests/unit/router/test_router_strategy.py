"""The strategy: native first, forcing, capability, priority, queues, and cached decisions."""

from __future__ import annotations

import pytest

from dspex_jobs.errors import NoImplementation, ValidationError
from dspex_jobs.router import (
    ImplementationKind,
    Registry,
    Route,
    Router,
    Strategy,
    requirements_of,
)
from dspex_jobs.signature import Signature


def fast(x: str) -> str:
    return f"fast:{x}"


def careful(x: str) -> str:
    return f"careful:{x}"


def smart(x: str) -> str:
    return f"smart:{x}"


@pytest.fixture
def registry() -> Registry:
    registry = Registry()
    # Registered dspy first: the strategy, not registration order, puts native first.
    registry.register("text.answer", smart, kind="dspy", queue="general")
    registry.register("text.answer", fast, unsupported={"type:dspy.Image"})
    registry.register("text.answer", careful, name="careful")
    return registry


def test_native_is_preferred_and_the_rest_are_fallbacks(registry: Registry) -> None:
    route = Router(registry).route("text.answer")
    assert route.implementation.name == "native"
    assert [i.name for i in route.fallbacks] == ["careful", "dspy"]
    assert route.queue is None and route.in_process
    assert route.candidates == (route.implementation, *route.fallbacks)


def test_priority_orders_implementations_of_the_same_kind(registry: Registry) -> None:
    registry.register("text.answer", careful, name="careful", priority=5, replace=True)
    route = Router(registry).route("text.answer")
    assert [i.name for i in route.candidates] == ["careful", "native", "dspy"]


def test_forcing_a_kind_keeps_only_that_kind(registry: Registry) -> None:
    route = Router(registry).route("text.answer", implementation="dspy")
    assert route.implementation.kind is ImplementationKind.DSPY
    assert route.fallbacks == () and route.queue == "general" and not route.in_process
    native = Router(registry).route("text.answer", implementation="native")
    assert [i.name for i in native.candidates] == ["native", "careful"]


def test_forcing_a_name_picks_exactly_that_implementation(registry: Registry) -> None:
    route = Router(registry).route("text.answer", implementation="careful")
    assert route.candidates == (route.implementation,)
    assert route.implementation.name == "careful"


def test_forcing_something_absent_is_an_error_never_a_substitution() -> None:
    registry = Registry()
    registry.register("text.answer", fast)
    with pytest.raises(NoImplementation, match=r"no 'dspy' implementation; it has: native") as e:
        Router(registry).route("text.answer", implementation="dspy")
    assert e.value.details["implementation"] == "dspy"
    assert not e.value.retryable


def test_capabilities_pass_over_implementations_that_cannot_handle_them(
    registry: Registry,
) -> None:
    # Given a native implementation that cannot handle images
    router = Router(registry)
    sig = Signature.parse("question: str, photo: dspy.Image -> answer")
    # When the request needs images
    route = router.route("text.answer", requires=requirements_of(sig))
    # Expect the next one to be chosen, and the route to say why the first was skipped
    assert route.implementation.name == "careful"
    assert route.skipped == (("native", "cannot handle type:dspy.Image"),)


def test_when_nothing_can_handle_the_request_the_error_lists_why() -> None:
    registry = Registry()
    registry.register("text.answer", fast, unsupported={"streaming"})
    with pytest.raises(NoImplementation, match="native: cannot handle streaming") as caught:
        Router(registry).route("text.answer", requires=["streaming"])
    assert caught.value.details["skipped"] == {"native": "cannot handle streaming"}


def test_a_strategy_may_prefer_dspy() -> None:
    registry = Registry()
    registry.register("text.answer", fast)
    registry.register("text.answer", smart, kind="dspy")
    route = Router(registry, strategy=Strategy(prefer=["dspy"])).route("text.answer")
    assert [i.kind.value for i in route.candidates] == ["dspy", "native"]


def test_the_job_queue_overrides_a_dspy_implementations_queue(registry: Registry) -> None:
    router = Router(registry)
    assert router.route("text.answer", implementation="dspy", queue="optimizer").queue == (
        "optimizer"
    )
    assert router.route("text.answer", queue="optimizer").queue is None  # native: in process
    with pytest.raises(ValidationError, match="unknown queue 'gpu'"):
        router.route("text.answer", queue="gpu")


def test_decisions_are_cached_until_the_registry_changes(registry: Registry) -> None:
    router = Router(registry)
    first = router.route("text.answer")
    assert router.route("text.answer") is first
    assert router.route("text.answer", requires=()) is first  # same key, any iterable
    registry.register("text.answer", careful, name="careful", priority=9, replace=True)
    assert router.route("text.answer").implementation.name == "careful"
    router.clear_decisions()
    assert router.route("text.answer") is not first


def test_the_decision_cache_is_bounded(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    from dspex_jobs.router import router as router_module

    monkeypatch.setattr(router_module, "DECISION_CACHE_SIZE", 2)
    router = Router(registry)
    for needs in (["a"], ["b"], ["c"]):
        router.route("text.answer", requires=needs)
    assert len(router._decisions) <= 2


def test_requirements_of_walks_every_type_in_a_signature() -> None:
    sig = Signature.parse(
        "q: str, photos: list[dspy.Image], mode: Literal['a', 'b'] -> n: int | None"
    )
    assert requirements_of(sig) == {
        "type:str",
        "type:list",
        "type:dspy.Image",
        "type:Literal",
        "type:int",
        "type:None",
    }


def test_routes_are_plain_frozen_records(registry: Registry) -> None:
    route = Router(registry).route("text.answer")
    assert isinstance(route, Route)
    with pytest.raises(AttributeError):
        route.queue = "general"  # type: ignore[misc]
