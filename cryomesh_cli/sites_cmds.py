"""``cryomesh sites edit`` and ``cryomesh sites policy show|set``: what a site says about itself
and what it lends, for network admins and the site's own admin.

``policy set`` reads the site's current policy, changes only what the options name and
writes the whole policy back (the hub's ``PUT`` replaces it), so one option never resets
the others. Share options (``--auto-approve-…``, ``--serve-public-copies``) go to the site's
share policy.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cryomesh_cli.common import HubOpt, IdOpt, JsonOpt, SecretOpt, call, fail, hub_call, load_document, session
from cryomesh_cli.render import console, print_json

policy_app = typer.Typer(help="What a site lends to the network, and which data requests it approves by itself.",
                         no_args_is_help=True)  # fmt: skip

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW = re.compile(r"^(?P<days>[a-z,-]+)\s+(?P<start>\d\d:\d\d)-(?P<end>\d\d:\d\d)$")


def sites_edit(
    site: Annotated[str, typer.Argument(help="Site name")],
    display_name: Annotated[str | None, typer.Option(help="Name shown to people")] = None,
    institution: Annotated[str | None, typer.Option(help="Institution slug (network admins only)")] = None,
    country: Annotated[str | None, typer.Option(help="ISO 3166-1 alpha-2 code, e.g. JP")] = None,
    location: Annotated[str | None, typer.Option(help="City or region")] = None,
    description: Annotated[str | None, typer.Option()] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", help="YAML/JSON of fields to change; a list given replaces the site's whole list"),
    ] = None,
    hub: HubOpt = None,
    client_id: IdOpt = None,
    client_secret: SecretOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a site's registry entry (network admins; the site's own admin)."""
    body: dict[str, Any] = {}
    if file is not None:
        loaded = load_document(file)
        if not isinstance(loaded, dict):
            fail(f"{file} should hold a mapping of fields to change, e.g. 'location: Tsukuba'")
        body.update(loaded)
    given = {"display_name": display_name, "institution": institution, "country": country, "location": location,
             "description": description}  # fmt: skip
    body.update({k: v for k, v in given.items() if v is not None})
    if not body:
        fail("nothing to change: give --display-name, --country, --location, --description, --institution or --file")
    out = hub_call((hub, client_id, client_secret), "PATCH", f"/api/v1/sites/{site}", json_body=body)
    if as_json:
        print_json(out)
        return
    console.print(f"site [bold]{out['name']}[/bold] updated: {', '.join(sorted(body))}")


def parse_window(text: str) -> dict[str, Any]:
    """'mon-fri 19:00-07:00' or 'sat,sun 00:00-24:00' -> a TimeWindow body."""
    m = _WINDOW.match(text.strip().lower())
    if not m:
        fail(f"--window {text!r}: write days and hours like 'mon-fri 19:00-07:00' or 'sat,sun 00:00-24:00'")
    days: list[str] = []
    for part in m["days"].split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            fail(f"--window {text!r}: days are {', '.join(DAYS)}")
        i, j = DAYS.index(first), DAYS.index(last or first)
        days.extend(DAYS[k % 7] for k in range(i, j + 1 if j >= i else j + 8))
    return {"days": list(dict.fromkeys(days)), "start": m["start"], "end": m["end"]}


def _policy_tables(site: str, policy: dict[str, Any], share: dict[str, Any]) -> list[Table]:
    lend = Table(title=f"site {site}: what it lends (PUT /api/v1/sites/{site}/policy)", show_header=False)
    lend.add_column("setting", no_wrap=True)
    lend.add_column("value", overflow="fold")
    windows = ", ".join(f"{','.join(w['days'])} {w['start']}-{w['end']}" for w in policy["windows"])
    for key, value in (
        ("cpu share", f"{policy['cpu_share']:.0%}"),
        ("gpu share", f"{policy['gpu_share']:.0%}"),
        ("institutions", ", ".join(policy["allowed_institutions"]) if policy["allowed_institutions"] is not None else "all"),
        ("job kinds", ", ".join(policy["allowed_kinds"]) if policy["allowed_kinds"] is not None else "all"),
        ("max walltime", f"{policy['max_walltime_s']} s" if policy["max_walltime_s"] else "no limit"),
        ("windows", f"{windows} ({policy['timezone']})" if windows else "always"),
    ):
        lend.add_row(key, value)
    data = Table(title=f"site {site}: data shared without asking", show_header=False)
    data.add_column("setting", no_wrap=True)
    data.add_column("value", overflow="fold")
    data.add_row("public datasets", "yes" if share["auto_approve_public"] else "no")
    data.add_row("from institutions", ", ".join(share["auto_approve_institutions"]) or "none")
    data.add_row("serves copies of others' public data", "yes" if share["serve_public_copies"] else "no")
    return [lend, data]


