"""``dspex-jobs webhooks``: list deliveries (``--failed``: the undeliverable), show, replay."""

from __future__ import annotations

import json
import time
from typing import Any

import click

__all__ = ["webhooks"]


def _app_and_store() -> tuple[Any, Any]:
    from dspex_jobs.app import make_app
    from dspex_jobs.cli import _settings
    from dspex_jobs.webhooks.delivery import _store

    app = make_app(_settings())
    return app, _store(app)


@click.group()
def webhooks() -> None:
    """Inspect and replay webhook deliveries (docs/webhooks.md)."""


@webhooks.command("ls")
@click.option("--failed", is_flag=True, help="Only the undeliverable ones (replayable).")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def webhooks_ls(failed: bool, limit: int, as_json: bool) -> None:
    """The newest deliveries: when, id, event, status, attempts, last error."""
    _, store = _app_and_store()
    records = store.list(limit, failed=failed)
    if as_json:
        click.echo(
            json.dumps([{k: v for k, v in r.items() if k != "body"} for r in records], indent=2)
        )
        return
    click.echo(
        f"{'created':<20}{'delivery':<34}{'event':<18}{'status':<10}{'tries':>5}  last error"
    )
    for r in records:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["created_at"]))
        click.echo(
            f"{when:<20}{r['id']:<34}{r['event']:<18}{r['status']:<10}"
            f"{r.get('attempts', 0):>5}  {str(r.get('last_error') or '')[:80]}"
        )


@webhooks.command("show")
@click.argument("delivery_id")
def webhooks_show(delivery_id: str) -> None:
    """One delivery in full (its body included)."""
    _, store = _app_and_store()
    record = store.get(delivery_id)
    if record is None:
        raise click.ClickException(f"no webhook delivery {delivery_id} (unknown or expired)")
    record["body"] = json.loads(record["body"])
    click.echo(json.dumps(record, indent=2))


@webhooks.command("replay")
@click.argument("delivery_ids", nargs=-1)
@click.option("--all-failed", is_flag=True, help="Replay every undeliverable delivery.")
def webhooks_replay(delivery_ids: tuple[str, ...], all_failed: bool) -> None:
    """Deliver again from scratch (attempts and budget reset)."""
    from dspex_jobs.webhooks.delivery import replay

    app, store = _app_and_store()
    ids = list(delivery_ids)
    if all_failed:
        ids += [r["id"] for r in store.list(10_000, failed=True)]
    if not ids:
        raise click.UsageError("give delivery ids or --all-failed")
    missing = [i for i in ids if not replay(app, i)]
    click.echo(f"replayed {len(ids) - len(missing)} webhook(s)")
    if missing:
        raise click.ClickException(f"no webhook delivery {', '.join(missing)}")
