"""CLI commands of the optimizer queue: ``optimize``, ``programs ...`` and ``batch``.

Added to the ``dspex-jobs`` group by :mod:`dspex_jobs.cli`. Thin: parse, then call the library
(:meth:`Client.optimize`, :class:`ProgramRegistry`, :func:`dspex_jobs.batch.run_batch`).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from dspex_jobs.errors import DSPexError
from dspex_jobs.settings import Settings

__all__ = ["batch", "follow_job", "optimize", "programs"]


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except DSPexError as exc:
        raise click.ClickException(str(exc)) from None


def _client() -> Any:
    from dspex_jobs.client import Client

    return Client(_settings())


def _fail(exc: DSPexError) -> click.ClickException:
    return click.ClickException(f"[{exc.code}] {exc}")


def _parse_args(pairs: tuple[str, ...]) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"expected NAME=VALUE, got {pair!r}", param_hint="--arg")
        try:
            args[name] = json.loads(raw)
        except json.JSONDecodeError:
            args[name] = raw
    return args


@click.command()
@click.option("--program", "-p", required=True, help="Program name (stored as NAME@N).")
@click.option(
    "--signature", "-s", default=None, help="Define the program inline: its DSPy signature."
)
@click.option(
    "--module",
    "-m",
    default=None,
    help="predict, chain_of_thought or a registered class (with --signature).",
)
@click.option(
    "--optimizer",
    "-o",
    required=True,
    help="LabeledFewShot, BootstrapFewShot, BootstrapFewShotWithRandomSearch, MIPROv2 or GEPA.",
)
@click.option("--trainset", required=True, help="JSONL, JSON, CSV or Parquet file.")
@click.option("--valset", default=None, help="Scored after optimizing (same formats).")
@click.option(
    "--metric", default="exact_match", show_default=True, help="A registered metric's name."
)
@click.option(
    "--arg",
    "-a",
    "pairs",
    multiple=True,
    help="Optimizer argument NAME=VALUE (VALUE as JSON when it parses).",
)
@click.option("--reflection-lm", default=None, help="GEPA reflection / MIPROv2 prompt model.")
@click.option("--promote-to", default=None, help="Promote the result to this alias...")
@click.option("--min-score", type=float, default=None, help="...if it scores at least this.")
@click.option("--follow", "-f", is_flag=True, help="Draw progress until it ends.")
@click.option("--timeout", type=float, default=None, help="Seconds to follow.")
def optimize(
    program: str,
    signature: str | None,
    module: str | None,
    optimizer: str,
    trainset: str,
    valset: str | None,
    metric: str,
    pairs: tuple[str, ...],
    reflection_lm: str | None,
    promote_to: str | None,
    min_score: float | None,
    follow: bool,
    timeout: float | None,
) -> None:
    """Submit an optimization on the optimizer queue; print its job id (or follow it)."""
    try:
        with _client() as client:
            handle = client.optimize(
                program=program,
                signature=signature,
                module=module,
                optimizer=optimizer,
                trainset=trainset,
                valset=valset,
                metric=metric,
                reflection_lm=reflection_lm,
                promote_to=promote_to,
                min_score=min_score,
                **_parse_args(pairs),
            )
            if not follow:
                click.echo(handle.id)
                return
            click.echo(f"job {handle.id}", err=True)
            result = follow_job(client, handle.id, timeout)
    except DSPexError as exc:
        raise _fail(exc) from None
    click.echo(json.dumps(result.outputs, indent=2))


def follow_job(client: Any, job_id: str, timeout: float | None) -> Any:
    """Draw an optimization's progress bar on stderr until it ends; return its result."""
    from dspex_jobs.optimize.handle import print_progress

    handle = client.optimization(job_id)
    try:
        return handle.follow(timeout=timeout, on_progress=print_progress)
    finally:
        click.echo("", err=True)


@click.group()
def programs() -> None:
    """List, show, promote, export and import registered programs."""


