"""``dspex-jobs metrics`` and ``dspex-jobs flower``: the operator's side of telemetry.

Kept out of :mod:`dspex_jobs.cli` (which adds these commands to its group) so that the
observability commands live with the code they drive.
"""

from __future__ import annotations

import secrets
import sys
import time

import click

from dspex_jobs.errors import DSPexError
from dspex_jobs.settings import Settings

__all__ = ["DEFAULT_FLOWER_PORT", "DEFAULT_METRICS_PORT", "flower", "flower_argv", "metrics"]

DEFAULT_METRICS_PORT = 9808
"""Where ``dspex-jobs metrics`` listens unless told otherwise."""

DEFAULT_FLOWER_PORT = 5555
"""Flower's usual port."""

ALL_INTERFACES = "0.0.0.0"  # nosec B104
"""The default bind address: in a container, Prometheus and the ingress reach these from
outside it; Flower always asks for a password (docs/security.md)."""


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except DSPexError as exc:
        raise click.ClickException(str(exc)) from None


@click.command()
@click.option(
    "--port",
    "-p",
    type=int,
    default=DEFAULT_METRICS_PORT,
    show_default=True,
    help="Port of /metrics.",
)
@click.option("--address", default=ALL_INTERFACES, show_default=True, help="Address to bind.")
@click.option("--once", is_flag=True, help="Print the metrics once and exit.")
def metrics(port: int, address: str, once: bool) -> None:
    """Serve queue depth, live workers and breaker states (read from Redis) for Prometheus.

    Workers serve their own job metrics when DSPEX_METRICS_PORT is set; this exporter runs
    no jobs and needs only Redis.
    """
    from prometheus_client import CollectorRegistry, generate_latest

    from dspex_jobs.telemetry.prometheus import RedisCollector, serve

    settings = _settings()
    if once:
        registry = CollectorRegistry()
        registry.register(RedisCollector(settings))
        sys.stdout.write(generate_latest(registry).decode())
        return
    _, bound = serve(settings, port, addr=address)
    click.echo(f"serving metrics on http://{address}:{bound}/metrics", err=True)
    while True:  # the server thread is a daemon; Ctrl-C ends both
        time.sleep(3600)


def flower_argv(settings: Settings, password: str, port: int, address: str) -> list[str]:
    """The ``celery flower`` arguments: basic auth on, our broker, readable task names."""
    return [
        "flower",
        f"--port={port}",
        f"--address={address}",
        f"--basic-auth={settings.flower_user}:{password}",
        "--persistent=False",
        "--purge_offline_workers=60",
    ]


@click.command()
@click.option("--port", "-p", type=int, default=DEFAULT_FLOWER_PORT, show_default=True)
@click.option("--address", default=ALL_INTERFACES, show_default=True, help="Address to bind.")
def flower(port: int, address: str) -> None:
    """Start Flower on the configured broker, with basic authentication always on.

    The user is DSPEX_FLOWER_USER (admin); the password DSPEX_FLOWER_PASSWORD, or one
    generated now and printed once on stderr.
    """
    from dspex_jobs.app import make_app

    settings = _settings()
    if settings.flower_password is not None:
        password = settings.flower_password.get_secret_value()
    else:
        password = secrets.token_urlsafe(18)
        click.echo(
            f"Flower login: {settings.flower_user} / {password} (generated; set "
            "DSPEX_FLOWER_PASSWORD to choose one)",
            err=True,
        )
    app = make_app(settings)
    app.start(argv=flower_argv(settings, password, port, address))