@policy_app.command("show")
def policy_show(
    site: Annotated[str, typer.Argument(help="Site name")],
    hub: HubOpt = None,
    client_id: IdOpt = None,
    client_secret: SecretOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The site's lending policy and share policy."""
    with session(hub, client_id, client_secret) as s:
        policy = call(s, "GET", f"/api/v1/sites/{site}/policy")
        share = call(s, "GET", f"/api/v1/sites/{site}/share-policy")
    if as_json:
        print_json({"policy": policy, "share_policy": share})
        return
    for t in _policy_tables(site, policy, share):
        console.print(t)


@policy_app.command("set")
def policy_set(
    site: Annotated[str, typer.Argument(help="Site name")],
    cpu_share: Annotated[float | None, typer.Option(help="Share of CPUs federated jobs may hold, 0..1")] = None,
    gpu_share: Annotated[float | None, typer.Option(help="Share of GPUs federated jobs may hold, 0..1")] = None,
    allow_institution: Annotated[
        list[str] | None, typer.Option(help="Lend only to this institution (repeat); 'all' lends to everyone")
    ] = None,
    allow_kind: Annotated[
        list[str] | None, typer.Option(help="Accept only this job kind, e.g. relion.class2d (repeat); 'all' for any")
    ] = None,
    max_walltime: Annotated[int | None, typer.Option(help="Longest walltime accepted, seconds; 0: no limit")] = None,
    window: Annotated[
        list[str] | None, typer.Option(help="When work may start, e.g. 'mon-fri 19:00-07:00' (repeat); 'always' clears")
    ] = None,
    timezone: Annotated[str | None, typer.Option(help="IANA zone of the windows, e.g. Asia/Tokyo")] = None,
    auto_approve_public: Annotated[
        bool | None, typer.Option("--auto-approve-public/--no-auto-approve-public", help="Approve requests for public data")
    ] = None,
    auto_approve_institution: Annotated[
        list[str] | None, typer.Option(help="Approve data requests from this institution (repeat); 'none' clears")
    ] = None,
    serve_public_copies: Annotated[
        bool | None,
        typer.Option(
            "--serve-public-copies/--no-serve-public-copies",
            help="Let public datasets this site holds (owned by other sites) be copied from here to other sites",
        ),
    ] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="YAML/JSON: the whole lending policy")] = None,
    hub: HubOpt = None,
    client_id: IdOpt = None,
    client_secret: SecretOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Change what the site lends (network admins; the site's own admin). Only the options given change."""
    changes: dict[str, Any] = {}
    if cpu_share is not None:
        changes["cpu_share"] = cpu_share
    if gpu_share is not None:
        changes["gpu_share"] = gpu_share
    if allow_institution:
        changes["allowed_institutions"] = None if allow_institution == ["all"] else allow_institution
    if allow_kind:
        changes["allowed_kinds"] = None if allow_kind == ["all"] else allow_kind
    if max_walltime is not None:
        changes["max_walltime_s"] = max_walltime or None
    if window:
        changes["windows"] = [] if window == ["always"] else [parse_window(w) for w in window]
    if timezone is not None:
        changes["timezone"] = timezone
    share_changes: dict[str, Any] = {}
    if auto_approve_public is not None:
        share_changes["auto_approve_public"] = auto_approve_public
    if auto_approve_institution:
        share_changes["auto_approve_institutions"] = [] if auto_approve_institution == ["none"] else auto_approve_institution
    if serve_public_copies is not None:
        share_changes["serve_public_copies"] = serve_public_copies
    if not (changes or share_changes or file):
        fail("nothing to change: give an option such as --cpu-share 0.5 or --window 'mon-fri 19:00-07:00' (see --help)")
    with session(hub, client_id, client_secret) as s:
        policy = call(s, "GET", f"/api/v1/sites/{site}/policy")
        share = call(s, "GET", f"/api/v1/sites/{site}/share-policy")
        if file is not None:
            loaded = load_document(file)
            if not isinstance(loaded, dict):
                fail(f"{file} should hold a policy mapping, e.g. 'cpu_share: 0.5'")
            policy = loaded
        if changes or file is not None:
            policy = call(s, "PUT", f"/api/v1/sites/{site}/policy", json_body={**policy, **changes})
        if share_changes:
            share = call(s, "PUT", f"/api/v1/sites/{site}/share-policy", json_body={**share, **share_changes})
    if as_json:
        print_json({"policy": policy, "share_policy": share})
        return
    for t in _policy_tables(site, policy, share):
        console.print(t)
