"""Configuration checks and the statistics of seeded fault injection (no server needed)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from dspex_jobs.errors import ConfigurationError
from dspex_jobs.lmserver import LMServerConfig, config_from_args
from dspex_jobs.lmserver.faults import FaultInjector

N = 20_000


def _tally(config: LMServerConfig, n: int = N) -> Counter[str]:
    injector = FaultInjector(config)
    tally: Counter[str] = Counter()
    for _ in range(n):
        plan = injector.draw()
        tally[f"{plan.fault}:{plan.status}" if plan.fault else "ok"] += 1
    return tally


def test_no_faults_by_default() -> None:
    injector = FaultInjector(LMServerConfig(latency_ms=250))
    plans = [injector.draw() for _ in range(1000)]
    assert {(p.fault, p.status, p.delay_s) for p in plans} == {(None, 200, 0.25)}


def test_each_kind_happens_at_its_rate() -> None:
    # Given absolute per-kind probabilities
    config = LMServerConfig(rate_limit_rate=0.1, server_error_rate=0.05, hang_rate=0.02, seed=7)
    # When many requests draw their plans
    tally = _tally(config)
    # Expect each fault at its rate (5xx split evenly between 500 and 503)
    assert tally["rate_limit:429"] / N == pytest.approx(0.10, abs=0.01)
    server_errors = tally["server_error:500"] + tally["server_error:503"]
    assert server_errors / N == pytest.approx(0.05, abs=0.01)
    assert tally["server_error:500"] / N == pytest.approx(0.025, abs=0.006)
    assert tally["hang:200"] / N == pytest.approx(0.02, abs=0.005)
    assert tally["ok"] / N == pytest.approx(0.83, abs=0.015)


def test_error_rate_mixes_429_500_503() -> None:
    tally = _tally(LMServerConfig(error_rate=0.3, seed=1))
    for key in ("rate_limit:429", "server_error:500", "server_error:503"):
        assert tally[key] / N == pytest.approx(0.1, abs=0.01)
    assert not any(key.startswith("hang") for key in tally)


def test_same_seed_same_faults_and_jitter() -> None:
    config = LMServerConfig(error_rate=0.5, latency_ms=10, latency_jitter_ms=5, seed=42)
    a, b = FaultInjector(config), FaultInjector(config)
    run_a, run_b = [a.draw() for _ in range(200)], [b.draw() for _ in range(200)]
    assert run_a == run_b
    assert 50 < sum(p.fault is not None for p in run_a) < 150
    assert all(0.010 <= p.delay_s < 0.015 for p in run_a)
    other = FaultInjector(config.replace(seed=43))
    assert [other.draw() for _ in range(200)] != run_a


def test_hang_plan_carries_hang_s() -> None:
    plan = FaultInjector(LMServerConfig(hang_rate=1.0, hang_s=2.5)).draw()
    assert (plan.fault, plan.hang_s) == ("hang", 2.5)
    assert FaultInjector(LMServerConfig(hang_rate=1.0)).draw().hang_s is None


def test_429_response_has_retry_after_and_openai_error_body() -> None:
    headers, body = FaultInjector(LMServerConfig(retry_after_s=2)).error_response(429)
    assert headers["Retry-After"] == "2"
    assert headers["retry-after-ms"] == "2000"
    error = json.loads(body)["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert set(error) == {"message", "type", "param", "code"}
    headers, body = FaultInjector(LMServerConfig(retry_after_s=0.25)).error_response(429)
    assert headers["Retry-After"] == "0.25"
    assert json.loads(FaultInjector(LMServerConfig()).error_response(503)[1])["error"]["code"] == (
        "service_unavailable"
    )


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"latency_ms": -1}, "latency_ms"),
        ({"token_delay_ms": float("nan")}, "token_delay_ms"),
        ({"error_rate": 1.5}, "error_rate"),
        ({"rate_limit_rate": 0.6, "server_error_rate": 0.6}, "error_rate"),
        ({"port": 70000}, "port"),
        ({"top_k": 0}, "top_k"),
        ({"hang_s": -2}, "hang_s"),
    ],
)
def test_bad_config_names_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        LMServerConfig(**changes)  # type: ignore[arg-type]
    assert info.value.details["field"] == field


def test_argv_round_trip() -> None:
    config = LMServerConfig(
        port=8765, latency_ms=12.5, rate_limit_rate=0.1, seed=3, api_key="k", hang_s=1.0
    )
    assert config_from_args(config.to_argv()) == config
    assert LMServerConfig().to_argv() == []
    assert config_from_args(["--host", "127.0.0.1", "--port", "0"]) == LMServerConfig()


def test_cli_rejects_bad_values(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        config_from_args(["--error-rate", "2"])
    assert info.value.code == 2
    assert "error_rate" in capsys.readouterr().err
