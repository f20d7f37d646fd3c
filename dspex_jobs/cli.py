"""``dspex-jobs``: start workers, submit jobs, check health, run the demo and the LM server.

The CLI only parses; each command calls a library function. Every option that has a
setting reads it from the same ``DSPEX_*`` variable, and flags win over the environment.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

from dspex_jobs._version import __version__
from dspex_jobs.errors import DSPexError
from dspex_jobs.pools import WORKER_QUEUES
from dspex_jobs.settings import QUEUES, Settings

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

HELP_EPILOG = """\b
Examples:
  dspex-jobs worker --queue general
  dspex-jobs predict "question -> answer" -i question="What is DSPy?"
  dspex-jobs run pipeline.yaml --input question="What is DSPy?"
  dspex-jobs health --json
  dspex-jobs demo
"""


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except DSPexError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(epilog=HELP_EPILOG)
@click.version_option(__version__, package_name="dspex-jobs")
def main() -> None:
    """Run DSPy signatures and pipelines as Celery jobs on Redis."""


@main.command()
@click.option(
    "--queue",
    "-q",
    type=click.Choice(WORKER_QUEUES),
    required=True,
    help="The workload queue to consume (or 'webhooks': webhook deliveries).",
)
@click.option(
    "--concurrency",
    "-c",
    type=int,
    default=None,
    help="Pool size (default: DSPEX_<QUEUE>_CONCURRENCY).",
)
@click.option(
    "--pool",
    "-P",
    type=click.Choice(["prefork", "threads", "solo"]),
    default=None,
    help="Override the queue's pool type.",
)
@click.option("--hostname", "-n", default=None, help="Worker name (default: <queue>@<host>).")
@click.option("--loglevel", "-l", default=None, help="Log level (default: DSPEX_LOG_LEVEL).")
def worker(
    queue: str,
    concurrency: int | None,
    pool: str | None,
    hostname: str | None,
    loglevel: str | None,
) -> None:
    """Start a worker pool for one workload queue."""
    from dspex_jobs.app import make_app
    from dspex_jobs.pools import profile_for
    from dspex_jobs.worker import install_worker_hooks

    settings = _settings()
    app = make_app(settings)
    install_worker_hooks(app, warm_runtime=queue != "webhooks")  # deliveries need no DSPy
    argv = profile_for(queue).worker_argv(
        settings, concurrency=concurrency, pool=pool, hostname=hostname, loglevel=loglevel
    )
    app.worker_main(argv=argv)


@main.command()
@click.option(
    "--queue",
    "-q",
    "queues",
    type=click.Choice(WORKER_QUEUES),
    multiple=True,
    help="Queues that must have a live worker (default: all).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def health(queues: tuple[str, ...], as_json: bool) -> None:
    """Check Redis, queue depths and live workers; exit 1 if anything is down."""
    from dspex_jobs.health import check_health

    report = check_health(_settings(), queues or QUEUES)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.render())
    sys.exit(EXIT_OK if report.ok else EXIT_FAILURE)


@main.command("scaling-metrics")
@click.option(
    "--queue",
    "-q",
    "queues",
    type=click.Choice(WORKER_QUEUES),
    multiple=True,
    help="Queues to report (default: all).",
)
@click.option("--serve", is_flag=True, help="Serve /metrics.json over HTTP (for KEDA).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface for --serve.")
@click.option("--port", type=int, default=9809, show_default=True, help="Port for --serve.")
def scaling_metrics(queues: tuple[str, ...], serve: bool, host: str, port: int) -> None:
    """Per-queue depth and in-flight jobs as JSON, the form KEDA's metrics-api trigger
    reads (ops/k8s/); `dspex-jobs metrics` is the Prometheus exporter."""
    from dspex_jobs.scaling import MetricsServer, queue_metrics

    settings = _settings()
    if not serve:
        data = queue_metrics(settings, queues or WORKER_QUEUES)
        click.echo(json.dumps(data, indent=2))
        sys.exit(EXIT_OK if data["ok"] else EXIT_FAILURE)
    server = MetricsServer(settings, host, port)
    click.echo(f"serving queue metrics on http://{host}:{server.port}/metrics.json")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.shutdown()


def _parse_inputs(pairs: tuple[str, ...]) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"expected NAME=VALUE, got {pair!r}", param_hint="--input")
        try:
            inputs[name] = json.loads(raw)
        except json.JSONDecodeError:
            inputs[name] = raw
    return inputs


@main.command()
@click.argument("signature")
@click.option(
    "--input",
    "-i",
    "pairs",
    multiple=True,
    help="NAME=VALUE (VALUE is JSON when it parses as JSON, else text).",
)
@click.option("--cot", is_flag=True, help="Use ChainOfThought instead of Predict.")
@click.option(
    "--timeout",
    type=float,
    default=120.0,
    show_default=True,
    help="Seconds to wait for the result.",
)
def predict(signature: str, pairs: tuple[str, ...], cot: bool, timeout: float) -> None:
    """Submit a Predict (or ChainOfThought) job and print its outputs as JSON."""
    from dspex_jobs.client import Client

    kind = "chain_of_thought" if cot else "predict"
    try:
        with Client(_settings()) as client:
            result = client.submit(kind, signature, _parse_inputs(pairs)).result(timeout=timeout)
    except DSPexError as exc:
        raise click.ClickException(f"[{exc.code}] {exc}") from None
    click.echo(
        json.dumps(
            {"job_id": result.job_id, "outputs": result.outputs, "usage": result.usage}, indent=2
        )
    )


@main.command("run")
@click.argument("pipeline", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--input",
    "-i",
    "pairs",
    multiple=True,
    help="NAME=VALUE (VALUE is JSON when it parses as JSON, else text).",
)
@click.option(
    "--timeout",
    type=float,
    default=300.0,
    show_default=True,
    help="Seconds to wait for the run to end.",
)
@click.option(
    "--status",
    "show_status",
    is_flag=True,
    help="Print the steps' table (state, queue, time) to stderr at the end.",
)
def run_pipeline_command(
    pipeline: str, pairs: tuple[str, ...], timeout: float, show_status: bool
) -> None:
    """Run a pipeline document (.yaml or .json) and print its context as JSON.

    Exits 1 when the run fails, naming the step and its error.
    """
    from dspex_jobs.client import Client

    try:
        with Client(_settings()) as client:
            handle = client.run(pipeline, inputs=_parse_inputs(pairs))
            try:
                result = handle.result(timeout=timeout)
            finally:
                if show_status:
                    click.echo(handle.status().render(), err=True)
    except DSPexError as exc:
        raise click.ClickException(f"[{exc.code}] {exc}") from None
    click.echo(
        json.dumps({"run_id": result.run_id, "context": result.context}, indent=2, default=str)
    )


@main.command()
@click.argument("job_id")
@click.option(
    "--follow", "-f", is_flag=True, help="Follow an optimization's progress bar until it ends."
)
def status(job_id: str, follow: bool) -> None:
    """Print a job's status."""
    from dspex_jobs.client import Client

    with Client(_settings()) as client:
        if follow:
            from dspex_jobs.programs.commands import follow_job

            try:
                result = follow_job(client, job_id, None)
            except DSPexError as exc:
                raise click.ClickException(f"[{exc.code}] {exc}") from None
            click.echo(json.dumps(result.outputs, indent=2))
            return
        click.echo(client.job(job_id).status().value)


