"""``to_dspy()``, the type registry, the caches, and what importing the package costs."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pydantic
import pytest

import dspex_jobs.signature as signature_package
from dspex_jobs.signature import (
    Signature,
    SignatureError,
    clear_caches,
    register_type,
    registered_types,
    unregister_type,
)
from dspex_jobs.signature.compiler import DSPY_CACHE_SIZE, compile_signature
from dspex_jobs.signature.names import RESERVED_NAMES
from dspex_jobs.signature.types import LazyRef, custom_spec
from dspex_jobs.signature.validator import input_adapter

SEED = "question: str, context: list[str] -> answer: str, confidence: float"


class Person(pydantic.BaseModel):
    name: str


@pytest.fixture
def person_registered() -> Iterator[None]:
    register_type("models.Person", Person)
    yield
    unregister_type("models.Person")


def test_to_dspy_is_a_cached_dspy_signature() -> None:
    dspy = pytest.importorskip("dspy")
    compiled = Signature.parse(SEED, "Answer tersely.").to_dspy()
    assert issubclass(compiled, dspy.Signature)
    assert compiled.instructions == "Answer tersely."
    assert compiled is Signature.parse(SEED, "Answer tersely.").to_dspy()
    assert compile_signature.cache_info().maxsize == DSPY_CACHE_SIZE


def test_registered_types(person_registered: None) -> None:
    sig = Signature.parse("text -> person: models.Person")
    assert registered_types() == {"models.Person": Person}
    assert str(sig) == "text -> person: models.Person"
    assert sig.to_dspy().output_fields["person"].annotation is Person


def test_registering_clears_parsed_signatures(person_registered: None) -> None:
    sig = Signature.parse("p: models.Person -> a")
    unregister_type("models.Person")
    with pytest.raises(SignatureError, match=r"unknown type 'models\.Person'"):
        Signature.parse("p: models.Person -> a")
    register_type("models.Person", Person)
    assert Signature.parse("p: models.Person -> a") == sig
    unregister_type("never.Registered")  # unknown names are ignored


def test_per_call_types_do_not_leak() -> None:
    sig = Signature.parse("p: Person -> a", types={"Person": Person})
    assert sig is Signature.parse("p: Person -> a", types={"Person": Person})
    assert sig.inputs[0].type.annotation() is Person
    with pytest.raises(SignatureError, match=r"unknown type 'Person'"):
        Signature.parse("p: Person -> a")


def test_custom_type_with_producer_override() -> None:
    register_type("Blob", bytes, producer=str)
    try:
        sig = Signature.parse("b: Blob -> a")
        assert sig.validate_inputs({"b": "text"}) == {"b": "text"}
        assert sig.inputs[0].type.annotation() is bytes
    finally:
        unregister_type("Blob")


@pytest.mark.parametrize("name", ["str", "typing.List", "dspy.Image", "1abc", "a..b", "", 3])
def test_bad_custom_type_names(name: object) -> None:
    with pytest.raises(ValueError):
        register_type(name, Person)  # type: ignore[arg-type]


def test_per_call_types_follow_the_same_rules() -> None:
    with pytest.raises(ValueError, match="built-in type name"):
        Signature.parse("a: str -> b", types={"str": bytes})


def test_custom_type_cannot_be_none() -> None:
    with pytest.raises(ValueError, match="needs a type"):
        custom_spec("Nothing", None)


def test_lazy_references_resolve_on_demand() -> None:
    import datetime

    assert LazyRef("datetime", "date").resolve() is datetime.date
    assert Signature.parse("d: datetime.date -> a").inputs[0].type.producer_type() is datetime.date


def test_clear_caches_empties_everything() -> None:
    sig = Signature.parse(SEED)
    input_adapter(sig)
    clear_caches()
    assert Signature.parse(SEED) is not sig
    assert input_adapter.cache_info().currsize == 0
    assert compile_signature.cache_info().currsize == 0


def test_reserved_names_cover_dspy_signature_members() -> None:
    # If a DSPy upgrade adds members to dspy.Signature, they must be refused as field names too.
    dspy = pytest.importorskip("dspy")
    members = set(dir(dspy.Signature)) | set(dir(type(dspy.Signature)))
    public = {m for m in members if not m.startswith("_")}
    assert public - RESERVED_NAMES == {"model_dump", "model_validate"} - RESERVED_NAMES


def test_exported_names_match_all() -> None:
    public = {n for n in dir(signature_package) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(signature_package, n)).__name__ == "module"}
    assert public - modules == set(signature_package.__all__)


def test_import_is_light() -> None:
    # Parsing and validating never import DSPy, LiteLLM or torch; only to_dspy() does.
    code = (
        "import sys\n"
        "from dspex_jobs.signature import Signature\n"
        "s = Signature.parse('question: str, img: dspy.Image -> answer: str')\n"
        "s.validate_inputs({'question': 'q', 'img': 'https://x/y.png'})\n"
        "print(','.join(m for m in ('dspy', 'litellm', 'torch') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
