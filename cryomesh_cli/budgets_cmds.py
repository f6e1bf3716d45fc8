"""``cryomesh budgets ...``: institutions' monthly budgets and what they have spent."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from cryomesh_cli.common import HubOpt, IdOpt, JsonOpt, SecretOpt, hub_call
from cryomesh_cli.render import console, print_json

budgets_app = typer.Typer(help="Monthly budgets per institution (set by network admins).", no_args_is_help=True)


def budgets_table(rows: list[dict[str, Any]]) -> Table:
    t = Table("institution", "month", "spent", "limit", "remaining", "state", "warn at", "enforced", title="budgets")
    for b in rows:
        cur = b["currency"]
        t.add_row(b["institution"], b["month"], f"{b['spent']:.2f} {cur}", f"{b['monthly_limit']:.2f} {cur}",
                  f"{b['remaining']:.2f} {cur}", b["state"], f"{b['warn_at']:.0%}", "yes" if b["enforce"] else "no")  # fmt: skip
    return t


@budgets_app.command("list")
def budgets_list(hub: HubOpt = None, client_id: IdOpt = None, client_secret: SecretOpt = None, as_json: JsonOpt = False) -> None:
    """Budgets you may see (network admins: all; others: their institution's), with this month's spending."""
    rows = hub_call((hub, client_id, client_secret), "GET", "/api/v1/budgets")
    print_json(rows) if as_json else console.print(budgets_table(rows))


@budgets_app.command("show")
def budgets_show(
    institution: Annotated[str, typer.Argument(help="Institution slug, e.g. 'kek'")],
    hub: HubOpt = None,
    client_id: IdOpt = None,
    client_secret: SecretOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One institution's budget and what it has spent this month."""
    b = hub_call((hub, client_id, client_secret), "GET", f"/api/v1/budgets/{institution}")
    print_json(b) if as_json else console.print(budgets_table([b]))


@budgets_app.command("set")
def budgets_set(
    institution: Annotated[str, typer.Argument(help="Institution slug, e.g. 'kek'")],
    monthly_limit: Annotated[float, typer.Argument(help="Most its jobs may cost per calendar month, in the network's currency")],
    warn_at: Annotated[float, typer.Option(help="Warn submitters once this share of the limit is spent")] = 0.8,
    enforce: Annotated[bool, typer.Option("--enforce/--warn-only", help="Refuse new jobs once it is spent")] = True,
    hub: HubOpt = None,
    client_id: IdOpt = None,
    client_secret: SecretOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Set an institution's monthly budget (network admins)."""
    body = {"monthly_limit": monthly_limit, "warn_at": warn_at, "enforce": enforce}
    b = hub_call((hub, client_id, client_secret), "PUT", f"/api/v1/budgets/{institution}", json_body=body)
    print_json(b) if as_json else console.print(budgets_table([b]))


@budgets_app.command("remove")
def budgets_remove(
    institution: Annotated[str, typer.Argument(help="Institution slug, e.g. 'kek'")],
    hub: HubOpt = None,
    client_id: IdOpt = None,
    client_secret: SecretOpt = None,
) -> None:
    """Remove an institution's budget: its jobs are no longer limited (network admins)."""
    hub_call((hub, client_id, client_secret), "DELETE", f"/api/v1/budgets/{institution}")
    console.print(f"budget of {institution} removed")