@main.command()
@click.argument("job_id")
@click.option(
    "--after",
    default="0-0",
    show_default=True,
    help="Resume after this chunk id (printed with --ids).",
)
@click.option("--ids", is_flag=True, help="Print each chunk's id, to resume from later.")
@click.option(
    "--timeout",
    type=float,
    default=300.0,
    show_default=True,
    help="Give up after this many seconds without new data.",
)
def stream(job_id: str, after: str, ids: bool, timeout: float) -> None:
    """Print a streaming job's output as it arrives, then its final outputs as JSON."""
    from dspex_jobs.client import Client
    from dspex_jobs.streams import StreamChunk

    current = None
    try:
        with Client(_settings()) as client:
            for event in client.job(job_id).stream(after_id=after, timeout=timeout):
                if isinstance(event, StreamChunk):
                    if event.field != current:
                        click.echo(f"\n[{event.field}] ", nl=False)
                        current = event.field
                    click.echo(f"{event.text}{f' <{event.id}>' if ids else ''}", nl=False)
                else:
                    click.echo("\n" + json.dumps(event.outputs, indent=2))
    except DSPexError as exc:
        raise click.ClickException(f"[{exc.code}] {exc}") from None


@main.group()
def sessions() -> None:
    """List, show and end sessions."""


@sessions.command("ls")
def sessions_ls() -> None:
    """One line per live session: id, turns, variables, bound worker, idle time."""
    import time

    from dspex_jobs.client import Client

    with Client(_settings()) as client:
        rows = sorted(client.sessions.scan(), key=lambda s: s.updated_at, reverse=True)
        click.echo(f"{'session':<34}{'turns':>6}{'vars':>6}  {'idle s':>7}  worker")
        for state in rows:
            worker = client.sessions.binding(state.id) or "-"
            idle_s = time.time() - state.updated_at
            click.echo(
                f"{state.id:<34}{len(state.history):>6}{len(state.vars):>6}  "
                f"{idle_s:>7.0f}  {worker}"
            )


