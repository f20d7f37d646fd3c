"""ops/k8s/ cannot be applied here (no cluster); check its structure against the code.

One Deployment and one KEDA ScaledObject per worker queue; each Deployment runs a command
the real CLI accepts; each ScaledObject reads that queue's Redis list and the in-flight
number that ``dspex-jobs scaling-metrics`` really serves (checked against a real Redis with
a real heartbeat); every ``DSPEX_*`` variable is a real setting and the ConfigMap's settings
are consistent (Sentinel with a master, TLS with a CA).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click
import pytest
import redis
import yaml
from conftest import redis_db_url

from dspex_jobs.cli import main
from dspex_jobs.embedded import EmbeddedRedis
from dspex_jobs.keys import Keys
from dspex_jobs.pools import WORKER_QUEUES
from dspex_jobs.scaling import METRICS_PORT, MetricsServer
from dspex_jobs.settings import Settings

OPS = Path(__file__).resolve().parents[2] / "ops"
K8S = OPS / "k8s"


def _documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in _documents() if d["kind"] == kind}


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def _parses(argv: list[str]) -> None:
    assert argv[0] == "dspex-jobs"
    command = main.commands.get(argv[1])
    assert isinstance(command, click.Command), f"no CLI command {argv[1]!r}"
    command.make_context(argv[1], argv[2:])  # raises on an unknown option or a bad choice


def test_every_manifest_loads_and_kustomization_lists_them_all() -> None:
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == on_disk
    for doc in _documents():
        assert {"apiVersion", "kind", "metadata"} <= doc.keys()
        assert doc["kind"] == "Namespace" or doc["metadata"]["namespace"] == "dspex"


@pytest.mark.parametrize("queue", WORKER_QUEUES)
def test_one_deployment_per_queue_running_the_real_worker_command(queue: str) -> None:
    deployment = _of_kind("Deployment")[f"dspex-worker-{queue}"]
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    command = [str(a) for a in _container(deployment)["command"]]
    _parses(command)
    assert command[command.index("--queue") + 1] == queue
    assert "-n" not in command and "--hostname" not in command  # <queue>-<pid>@<pod>


@pytest.mark.parametrize("queue", WORKER_QUEUES)
def test_one_scaled_object_per_queue_on_its_list_and_its_in_flight_jobs(queue: str) -> None:
    scaled = _of_kind("ScaledObject")[f"dspex-worker-{queue}"]
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == f"dspex-worker-{queue}"
    assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    by_type = {t["type"]: t for t in spec["triggers"]}
    lists = by_type["redis-sentinel"]["metadata"]
    assert lists["listName"] == queue and int(lists["listLength"]) > 0
    assert by_type["redis-sentinel"]["authenticationRef"]["name"] in _of_kind(
        "TriggerAuthentication"
    )
    api = by_type["metrics-api"]["metadata"]
    assert api["valueLocation"] == f"queues.{queue}.in_flight"
    assert api["url"].endswith(f":{METRICS_PORT}/metrics.json")
    # The ConfigMap's Sentinels are the ones KEDA asks.
    config = _of_kind("ConfigMap")["dspex-config"]["data"]
    hosts = [part.split("://")[1].split("/")[0] for part in config["DSPEX_REDIS_URL"].split(";")]
    assert lists["addresses"].split(",") == hosts
    assert lists["sentinelMaster"] == config["DSPEX_REDIS_SENTINEL_MASTER"]


def test_the_optimizer_is_never_scaled_away_mid_job() -> None:
    """Its grace period covers the hard time limit, so a scale-in's warm shutdown lets the
    running optimization finish; and its in-flight trigger keeps one pod per running job."""
    from dspex_jobs.pools import profile_for

    deployment = _of_kind("Deployment")["dspex-worker-optimizer"]
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= (profile_for("optimizer").time_limit_s or 0)
    api = {
        t["type"]: t for t in _of_kind("ScaledObject")["dspex-worker-optimizer"]["spec"]["triggers"]
    }["metrics-api"]["metadata"]
    assert api["targetValue"] == "1"


def test_every_dspex_variable_is_a_setting_and_the_config_is_consistent() -> None:
    known = {f"DSPEX_{name.upper()}" for name in Settings.model_fields}
    config = dict(_of_kind("ConfigMap")["dspex-config"]["data"])
    env = dict(config)
    for deployment in _of_kind("Deployment").values():
        for var in _container(deployment).get("env", []):
            assert var["name"] in known, var["name"]
            env[var["name"]] = "placeholder"
    assert set(config) <= known
    settings = Settings.from_env(environ=env)  # Sentinel has its master, TLS its CA
    assert settings.redis_uses_tls and settings.redis_sentinel_master
    assert "REPLACE-ME" not in json.dumps(config), "no secret in the ConfigMap"


def test_scaling_metrics_service_serves_what_the_triggers_read(redis_server: EmbeddedRedis) -> None:
    deployment = _of_kind("Deployment")["dspex-scaling-metrics"]
    command = [str(a) for a in _container(deployment)["command"]]
    _parses(command)
    assert command[command.index("--port") + 1] == str(METRICS_PORT)
    service = _of_kind("Service")["dspex-scaling-metrics"]
    assert service["spec"]["ports"][0]["port"] == METRICS_PORT
    # The real endpoint, against a real Redis with one live worker's heartbeat.
    url = redis_db_url(redis_server, 40)
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.rpush("optimizer", b"{}")
    client.set(
        Keys().worker_heartbeat("optimizer-1@pod-a"),
        json.dumps(
            {
                "name": "optimizer-1@pod-a",
                "queues": ["optimizer"],
                "active": 1,
                "reserved": 1,
                "at": time.time(),
            }
        ),
        px=6000,
    )
    server = MetricsServer(Settings.from_env(environ={}, redis_url=url), port=0)
    import threading
    import urllib.request

    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{server.port}/metrics.json", timeout=10
        ) as response:
            served = json.loads(response.read())
        with urllib.request.urlopen(
            f"http://127.0.0.1:{server.port}/metrics", timeout=10
        ) as response:
            text = response.read().decode()
    finally:
        server.shutdown()
        client.flushdb()
        client.close()
    for queue in WORKER_QUEUES:
        value: Any = served
        for part in f"queues.{queue}.in_flight".split("."):  # what KEDA's valueLocation reads
            value = value[part]
        assert isinstance(value, int)
    assert served["queues"]["optimizer"] == {
        "depth": 1,
        "in_flight": 1,
        "running": 1,
        "workers": 1,
        "demand": 2,
    }
    assert 'dspex_queue_in_flight{queue="optimizer"} 1' in text
