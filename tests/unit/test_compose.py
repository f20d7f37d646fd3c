"""compose.yaml cannot run here (no Docker engine); check that what it runs exists."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from dspex_jobs.cli import main
from dspex_jobs.settings import QUEUES

COMPOSE = Path(__file__).resolve().parents[2] / "compose.yaml"


def _services() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text())["services"])


def _commands() -> list[list[str]]:
    found = []
    for service in _services().values():
        if "command" in service:
            found.append([str(a) for a in service["command"]])
        test = service.get("healthcheck", {}).get("test", [])
        if test and test[0] == "CMD":
            found.append([str(a) for a in test[1:]])
    return found


@pytest.mark.parametrize(
    "argv", [c for c in _commands() if c[0] == "dspex-jobs"], ids=lambda a: " ".join(a)
)
def test_every_dspex_jobs_command_parses_with_the_real_cli(argv: list[str]) -> None:
    command = main.commands.get(argv[1])
    assert isinstance(command, click.Command), f"no CLI command {argv[1]!r}"
    command.make_context(argv[1], argv[2:])  # raises on an unknown option or bad choice


def test_celery_commands_name_a_real_app_module() -> None:
    for argv in (c for c in _commands() if c[0] == "celery"):
        module = argv[argv.index("-A") + 1]
        assert importlib.util.find_spec(module) is not None, module


def test_one_worker_service_per_queue_with_redis_that_keeps_everything() -> None:
    services = _services()
    for queue in QUEUES:
        assert services[f"worker-{queue}"]["command"][-1] == queue
        assert "container_name" not in services[f"worker-{queue}"]
        assert "ports" not in services[f"worker-{queue}"]
    conf = (COMPOSE.parent / "ops/redis/redis.conf").read_text().split()
    assert "noeviction" in conf and conf[conf.index("appendonly") + 1] == "yes"


def test_every_worker_service_scales_without_collisions() -> None:
    """`docker compose up --scale worker-general=4`: replicas share nothing fixed. No
    container name, host port or hostname (a worker is named <queue>-<pid>@<container id>),
    and no bind-mounted host path a replica would treat as its own."""
    for name, service in _services().items():
        if not name.startswith("worker-"):
            continue
        assert not {"container_name", "ports", "hostname"} & service.keys(), name
        for volume in service.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            assert not source.startswith(("/", ".")) or str(volume).endswith(":ro"), volume
