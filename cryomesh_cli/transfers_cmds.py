"""``cryomesh transfers ...``: where the copies of datasets stand."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.progress import BarColumn, DownloadColumn, Progress, TaskProgressColumn, TextColumn, TransferSpeedColumn
from rich.progress_bar import ProgressBar
from rich.table import Table

from cryomesh_cli.common import HubOpt, IdOpt, JsonOpt, SecretOpt, call, hub_call, session
from cryomesh_cli.render import Col, console, fitted_table, print_json
from shared.units import human_bytes

transfers_app = typer.Typer(help="Transfers: copies of datasets between sites, with their progress.", no_args_is_help=True)

FINAL = ("DONE", "SUSPENDED", "CANCELLED")


def _done(t: dict[str, Any]) -> tuple[int, int]:
    """(bytes, files) of the phase the transfer is in: publishing, then fetching."""
    if t["state"] in ("QUEUED", "PUBLISHING"):
        return t["published_bytes"], t["published_files"]
    return t["fetched_bytes"], t["fetched_files"]


def transfers_table(rows: list[dict[str, Any]]) -> Table:
    cols = (
        Col("id", keep=True),
        Col("dataset", keep=True, drop=1),
        Col("from -> to"),
        Col("state"),
        Col("try", drop=4),
        Col("progress", drop=3),
        Col("bytes", drop=2),
        Col("files", drop=5),
        Col("rate", drop=3),
    )
    cells = []
    for t in rows:
        done, files = _done(t)
        total = max(t["bytes_total"], 1)
        cells.append(
            (
                t["id"],
                t["dataset"],
                f"{t['source_site']} -> {t['dest_site']}",
                t["state"] if t["state"] in FINAL else f"{t['state']} {100 * done // total}%",
                f"{t['attempt']}/{t['max_attempts']}",
                ProgressBar(total=total, completed=total if t["state"] == "DONE" else done, width=12),
                f"{human_bytes(done)} / {human_bytes(t['bytes_total'])}",
                f"{files}/{t['files_total']}",
                f"{human_bytes(t['rate_bps'])}/s" if t["rate_bps"] else "-",
            )
        )
    return fitted_table(cols, cells, title=f"{len(rows)} transfer(s)")


def _details(t: dict[str, Any]) -> Group:
    info = Table.grid(padding=(0, 2))
    for label, value in (
        ("transfer", t["id"]),
        ("dataset", t["dataset"]),
        ("from -> to", f"{t['source_site']} -> {t['dest_site']}"),
        ("state", t["state"] + (f" ({t['reason']})" if t["reason"] else "")),
        ("attempt", f"{t['attempt']} of {t['max_attempts']}"),
        ("share request", t["share_request"] or "-"),
        ("for job", t["job"] or "-"),
        ("re-sent after restarts", human_bytes(t["resent_bytes"])),
        ("files sent again", ", ".join(f"{p} x{n}" for p, n in t["resent_files"].items()) or "-"),
    ):
        info.add_row(label, str(value))
    parts: list[Any] = [info]
    if t["file_errors"]:
        errors = Table("file", "error", "at", title="file errors (newest last)")
        for e in t["file_errors"][-20:]:
            errors.add_row(e["path"], e["error"], e.get("at") or "-")
        parts.append(errors)
    return Group(*parts)


def _bars() -> Progress:
    return Progress(
        TextColumn("{task.description:>9}"),
        BarColumn(),
        TaskProgressColumn(),
        DownloadColumn(binary_units=False),
        TransferSpeedColumn(),
        TextColumn("{task.fields[files]}"),
        console=console,
    )


@transfers_app.command("list")
def transfers_list(
    state: Annotated[str | None, typer.Option(help="QUEUED, PUBLISHING, FETCHING, DONE, SUSPENDED, CANCELLED")] = None,
    dataset: Annotated[str | None, typer.Option(help="Only transfers of this dataset")] = None,
    hub: HubOpt = None,
    client_id: IdOpt = None,
    client_secret: SecretOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Transfers you asked for or whose sites you administer, newest first, with progress bars."""
    rows = hub_call((hub, client_id, client_secret), "GET", "/api/v1/transfers", params={"state": state, "dataset": dataset})
    print_json(rows) if as_json else console.print(transfers_table(rows))


@transfers_app.command("show")
def transfers_show(
    transfer_id: str,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep the bars moving until the transfer ends")] = False,
    interval: Annotated[float, typer.Option(help="--follow: seconds between updates")] = 1.0,
    hub: HubOpt = None,
    client_id: IdOpt = None,
    client_secret: SecretOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One transfer: publish and fetch progress (bytes, files, rate), attempts, per-file errors."""
    with session(hub, client_id, client_secret) as s:
        t = call(s, "GET", f"/api/v1/transfers/{transfer_id}")
        if as_json:
            print_json(t)
            return
        console.print(_details(t))
        with _bars() as bars:
            total = max(t["bytes_total"], 1)
            publish = bars.add_task("publish", total=total, files="")
            fetch = bars.add_task("fetch", total=total, files="")
            while True:
                bars.update(publish, completed=t["published_bytes"], files=f"{t['published_files']}/{t['files_total']} files")
                bars.update(fetch, completed=t["fetched_bytes"], files=f"{t['fetched_files']}/{t['files_total']} files")
                if not follow or t["state"] in FINAL:
                    break
                time.sleep(interval)
                t = call(s, "GET", f"/api/v1/transfers/{transfer_id}")
        if follow:
            console.print(f"transfer {t['id']}: {t['state']}" + (f" ({t['reason']})" if t["reason"] else ""))


@transfers_app.command("retry")
def transfers_retry(transfer_id: str, hub: HubOpt = None, client_id: IdOpt = None, client_secret: SecretOpt = None) -> None:
    """Start a SUSPENDED transfer again (an admin of either site; network admins)."""
    t = hub_call((hub, client_id, client_secret), "POST", f"/api/v1/transfers/{transfer_id}/retry")
    console.print(f"transfer {t['id']}: {t['state']}, attempt {t['attempt']}")
