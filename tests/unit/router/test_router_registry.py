"""The registry: registering, replacing, removing, lazy imports, entry points, the defaults."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from typing import Any

import pytest

from dspex_jobs.errors import ConfigurationError, DuplicateImplementation, NoImplementation
from dspex_jobs.router import (
    ENTRY_POINT_GROUP,
    Implementation,
    ImplementationKind,
    Registry,
    builtin_registry,
    default_registry,
    default_router,
    implementation,
)
from dspex_jobs.router import registry as registry_module


def shout(text: str) -> str:
    return text.upper()


def whisper(text: str) -> str:
    return text.lower()


NOT_CALLABLE = 42


def test_register_a_function_and_resolve_it() -> None:
    registry = Registry()
    impl = registry.register("text.shout", shout, description="upper-case")
    assert impl.name == "native" and impl.kind is ImplementationKind.NATIVE
    assert impl.target == f"{__name__}:shout" and impl.queue is None
    assert registry.implementations("text.shout") == (impl,)
    assert impl.resolve() is shout
    assert "text.shout" in registry and registry.operations() == ["text.shout"]


def test_register_by_target_imports_on_first_use() -> None:
    registry = Registry()
    impl = registry.register("text.shout", target=f"{__name__}:shout")
    assert impl.function is None  # nothing imported yet
    assert impl.resolve()("a") == "A"
    assert impl.function is shout  # cached


def test_the_decorator_registers_and_returns_the_function() -> None:
    registry = Registry()

    @registry.implementation("text.echo", name="plain", priority=3)
    def echo(text: str) -> str:
        return text

    assert echo("x") == "x"
    (impl,) = registry.implementations("text.echo")
    assert (impl.name, impl.priority, impl.function) == ("plain", 3, echo)


def test_registering_a_name_twice_is_an_error_unless_replacing() -> None:
    registry = Registry()
    registry.register("text.case", shout)
    version = registry.version
    with pytest.raises(DuplicateImplementation, match="replace=True") as caught:
        registry.register("text.case", whisper)
    assert caught.value.details == {"operation": "text.case", "implementation": "native"}
    assert registry.version == version  # nothing changed
    registry.register("text.case", whisper, replace=True)
    assert registry.implementations("text.case")[0].function is whisper
    registry.register("text.case", shout, name="loud")  # another name is fine
    assert [i.name for i in registry.implementations("text.case")] == ["native", "loud"]


def test_dspy_implementations_get_a_queue_and_must_be_importable() -> None:
    registry = Registry()
    impl = registry.register("text.think", shout, kind="dspy")
    assert impl.kind is ImplementationKind.DSPY and impl.queue == "general"
    assert registry.register("text.train", whisper, kind="dspy", queue="optimizer").queue == (
        "optimizer"
    )

    def local(text: str) -> str:  # pragma: no cover - never called
        return text

    with pytest.raises(ValueError, match="importable"):
        registry.register("text.local", local, kind="dspy")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"operation": "bad name", "function": shout}, "dotted identifiers"),
        ({"operation": "a..b", "function": shout}, "dotted identifiers"),
        ({"operation": "ok", "function": shout, "name": "no-dash"}, "identifiers"),
        ({"operation": "ok", "function": shout, "kind": "python"}, "unknown implementation kind"),
        ({"operation": "ok", "target": "no_colon"}, "package.module:function"),
        ({"operation": "ok"}, "a function or a target"),
        ({"operation": "ok", "function": shout, "target": "m:f"}, "a function or a target"),
        ({"operation": "ok", "function": shout, "queue": "general"}, "take no queue"),
        ({"operation": "ok", "function": shout, "kind": "dspy", "queue": "gpu"}, "unknown queue"),
    ],
)
def test_malformed_registrations_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Registry().register(**kwargs)


def test_unregister_one_implementation_or_the_operation() -> None:
    registry = Registry()
    registry.register("text.case", shout)
    registry.register("text.case", whisper, name="quiet")
    registry.unregister("text.case", "native")
    assert [i.name for i in registry.implementations("text.case")] == ["quiet"]
    registry.unregister("text.case", "quiet")  # the last one: the operation goes too
    assert "text.case" not in registry
    registry.register("text.case", shout)
    registry.unregister("text.case")
    with pytest.raises(NoImplementation):
        registry.unregister("text.case")
    registry.register("text.case", shout)
    with pytest.raises(NoImplementation, match=r"text\.case/nope"):
        registry.unregister("text.case", "nope")


def test_unknown_operations_name_what_is_known() -> None:
    registry = Registry()
    registry.register("text.shout", shout)
    with pytest.raises(NoImplementation, match=r"unknown operation 'text\.nope'.*text\.shout") as e:
        registry.implementations("text.nope")
    assert e.value.details == {"operation": "text.nope"}
    with pytest.raises(NoImplementation, match="registered operations: none"):
        Registry().implementations("x")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_such_module_xyz:f", "ModuleNotFoundError"),
        (f"{__name__}:missing", "AttributeError"),
        (f"{__name__}:NOT_CALLABLE", "not callable"),
    ],
)
def test_targets_that_cannot_be_imported_fail_with_a_configuration_error(
    target: str, message: str
) -> None:
    impl = Registry().register("text.x", target=target)
    with pytest.raises(ConfigurationError, match=message):
        impl.resolve()


def test_implementations_compare_by_identity_fields_not_by_the_cached_function() -> None:
    a = Implementation("op", "native", ImplementationKind.NATIVE, f"{__name__}:shout")
    b = Implementation(
        "op", "native", ImplementationKind.NATIVE, f"{__name__}:shout", function=shout
    )
    assert a == b


# -- entry points ----------------------------------------------------------------------------


class FakeEntryPoint:
    """Stands in for importlib.metadata.EntryPoint (only what the registry reads)."""

    def __init__(self, name: str, loaded: Any = None, error: Exception | None = None) -> None:
        self.name = name
        self.value = f"fake.module:{name}"
        self._loaded = loaded
        self._error = error
        self.loads = 0

    def load(self) -> Any:
        self.loads += 1
        if self._error is not None:
            raise self._error
        return self._loaded


@pytest.fixture
def entry_points(monkeypatch: pytest.MonkeyPatch) -> list[FakeEntryPoint]:
    available: list[FakeEntryPoint] = []
    calls: list[str] = []

    def fake_entry_points(*, group: str) -> list[FakeEntryPoint]:
        calls.append(group)
        return [ep for ep in available if group == ENTRY_POINT_GROUP]

    monkeypatch.setattr(metadata, "entry_points", fake_entry_points)
    return available


def test_entry_points_are_loaded_lazily_on_first_lookup(
    entry_points: list[FakeEntryPoint],
) -> None:
    # Given an installed package that declares two operations
    score = FakeEntryPoint("acme.score", loaded=shout)
    other = FakeEntryPoint("acme.other", loaded=whisper)
    entry_points.extend([score, other])
    registry = Registry(entry_point_group=ENTRY_POINT_GROUP)
    assert registry.operations() == []
    # When one of them is looked up
    (impl,) = registry.implementations("acme.score")
    # Expect only that entry point to be imported, as a native implementation
    assert impl.function is shout and impl.kind is ImplementationKind.NATIVE
    assert (score.loads, other.loads) == (1, 0)
    registry.implementations("acme.score")
    assert score.loads == 1
    with pytest.raises(NoImplementation):
        registry.implementations("acme.unknown")


def test_an_entry_point_may_provide_implementation_objects(
    entry_points: list[FakeEntryPoint],
) -> None:
    native = Implementation("acme.rank", "native", ImplementationKind.NATIVE, f"{__name__}:shout")
    dspy = Implementation(
        "acme.rank", "dspy", ImplementationKind.DSPY, f"{__name__}:whisper", queue="neural"
    )
    entry_points.append(FakeEntryPoint("acme.rank", loaded=[native, dspy]))
    entry_points.append(
        FakeEntryPoint(
            "acme.single",
            loaded=Implementation(
                "acme.single", "native", ImplementationKind.NATIVE, f"{__name__}:shout"
            ),
        )
    )
    registry = Registry(entry_point_group=ENTRY_POINT_GROUP)
    assert registry.implementations("acme.rank") == (native, dspy)
    assert len(registry.implementations("acme.single")) == 1


@pytest.mark.parametrize(
    ("entry_point", "message"),
    [
        (FakeEntryPoint("acme.broken", error=ImportError("no module")), "failed to load"),
        (FakeEntryPoint("acme.broken", loaded=NOT_CALLABLE), "must be a function"),
        (
            FakeEntryPoint(
                "acme.broken",
                loaded=[
                    Implementation(
                        "other.op", "native", ImplementationKind.NATIVE, f"{__name__}:shout"
                    )
                ],
            ),
            "must be a function",
        ),
    ],
)
def test_broken_entry_points_are_configuration_errors(
    entry_points: list[FakeEntryPoint], entry_point: FakeEntryPoint, message: str
) -> None:
    entry_points.append(entry_point)
    with pytest.raises(ConfigurationError, match=message):
        Registry(entry_point_group=ENTRY_POINT_GROUP).implementations("acme.broken")


def test_registries_without_a_group_never_read_entry_points(
    entry_points: list[FakeEntryPoint],
) -> None:
    entry_points.append(FakeEntryPoint("acme.score", loaded=shout))
    with pytest.raises(NoImplementation):
        Registry().implementations("acme.score")


# -- built-ins and the defaults ----------------------------------------------------------------


def test_builtin_registry_holds_the_builtin_operations() -> None:
    registry = builtin_registry()
    assert registry.operations() == [
        "chain_of_thought",
        "metric.exact_match",
        "metric.token_f1",
        "predict",
        "search",
        "signature.validate",
        "template.render",
    ]
    kinds = {
        op: [(i.kind.value, i.queue) for i in registry.implementations(op)]
        for op in registry.operations()
    }
    assert kinds["predict"] == [("dspy", "general")]
    assert kinds["chain_of_thought"] == [("dspy", "general")]
    assert kinds["metric.token_f1"] == [("native", None), ("dspy", "optimizer")]
    assert kinds["template.render"] == [("native", None)]
    assert kinds["search"] == [("native", None)]  # neural.operations:search_operation
    assert builtin_registry() is not registry


def test_default_registry_and_router_are_process_wide_and_use_entry_points() -> None:
    assert default_registry() is default_registry()
    assert default_router() is default_router()
    assert default_router().registry is default_registry()
    assert default_registry()._entry_point_group == ENTRY_POINT_GROUP


def test_module_level_decorator_registers_on_the_default_registry() -> None:
    @implementation("tests.router.decorated", description="test only")
    def decorated(x: int) -> int:
        return x + 1

    try:
        assert default_router().call("tests.router.decorated", 1) == 2
    finally:
        default_registry().unregister("tests.router.decorated")


def test_importing_the_router_imports_neither_dspy_nor_jinja() -> None:
    code = (
        "import sys\n"
        "from dspex_jobs.router import default_router\n"
        "router = default_router()\n"
        "router.route('predict'); router.route('template.render')\n"
        "router.call('metric.token_f1', 'a b', ['b'])\n"
        "print(','.join(m for m in ('dspy', 'litellm', 'torch', 'jinja2') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_registry_module_exports() -> None:
    assert set(registry_module.__all__) == {
        "ENTRY_POINT_GROUP",
        "Implementation",
        "ImplementationKind",
        "Registry",
    }
