"""Hypothesis properties of the parser.

* Round trip: for generated signatures (every construct, random spacing and spellings),
  ``parse(str(sig)) == sig`` and the canonical text is a fixed point.
* Robustness: arbitrary text, signature-like noise and mangled signatures raise nothing but
  :class:`SignatureError`, always with a position inside the text.
* The quick path agrees with the reference parser on every text it accepts, and gives up on
  every text the reference parser refuses.

Signatures are built by plain Python from a Hypothesis-drawn seed: drawing each of their dozens
of parts through Hypothesis costs milliseconds per example on a small machine, a seed about a
tenth of one, which is what lets the ``slow`` tests run ``DSPEX_TEST_HYPOTHESIS_EXAMPLES`` (default
10,000) examples each in seconds. A failure prints the offending text.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dspex_jobs.signature import SignatureError
from dspex_jobs.signature.parser import parse_fields
from dspex_jobs.signature.quick import quick_parse
from dspex_jobs.signature.signature import _parse_uncached
from dspex_jobs.signature.tokenizer import offsets, scan

# Read at import: the autouse ``clean_environ`` fixture removes DSPEX_ variables before each test.
SLOW_EXAMPLES = int(os.environ.get("DSPEX_TEST_HYPOTHESIS_EXAMPLES", "10000"))
FAST_EXAMPLES = 300

NAMES = [
    "a", "b", "q", "x1", "question", "context", "answer", "confidence", "match", "case", "type",
    "input", "output", "model_x", "camelCase", "snake_case_2", "café", "résumé", "Ünïcode", "ab_",
]  # fmt: skip
SIMPLE_TYPES = [
    "str", "int", "float", "bool", "bytes", "complex", "Any", "typing.Any", "list", "dict",
    "tuple", "set", "frozenset", "dspy.Image", "dspy.History", "dspy.Code", "dspy.Tool",
    "dspy . Audio", "datetime.datetime", "uuid.UUID", "decimal.Decimal", "dspy.Code['python']",
]  # fmt: skip
ONE_ARG = ["list", "List", "typing.List", "set", "Set", "frozenset", "FrozenSet", "Sequence"]
TWO_ARGS = ["dict", "Dict", "typing.Dict", "Mapping"]
CHARS = "ab 'x\"\\\n\t->,[]é😀\x00\u2028"
SPACES = ["", "", " ", " ", "  ", "\n", "\t", " \n "]


def literal_value(rng: random.Random) -> str:
    pick = rng.randrange(6)
    if pick == 0:
        return str(rng.randint(-(10**15), 10**15))
    if pick == 1:
        return hex(rng.randrange(4096))
    if pick == 2:
        return rng.choice(["True", "False", "None"])
    text = "".join(rng.choice(CHARS) for _ in range(rng.randrange(6)))
    if pick == 3 and '"' not in text and "\\" not in text and "\n" not in text:
        return '"' + text + '"'
    return repr(text)


def type_text(rng: random.Random, depth: int = 0) -> str:
    s = rng.choice(SPACES)
    if depth >= 3 or rng.random() < 0.35:
        return rng.choice(SIMPLE_TYPES)
    inner = type_text(rng, depth + 1)
    other = type_text(rng, depth + 1)
    choices = [
        f"{rng.choice(ONE_ARG)}[{s}{inner}{s}]",
        f"{rng.choice(TWO_ARGS)}[{inner},{s}{other}]",
        f"tuple[{inner}, ...]",
        f"Tuple[{inner}, {other},]",
        f"Optional[{inner}]",
        f"Union[{inner}, {other}]",
        f"{inner}{s}|{s}{other}",
        f"{inner} | None",
        f"None | {inner}",
        "Literal[" + ", ".join(literal_value(rng) for _ in range(rng.randint(1, 4))) + "]",
    ]
    return rng.choice(choices)


def signature_text(rng: random.Random) -> str:
    names = rng.sample(NAMES, rng.randrange(7))
    cut = rng.randint(0, len(names))
    sides = []
    for side in (names[:cut], names[cut:]):
        items = []
        for name in side:
            item = name
            if rng.random() < 0.7:
                item += rng.choice(SPACES) + ":" + rng.choice(SPACES) + type_text(rng)
            if rng.random() < 0.25:
                item += rng.choice(SPACES) + repr("".join(rng.sample(CHARS, rng.randrange(5))))
            items.append(item)
        text = ("," + rng.choice(SPACES)).join(items)
        if items and rng.random() < 0.3:
            text += ","
        sides.append(rng.choice(SPACES) + text + rng.choice(SPACES))
    return sides[0] + "->" + sides[1]


def mangled(rng: random.Random) -> str:
    text = signature_text(rng)
    for _ in range(rng.randint(1, 3)):
        at = rng.randint(0, len(text))
        if rng.random() < 0.5:
            text = text[:at] + text[at + 1 :]
        else:
            text = text[:at] + rng.choice(":,[]|.'\"->( #=*\\é") + text[at:]
    return text


seeds = st.integers(min_value=0, max_value=2**64).map(random.Random)
signatures = seeds.map(signature_text)
noise = st.text(alphabet=st.sampled_from(list("ab_Lx:,[]|.'\"-> \n\\0197()=*#é")), max_size=40)
texts = st.one_of(st.text(max_size=60), noise, seeds.map(mangled), signatures)


def run(strategy: st.SearchStrategy[str], check: Callable[[str], None], examples: int) -> None:
    """Check ``examples`` examples drawn from ``strategy``, with no deadline and no database."""
    settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )(given(strategy)(check))()


def round_trip(text: str) -> None:
    sig = _parse_uncached(text)
    canonical = str(sig)
    again = _parse_uncached(canonical)
    assert again == sig, (text, canonical)
    assert str(again) == canonical
    assert hash(again) == hash(sig)


def only_signature_errors(text: str) -> None:
    try:
        _parse_uncached(text)
    except SignatureError as error:
        assert 0 <= error.position <= len(text), text
        assert error.text == text


def fast_paths_agree(text: str) -> None:
    assert len(offsets(text)) == len(scan(text))
    quick = quick_parse(text)
    try:
        reference = parse_fields(text)
    except SignatureError:
        assert quick is None, text
        return
    assert quick is None or quick == reference, text


def test_generated_signatures_cover_the_grammar() -> None:
    # The generator must mostly produce valid text, or the round trip would prove little.
    rng = random.Random(7)
    parsed = [_parse_uncached(signature_text(rng)) for _ in range(200)]
    canonical = " ".join(str(sig) for sig in parsed)
    for construct in ("list[", "Dict[", "Literal[", "| None", "...", "dspy.Code['python']", "'"):
        assert construct in canonical


PROPERTIES = [
    pytest.param(signatures, round_trip, id="round_trip"),
    pytest.param(texts, only_signature_errors, id="only_signature_errors"),
    pytest.param(texts, fast_paths_agree, id="fast_paths_agree"),
]


@pytest.mark.parametrize(("strategy", "check"), PROPERTIES)
def test_properties(strategy: Any, check: Any) -> None:
    run(strategy, check, FAST_EXAMPLES)


@pytest.mark.slow
@pytest.mark.parametrize(("strategy", "check"), PROPERTIES)
def test_properties_at_full_size(strategy: Any, check: Any) -> None:
    run(strategy, check, SLOW_EXAMPLES)