@sessions.command("show")
@click.argument("session_id")
def sessions_show(session_id: str) -> None:
    """Print a session's state as JSON."""
    from dspex_jobs.client import Client

    with Client(_settings()) as client:
        state = client.sessions.load(session_id)
        if state is None:
            raise click.ClickException(f"no session {session_id} (ended or expired)")
        data = state.model_dump(mode="json")
        data["worker"] = client.sessions.binding(session_id)
        click.echo(json.dumps(data, indent=2))


@sessions.command("end")
@click.argument("session_id")
def sessions_end(session_id: str) -> None:
    """End a session now."""
    from dspex_jobs.client import Client

    with Client(_settings()) as client:
        if not client.sessions.end(session_id):
            raise click.ClickException(f"no session {session_id} (ended or expired)")
    click.echo(f"ended {session_id}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def breakers(as_json: bool) -> None:
    """Show the shared circuit breaker of every LM endpoint."""
    from dspex_jobs.connections import redis_client
    from dspex_jobs.keys import Keys
    from dspex_jobs.resilience.breaker import BreakerConfig, CircuitBreaker

    settings = _settings()
    states = CircuitBreaker(
        redis_client(settings), Keys(settings.key_prefix), BreakerConfig()
    ).states()
    if as_json:
        click.echo(json.dumps(states, indent=2))
        return
    click.echo(f"{'state':<10}{'failures':>9}  endpoint")
    for b in states:
        click.echo(f"{b['state']:<10}{b['failures']:>9}  {b['endpoint']}")


@main.group()
def dlq() -> None:
    """Inspect, replay and purge dead letters (jobs that failed for good)."""


def _dead_letters() -> Any:
    from dspex_jobs.connections import redis_client
    from dspex_jobs.keys import Keys
    from dspex_jobs.resilience.deadletter import DeadLetters

    settings = _settings()
    return DeadLetters(redis_client(settings), Keys(settings.key_prefix))


@dlq.command("ls")
@click.option("--limit", type=int, default=50, show_default=True)
def dlq_ls(limit: int) -> None:
    """The newest dead letters: when, job, kind, attempts, error."""
    import time

    click.echo(f"{'failed':<20}{'job':<34}{'attempt':>8}  error")
    for letter in _dead_letters().list(limit):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(letter["failed_at"]))
        error = letter["error"]
        click.echo(
            f"{when:<20}{letter['job_id']:<34}{letter['attempt']:>8}  "
            f"[{error['code']}] {error['message'][:80]}"
        )


@dlq.command("show")
@click.argument("job_id")
def dlq_show(job_id: str) -> None:
    """One dead letter in full: envelope, error and traceback."""
    letter = _dead_letters().get(job_id)
    if letter is None:
        raise click.ClickException(f"no dead letter for job {job_id}")
    click.echo(json.dumps(letter, indent=2))