@programs.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def programs_ls(as_json: bool) -> None:
    """One line per program: name, latest version, aliases, module, signature."""
    with _client() as client:
        rows = client.programs.list()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'program':<24}{'latest':>7}  {'aliases':<24}{'module':<18}signature")
    for row in rows:
        aliases = ",".join(f"{k}={v}" for k, v in sorted(row["aliases"].items())) or "-"
        latest = "-" if row["latest"] is None else str(row["latest"])
        click.echo(
            f"{row['name']:<24}{latest:>7}  {aliases:<24}{row['module']:<18}"
            f"{row['signature'] or '-'}"
        )


@programs.command("show")
@click.argument("ref")
@click.option("--state", is_flag=True, help="Include the module's JSON state.")
def programs_show(ref: str, state: bool) -> None:
    """A version's metadata (and state): REF is NAME, NAME@N or NAME@ALIAS."""
    try:
        with _client() as client:
            stored = client.programs.get(ref)
            aliases = client.programs.aliases(stored.name)
    except DSPexError as exc:
        raise _fail(exc) from None
    data = stored.model_dump(mode="json", exclude=None if state else {"state"})
    data["aliases"] = sorted(a for a, v in aliases.items() if v == stored.version)
    click.echo(json.dumps(data, indent=2))


@programs.command("promote")
@click.argument("ref")
@click.option("--alias", default="production", show_default=True)
def programs_promote(ref: str, alias: str) -> None:
    """Point ALIAS at the version REF names; workers use it from their next job."""
    try:
        with _client() as client:
            version = client.programs.promote(ref, alias)
    except DSPexError as exc:
        raise _fail(exc) from None
    click.echo(f"{ref.partition('@')[0]}@{alias} -> {version}")


@programs.command("export")
@click.argument("ref")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write here instead of stdout.",
)
def programs_export(ref: str, output: str | None) -> None:
    """Export a version as JSON (state and metadata; never a pickle)."""
    try:
        with _client() as client:
            document = client.programs.export(ref)
    except DSPexError as exc:
        raise _fail(exc) from None
    text = json.dumps(document, indent=2, sort_keys=True)
    if output:
        Path(output).write_text(text + "\n")
    else:
        click.echo(text)


@programs.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--name", default=None, help="Store under this name instead.")
def programs_import(path: str, name: str | None) -> None:
    """Import an exported version as the next version here."""
    try:
        document = json.loads(Path(path).read_text())
        with _client() as client:
            stored = client.programs.import_(document, name=name)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # a pickle is not UTF-8
        raise click.ClickException(f"{path} is not a JSON program export: {exc}") from None
    except DSPexError as exc:
        raise _fail(exc) from None
    click.echo(stored.ref)


@click.command()
@click.option("--program", "-p", required=True, help="NAME@latest, NAME@N or NAME@ALIAS.")
@click.option(
    "--input",
    "-i",
    "input_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="JSONL, JSON, CSV, Parquet.",
)
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(dir_okay=False),
    help="JSONL answers, in input order. Run again to resume.",
)
@click.option(
    "--chunk-rows", type=int, default=None, help="Rows per job (default: DSPEX_BATCH_CHUNK_ROWS)."
)
@click.option("--timeout", type=float, default=None, help="Give up after this many seconds.")
def batch(
    program: str, input_path: str, output: str, chunk_rows: int | None, timeout: float | None
) -> None:
    """Run a program over every row of a dataset in parallel chunks, with progress."""
    from dspex_jobs.batch import render_batch_progress

    def draw(progress: Any) -> None:
        sys.stderr.write("\r" + render_batch_progress(progress).ljust(90))
        sys.stderr.flush()

    started = time.monotonic()
    try:
        with _client() as client:
            report = client.batch(
                program,
                input_path,
                output,
                chunk_rows=chunk_rows,
                timeout_s=timeout,
                on_progress=draw,
            )
    except DSPexError as exc:
        raise _fail(exc) from None
    finally:
        sys.stderr.write("\n")
    click.echo(
        json.dumps({**report.to_dict(), "wall_s": round(time.monotonic() - started, 2)}, indent=2)
    )
