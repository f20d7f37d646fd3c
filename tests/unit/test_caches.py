"""Every per-process cache reports its size and its bound (dspex_jobs.caches)."""

from __future__ import annotations

from dspex_jobs.caches import cache_sizes
from dspex_jobs.signature import Signature
from dspex_jobs.signature.signature import PARSE_CACHE_SIZE
from dspex_jobs.templates.template import TEMPLATE_CACHE_SIZE, Template


def test_sizes_grow_with_use_and_never_pass_their_bound() -> None:
    # Given a signature parsed and a template compiled in this process
    Signature.parse("cache_probe_q: str -> cache_probe_a: str")
    Template.compile("{{ cache_probe }}")
    sizes = cache_sizes()
    # Expect: both caches report an entry and their fixed bound
    assert sizes["signature.parsed"]["size"] >= 1
    assert sizes["signature.parsed"]["max"] == PARSE_CACHE_SIZE
    assert sizes["templates.compiled"]["size"] >= 1
    assert sizes["templates.compiled"]["max"] == TEMPLATE_CACHE_SIZE
    assert all(0 <= s["size"] <= s["max"] for s in sizes.values())
