"""The event catalogue: every name is catalogued, emitters use the same names, docs list them."""

from __future__ import annotations

from pathlib import Path

from dspex_jobs.pipeline import events as pipeline_events
from dspex_jobs.router import metrics as router_metrics
from dspex_jobs.telemetry import catalogue

DOCS = Path(__file__).resolve().parents[3] / "docs" / "observability.md"


def test_every_constant_is_catalogued() -> None:
    constants = {
        getattr(catalogue, name)
        for name in catalogue.__all__
        if name.isupper() and name != "CATALOGUE"
    }
    assert constants == set(catalogue.CATALOGUE)
    for name, spec in catalogue.CATALOGUE.items():
        assert name.startswith("dspex.") and spec.name == name
        assert spec.description and spec.emitted_by


def test_emitters_use_the_catalogued_names() -> None:
    # Given the modules that defined their event names before the catalogue
    assert pipeline_events.START_EVENT == catalogue.PIPELINE_START
    assert pipeline_events.STEP_EVENT == catalogue.PIPELINE_STEP
    assert pipeline_events.STOP_EVENT == catalogue.PIPELINE_STOP
    assert router_metrics.ROUTE_EVENT == catalogue.ROUTER_ROUTE
    assert router_metrics.FALLBACK_EVENT == catalogue.ROUTER_FALLBACK


def test_docs_list_every_event() -> None:
    text = DOCS.read_text()
    missing = [name for name in catalogue.CATALOGUE if f"`{name}`" not in text]
    assert not missing, f"docs/observability.md does not describe {missing}"
