"""The minimal event API the router reports through: attach, detach, prefixes, failing handlers."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from dspex_jobs import telemetry

Event = tuple[str, dict[str, float], dict[str, Any]]


@pytest.fixture
def seen() -> Iterator[list[Event]]:
    events: list[Event] = []
    yield events
    for handler_id in list(telemetry.attached()):
        if handler_id.startswith("test-"):
            telemetry.detach(handler_id)


def recorder(events: list[Event]) -> telemetry.Handler:
    def handle(name: str, measurements: Mapping[str, float], metadata: Mapping[str, Any]) -> None:
        events.append((name, dict(measurements), dict(metadata)))

    return handle


def test_exact_names_and_prefixes_reach_their_handlers(seen: list[Event]) -> None:
    # Given one handler on an exact name and one on a prefix
    telemetry.attach("test-exact", "dspex.a.b", recorder(seen))
    telemetry.attach("test-prefix", ["dspex.a.*"], recorder(seen))
    # When events are emitted
    telemetry.emit("dspex.a.b", {"duration_s": 1.0}, {"k": "v"})
    telemetry.emit("dspex.a.c", {}, {})
    telemetry.emit("dspex.z", {}, {})
    # Expect the exact handler saw one, the prefix handler two, nobody saw dspex.z
    assert [e[0] for e in seen] == ["dspex.a.b", "dspex.a.b", "dspex.a.c"]
    assert seen[0][1] == {"duration_s": 1.0} and seen[0][2] == {"k": "v"}
    assert telemetry.has_handlers("dspex.a.c") and not telemetry.has_handlers("dspex.z")


def test_detach_stops_delivery_and_reports_whether_it_was_attached(seen: list[Event]) -> None:
    telemetry.attach("test-gone", "*", recorder(seen))
    assert telemetry.detach("test-gone") is True
    assert telemetry.detach("test-gone") is False
    telemetry.emit("dspex.anything", {}, {})
    assert seen == []
    assert not telemetry.has_handlers("dspex.anything")


def test_handler_ids_are_unique_and_patterns_required(seen: list[Event]) -> None:
    telemetry.attach("test-dup", "x", recorder(seen))
    with pytest.raises(ValueError, match="already attached"):
        telemetry.attach("test-dup", "y", recorder(seen))
    with pytest.raises(ValueError, match="names no events"):
        telemetry.attach("test-empty", [], recorder(seen))
    assert telemetry.attached()["test-dup"] == ("x",)


def test_a_failing_handler_is_logged_and_detached_without_breaking_the_caller(
    seen: list[Event], caplog: pytest.LogCaptureFixture
) -> None:
    def broken(name: str, measurements: Mapping[str, float], metadata: Mapping[str, Any]) -> None:
        raise RuntimeError("exporter down")

    telemetry.attach("test-broken", "dspex.e", broken)
    telemetry.attach("test-fine", "dspex.e", recorder(seen))
    with caplog.at_level(logging.ERROR, logger="dspex_jobs.telemetry"):
        telemetry.emit("dspex.e", {}, {})  # does not raise
        telemetry.emit("dspex.e", {}, {})
    assert len(seen) == 2  # the healthy handler kept receiving
    assert "test-broken" not in telemetry.attached()
    assert sum("exporter down" in r.exc_text for r in caplog.records if r.exc_text) == 1


def test_emit_without_handlers_is_a_no_op() -> None:
    assert not telemetry.has_handlers("dspex.nobody")
    telemetry.emit("dspex.nobody", {"duration_s": 0.0}, {})