@dlq.command("replay")
@click.argument("job_ids", nargs=-1, required=True)
def dlq_replay(job_ids: tuple[str, ...]) -> None:
    """Send dead jobs again (same id, attempt 1)."""
    from dspex_jobs.app import make_app

    letters = _dead_letters()
    app = make_app(_settings())
    missing = [j for j in job_ids if not letters.replay(app, j)]
    click.echo(f"replayed {len(job_ids) - len(missing)} job(s)")
    if missing:
        raise click.ClickException(f"no dead letter for {', '.join(missing)}")


@dlq.command("purge")
@click.confirmation_option(prompt="Remove every dead letter?")
def dlq_purge() -> None:
    """Remove every dead letter."""
    click.echo(f"purged {_dead_letters().purge()} dead letter(s)")


@main.group("lm-cache")
def lm_cache() -> None:
    """The shared LM response cache in Redis (docs/caching.md)."""


def _lm_cache_store() -> Any:
    from dspex_jobs.connections import redis_client
    from dspex_jobs.keys import Keys
    from dspex_jobs.lmcache import LMCacheStore

    settings = _settings()
    return LMCacheStore(
        redis_client(settings),
        Keys(settings.key_prefix),
        settings.lm_cache_ttl_s,
        settings.lm_cache_max_entries,
    )


@lm_cache.command("stats")
def lm_cache_stats() -> None:
    """Hits, misses, writes, evictions (shared by all workers) and entries, as JSON."""
    click.echo(json.dumps(_lm_cache_store().stats().as_dict()))


@lm_cache.command("clear")
@click.confirmation_option(prompt="Remove every cached LM response?")
def lm_cache_clear() -> None:
    """Remove every cached LM response and reset the counters."""
    click.echo(f"removed {_lm_cache_store().clear()} cached response(s)")


@main.command()
def demo() -> None:
    """Start Redis, the local LM and one worker per queue; run two jobs; stop everything."""
    from dspex_jobs.demo import run_demo

    sys.exit(run_demo())


LM_SERVER_DEFAULT_PORT = 8765
"""A fixed port by default, so DSPEX_LM_API_BASE can be written down; 0 picks a free one."""


def _lm_server_options(command: Callable[..., None]) -> Callable[..., None]:
    """One click option per LMServerConfig field, so flags and config always agree."""
    from dspex_jobs.lmserver import option_specs

    for spec in reversed(option_specs()):
        default = LM_SERVER_DEFAULT_PORT if spec.field == "port" else spec.default
        command = click.option(
            spec.flag,
            spec.field,
            type=spec.type,
            default=default,
            show_default=default is not None,
            help=spec.help,
        )(command)
    return command


@main.command("lm-server")
@_lm_server_options
def lm_server(**options: Any) -> None:
    """Serve the offline extractive-minilm model over an OpenAI-compatible HTTP API.

    It is not a language model: it answers from the inputs by sentence-embedding
    similarity (see docs/lm_server.md). Point workers at it with
    DSPEX_LM=openai/extractive-minilm DSPEX_LM_API_BASE=http://127.0.0.1:8765/v1.
    """
    from dspex_jobs.lmserver import LMServerConfig, serve

    try:
        config = LMServerConfig(**options)
    except DSPexError as exc:
        raise click.UsageError(str(exc)) from None
    serve(config)


def _add_telemetry_commands() -> None:
    from dspex_jobs.telemetry.cli import flower, metrics

    main.add_command(metrics)
    main.add_command(flower)


_add_telemetry_commands()


def _add_webhook_commands() -> None:
    from dspex_jobs.webhooks.cli import webhooks

    main.add_command(webhooks)


_add_webhook_commands()


def _add_optimizer_commands() -> None:
    from dspex_jobs.programs.commands import batch, optimize, programs

    for command in (optimize, programs, batch):
        main.add_command(command)


_add_optimizer_commands()


if __name__ == "__main__":  # pragma: no cover
    main()
