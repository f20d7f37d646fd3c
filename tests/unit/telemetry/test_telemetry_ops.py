"""ops/: the Grafana dashboard and the Prometheus rules use only metrics we export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from dspex_jobs.telemetry.prometheus import exported_names

OPS = Path(__file__).resolve().parents[3] / "ops"
METRIC = re.compile(r"\bdspex_[a-z0-9_]+")


def _metrics_in(expr: str) -> set[str]:
    return set(METRIC.findall(expr))


def test_dashboard_loads_and_queries_known_metrics() -> None:
    dashboard = json.loads((OPS / "grafana" / "dspex-jobs.json").read_text())
    assert dashboard["uid"] and dashboard["panels"]
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = set().union(*(_metrics_in(e) for e in exprs))
    assert used - exported_names() == set()
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("throughput", "p95", "error rate", "queue depth", "tokens", "cost", "breaker"):
        assert topic in titles, topic
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert all(v in variables for e in exprs for v in re.findall(r"\$(\w+)", e))


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((OPS / "prometheus" / "alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_alert_rules_are_complete_and_use_known_metrics() -> None:
    rules = _rules()
    names = {rule["alert"] for rule in rules}
    assert {
        "DspexJobErrorRateHigh",
        "DspexQueueBacklogGrowing",
        "DspexNoLiveWorkers",
        "DspexCircuitBreakerOpen",
        "DspexNightlyOptimizationFailed",
    } <= names
    for rule in rules:
        assert rule["labels"]["severity"] in {"page", "warn"}
        assert rule["annotations"]["summary"]
        assert _metrics_in(rule["expr"]) and _metrics_in(rule["expr"]) <= exported_names()


def test_scrape_config_loads_the_rules() -> None:
    config = yaml.safe_load((OPS / "prometheus" / "prometheus.yml").read_text())
    assert any(path.endswith("alerts.yml") for path in config["rule_files"])
    assert {job["job_name"] for job in config["scrape_configs"]} == {
        "dspex-workers",
        "dspex-exporter",
    }


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool (Debian's prometheus "
    "package) is not installed; the structural tests above still run",
)
def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run(
        ["promtool", "check", "rules", str(OPS / "prometheus" / "alerts.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
