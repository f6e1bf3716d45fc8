"""``cryomesh``: run the hub or an agent, administer the network, look at it."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from cryomesh_cli.budgets_cmds import budgets_app
from cryomesh_cli.client import CliError, Profile, load_profile, normalise_hub_url, save_profile
from cryomesh_cli.common import (
    ConfigOpt,
    HubOpt,
    IdOpt,
    JsonOpt,
    SecretOpt,
    agent_settings,
    call,
    fail,
    hub_call,
    load_document,
    session,
    validation_text,
)
from cryomesh_cli.cryosparc_cmds import cryosparc_app
from cryomesh_cli.datasets_cmds import datasets_app, shares_app
from cryomesh_cli.jobs_cmds import jobs_app, usage
from cryomesh_cli.relion_cmds import relion_app
from cryomesh_cli.render import console, print_json, site_detail, sites_table, summary_table
from cryomesh_cli.sites_cmds import policy_app, sites_edit
from cryomesh_cli.transfers_cmds import transfers_app

app = typer.Typer(help="cryomesh: a federated coordinator for cryo-EM centres.", no_args_is_help=True)
hub_app = typer.Typer(help="Run the hub.", no_args_is_help=True)
admin_app = typer.Typer(help="Administer the network (network admins).", no_args_is_help=True)
agent_app = typer.Typer(help="Run a site agent.", no_args_is_help=True)
sites_app = typer.Typer(help="The facility registry.", no_args_is_help=True)
network_app = typer.Typer(help="The whole network.", no_args_is_help=True)
for sub, name in (
    (hub_app, "hub"),
    (admin_app, "admin"),
    (agent_app, "agent"),
    (sites_app, "sites"),
    (network_app, "network"),
    (jobs_app, "jobs"),
    (budgets_app, "budgets"),
    (datasets_app, "datasets"),
    (shares_app, "shares"),
    (transfers_app, "transfers"),
    (relion_app, "relion"),
    (cryosparc_app, "cryosparc"),
):
    app.add_typer(sub, name=name)
app.command("usage")(usage)
sites_app.command("edit")(sites_edit)
sites_app.add_typer(policy_app, name="policy")

# ---------------------------------------------------------------- hub


def _hub_settings() -> Any:
    """The hub's settings, or one line naming the file and the key that is wrong."""
    from hub.settings import SettingsError, get_settings

    try:
        return get_settings()
    except SettingsError as exc:
        fail(str(exc))


#: How long uvicorn's supervisor (``hub serve --workers N``) waits for a worker to answer its
#: health ping before it kills the worker as hung and starts another. uvicorn's default, 5 s,
#: counts from the worker's spawn, before the worker can answer: a spawned worker first
#: re-imports the CLI and uvicorn (~1.2 s of CPU). On a busy host that took over 5 s, so
#: every worker was killed before it could answer, and its replacement too: the hub never
#: became ready (docs/benchmarks.md, "branch hb-cpu"). A worker hung for a minute is still
#: replaced.
WORKER_HEALTHCHECK_S = 60


@hub_app.command("serve")
def hub_serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default: settings)")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (default: settings)")] = None,
    migrate: Annotated[bool, typer.Option(help="Apply database migrations first")] = True,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Hub processes sharing the port (PostgreSQL only; see the operator guide)")
    ] = 1,
) -> None:
    """Serve the hub's API (settings from CRYOMESH_* and CRYOMESH_CONFIG)."""
    import uvicorn

    from hub.app import create_app
    from hub.db import DatabaseUnavailable, check_database, database_errors_explained, is_sqlite
    from hub.db import migrate as run_migrations
    from hub.logging import configure_logging

    settings = _hub_settings()
    configure_logging(settings.log_level, settings.log_json)
    url = settings.resolved_database_url
    if workers > 1 and is_sqlite(url):
        fail(
            f"--workers {workers} needs PostgreSQL: on SQLite one process writes at a time, and hub processes "
            "could neither wake each other's long-polls nor agree on one sweep runner. Serve one process on "
            "SQLite, or set CRYOMESH_DATABASE_URL to a PostgreSQL database (docs/operator-guide.md)"
        )
    try:
        check_database(url)
        if migrate:
            with database_errors_explained(url):
                run_migrations(url)
    except DatabaseUnavailable as exc:
        fail(str(exc))
    options: dict[str, Any] = {
        "host": host or settings.host,
        "port": port or settings.port,
        "log_config": None,
        "proxy_headers": True,
        "timeout_graceful_shutdown": 10,
        # Longer than clients keep an idle connection (httpx: 5 s, uvicorn's own default too):
        # with equal times a client could send on a connection the hub was closing (ReadError).
        "timeout_keep_alive": 30,
        # The C event loop and HTTP parser: less hub CPU per request than asyncio's loop and
        # h11 (docs/benchmarks.md, "branch hb-cpu").
        "loop": "uvloop",
        "http": "httptools",
    }
    if workers > 1:  # each worker builds its own app (and engine) from the same settings
        uvicorn.run(
            "hub.app:worker_app",
            factory=True,
            workers=workers,
            timeout_worker_healthcheck=WORKER_HEALTHCHECK_S,
            **options,
        )
        return
    uvicorn.Server(uvicorn.Config(create_app(settings, settle_collector=True), **options)).run()


@hub_app.command("migrate")
def hub_migrate(revision: Annotated[str, typer.Argument(help="Target revision")] = "head") -> None:
    """Apply the database migrations (SQLite or PostgreSQL, from settings)."""
    from hub.db import DatabaseUnavailable, check_database, database_errors_explained, migrate

    url = _hub_settings().resolved_database_url
    try:
        check_database(url)
        with database_errors_explained(url):
            migrate(url, revision)
    except DatabaseUnavailable as exc:
        fail(str(exc))
    console.print(f"database at {url.split('@')[-1]} is at revision {revision}")


# ---------------------------------------------------------------- admin


@admin_app.command("bootstrap")
def admin_bootstrap(
    name: Annotated[str, typer.Option(help="The first network admin's name")],
    save: Annotated[bool, typer.Option(help="Save the credentials for this CLI (mode 0600)")] = True,
) -> None:
    """Create the first network admin on this hub's database (run on the hub host)."""
    from hub.accounts.service import bootstrap_admin
    from hub.db import DatabaseUnavailable, check_database, database_errors_explained, make_engine, migrate, transaction
    from hub.errors import CryomeshError

    settings = _hub_settings()
    try:
        check_database(settings.resolved_database_url)
        with database_errors_explained(settings.resolved_database_url):
            migrate(settings.resolved_database_url)
    except DatabaseUnavailable as exc:
        fail(str(exc))
    engine = make_engine(settings.resolved_database_url)
    try:
        with transaction(engine) as s:
            creds = bootstrap_admin(s, name)
    except CryomeshError as exc:
        fail(exc.detail)
    finally:
        engine.dispose()
    console.print(f"network admin [bold]{name}[/bold] created")
    console.print(f"client id:     {creds.client_id}")
    console.print(f"client secret: {creds.client_secret}   (shown once)")
    if save:
        path = save_profile(Profile(settings.issuer, creds.client_id, creds.client_secret))
        console.print(f"saved to {path}")


@admin_app.command("create-site")
def admin_create_site(
    file: Annotated[Path, typer.Argument(help="YAML/JSON site description (see docs/operator-guide.md)")],
    hub: HubOpt = None,
    client_id: IdOpt = None,
    client_secret: SecretOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a site from a YAML or JSON file."""
    from shared.schemas.sites import SiteCreate

    site = hub_call((hub, client_id, client_secret), "POST", "/api/v1/sites", json_body=load_document(file, SiteCreate))
    print_json(site) if as_json else console.print(f"site [bold]{site['name']}[/bold] registered ({site['status']})")


@admin_app.command("enrollment-code")
def admin_enrollment_code(
    site: Annotated[str, typer.Argument(help="Site name")],
    ttl: Annotated[int | None, typer.Option(help="Seconds the code stays valid (60 to 2592000; default 24 h)")] = None,
    hub: HubOpt = None,
    client_id: IdOpt = None,
    client_secret: SecretOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Issue a one-time enrollment code for a site's agent."""
    if ttl is not None and not 60 <= ttl <= 30 * 86_400:
        fail(f"--ttl {ttl}: give the code's life in seconds, from 60 to 2592000 (30 days), or leave it out for 24 h")
    body = {"ttl_s": ttl} if ttl is not None else {}
    code = hub_call((hub, client_id, client_secret), "POST", f"/api/v1/sites/{site}/enrollment-codes", json_body=body)
    if as_json:
        print_json(code)
        return
    console.print(f"enrollment code for {code['site']}: [bold]{code['code']}[/bold] (valid until {code['expires_at']})")
    hub_url = load_profile(hub, client_id, client_secret).hub_url
    console.print(f"on the site: cryomesh agent enroll --hub {hub_url} --code {code['code']} --config site.toml")


@admin_app.command("enrollments")
def admin_enrollments(
    status: Annotated[str | None, typer.Option(help="pending, approved or rejected")] = "pending",
    hub: HubOpt = None,
    client_id: IdOpt = None,
    client_secret: SecretOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List enrollments (default: those waiting for approval)."""
    from rich.table import Column, Table

    rows = hub_call((hub, client_id, client_secret), "GET", "/api/v1/enrollments", params={"status": status})
    if as_json:
        print_json(rows)
        return
    # The thumbprint is what the admin compares with the site's: shown whole, never cut.
    thumbprint = Column("key thumbprint", no_wrap=True, overflow="fold")
    table = Table("id", "site", "client id", "hostname", thumbprint, "status", "requested", title=f"{len(rows)} enrollment(s)")
    for e in rows:
        table.add_row(str(e["id"]), e["site"], e["client_id"], e["hostname"], e["key_thumbprint"], e["status"], e["created_at"])
    console.print(table)


def _decide(enrollment_id: int, verb: str, hub: str | None, client_id: str | None, client_secret: str | None) -> None:
    e = hub_call((hub, client_id, client_secret), "POST", f"/api/v1/enrollments/{enrollment_id}/{verb}")
    console.print(f"enrollment {e['id']} of site {e['site']}: {e['status']} (agent {e['client_id']})")


@admin_app.command("approve")
def admin_approve(enrollment_id: int, hub: HubOpt = None, client_id: IdOpt = None, client_secret: SecretOpt = None) -> None:
    """Approve an agent's enrollment; check the key thumbprint with the site first."""
    _decide(enrollment_id, "approve", hub, client_id, client_secret)


@admin_app.command("reject")
def admin_reject(enrollment_id: int, hub: HubOpt = None, client_id: IdOpt = None, client_secret: SecretOpt = None) -> None:
    """Reject an agent's enrollment."""
    _decide(enrollment_id, "reject", hub, client_id, client_secret)


@admin_app.command("revoke-agent")
def admin_revoke(agent_client_id: str, hub: HubOpt = None, client_id: IdOpt = None, client_secret: SecretOpt = None) -> None:
    """Revoke an agent; its tokens stop working at once."""
    a = hub_call((hub, client_id, client_secret), "POST", f"/api/v1/agents/{agent_client_id}/revoke")
    console.print(f"agent {a['client_id']} of site {a['site']}: {a['status']}")


@admin_app.command("create-account")
def admin_create_account(
    name: Annotated[str, typer.Option(help="Person's or service's name")],
    role: Annotated[str, typer.Option(help="network_admin, site_admin or researcher")],
    institution: Annotated[str | None, typer.Option(help="Institution (researchers)")] = None,
    site: Annotated[str | None, typer.Option(help="Site (site admins)")] = None,
    service: Annotated[bool, typer.Option("--service", help="A service account, not a person")] = False,
    username: Annotated[
        str | None,
        typer.Option(help="Lets the person sign in to the dashboard and `cryomesh login` (they set a password)"),
    ] = None,
    hub: HubOpt = None,
    client_id: IdOpt = None,
    client_secret: SecretOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a researcher, site admin, network admin or service account. Every account gets a
    client id and secret (for scripts and the CLI); with --username a person also signs in with a password."""
    if username and service:
        fail("--username is for people who sign in; a --service account uses its client id and secret")
    body = {"name": name, "role": role, "institution": institution, "site": site, "kind": "service" if service else "person"}
    if username:
        body["username"] = username
    acct = hub_call((hub, client_id, client_secret), "POST", "/api/v1/accounts", json_body=body)
    if as_json:
        print_json(acct)
        return
    console.print(f"{acct['role']} account for {acct['name']}: client id {acct['client_id']}")
    console.print(f"client secret: {acct['client_secret']}   (shown once; hand it over securely)")
    hub_url = load_profile(hub, client_id, client_secret).hub_url
    console.print(
        f"use it: CRYOMESH_HUB_URL={hub_url} CRYOMESH_CLIENT_ID={acct['client_id']} "
        "CRYOMESH_CLIENT_SECRET=<secret> cryomesh sites list",
        highlight=False,
    )
    if acct.get("setup_code"):
        console.print(
            f"dashboard sign-in: username [bold]{username}[/bold]; setup code {acct['setup_code']} (valid 7 days). "
            f"They set a password at {hub_url}/dashboard/#/setup, then sign in there or with `cryomesh login --hub {hub_url}`",
            highlight=False,
        )


@admin_app.command("suspend-site")
def admin_suspend(site: str, hub: HubOpt = None, client_id: IdOpt = None, client_secret: SecretOpt = None) -> None:
    """Suspend a site: its agents and admins are refused at once."""
    out = hub_call((hub, client_id, client_secret), "POST", f"/api/v1/sites/{site}/suspend")
    console.print(f"site {out['name']}: {out['status']}")


@admin_app.command("activate-site")
def admin_activate(site: str, hub: HubOpt = None, client_id: IdOpt = None, client_secret: SecretOpt = None) -> None:
    """Activate a pending or suspended site."""
    out = hub_call((hub, client_id, client_secret), "POST", f"/api/v1/sites/{site}/activate")
    console.print(f"site {out['name']}: {out['status']}")


@admin_app.command("rotate-signing-key")
def admin_rotate_signing_key(hub: HubOpt = None, client_id: IdOpt = None, client_secret: SecretOpt = None) -> None:
    """Start signing tokens with a new key (old tokens stay valid until they expire)."""
    out = hub_call((hub, client_id, client_secret), "POST", "/api/v1/admin/signing-keys/rotate")
    console.print(f"now signing with key {out['kid']}")


# ---------------------------------------------------------------- agent


@agent_app.command("enroll")
def agent_enroll(
    hub: Annotated[str, typer.Option("--hub", help="Hub URL")],
    code: Annotated[str, typer.Option("--code", help="The one-time enrollment code from a network admin")],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="site.toml (for state_dir)")] = None,
    state_dir: Annotated[Path | None, typer.Option(help="Where to keep the key and credentials")] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace the key already in the state directory (needs a new approval)"),
    ] = False,
) -> None:
    """Make this site's key pair (private key stays here, 0600) and ask the hub to enroll it.

    Refuses to replace a key already in the state directory unless --force."""
    from site_agent.credentials import KEY_FILE, load_key
    from site_agent.enroll import AlreadyEnrolled, current_identity, enroll
    from site_agent.errors import HubError

    directory = state_dir or agent_settings(config).agent.state_dir
    replaced = current_identity(directory) if force else None
    try:
        creds = enroll(normalise_hub_url(hub), code, directory, force=force)
    except AlreadyEnrolled as exc:
        fail(str(exc))
    except HubError as exc:
        fail(f"enrollment refused: {exc}")
    except Exception as exc:
        fail(f"enrollment failed: {exc}")
    if replaced:
        console.print(f"replaced {replaced}; a network admin may now revoke that agent", highlight=False)
    console.print(f"enrolled as [bold]{creds.client_id}[/bold] for site {creds.site} (enrollment {creds.enrollment_id})")
    console.print(f"key thumbprint: {load_key(directory).thumbprint()}", highlight=False, soft_wrap=True)
    console.print("  the admin checks that `cryomesh admin enrollments` shows this same thumbprint before approving")
    console.print(f"private key: {directory / KEY_FILE} (mode 0600; it never leaves this machine)", soft_wrap=True)
    console.print("waiting for a network admin: cryomesh admin approve " + str(creds.enrollment_id))


@agent_app.command("run")
def agent_run(config: ConfigOpt) -> None:
    """Run the agent daemon: heartbeats with live capacity. Stops on SIGTERM/Ctrl-C."""
    from shared.logging import configure_logging
    from site_agent.daemon import run_agent

    settings = agent_settings(config)
    configure_logging("INFO", json_lines=True)
    try:
        code = run_agent(settings)
    except (FileNotFoundError, PermissionError) as exc:
        fail(str(exc))
    raise typer.Exit(code)


@agent_app.command("discover")
def agent_discover(config: ConfigOpt, as_json: JsonOpt = False) -> None:
    """Take one capacity snapshot now, with the software the agent measures (RELION builds
    found on PATH and in [software] relion_dirs), and print it (nothing is sent)."""
    from site_agent.discovery import make_discovery
    from site_agent.discovery.base import storage_capacity
    from site_agent.software import discover_software

    settings = agent_settings(config)
    try:
        parts = make_discovery(settings.discovery).partitions()
    except Exception as exc:
        fail(f"discovery failed: {exc}")
    storage = storage_capacity(settings.storage)
    software = discover_software(settings.software) if settings.software.probe else []
    print_json({"partitions": [p.model_dump() for p in parts], "storage": [s.model_dump() for s in storage],
                "software": [m.model_dump() for m in software]})  # fmt: skip
    del as_json


@agent_app.command("rotate-key")
def agent_rotate_key(config: ConfigOpt) -> None:
    """Replace the agent's key pair; the new public key is sent, signed for with the old one."""
    from site_agent.keys import rotate_key

    settings = agent_settings(config)
    try:
        thumbprint = rotate_key(settings)
    except Exception as exc:
        fail(f"key rotation failed: {exc}")
    console.print(f"new agent key registered (thumbprint {thumbprint}); restart the agent to use it")


# ---------------------------------------------------------------- sites, network


@sites_app.command("list")
def sites_list(
    status: Annotated[str | None, typer.Option(help="pending, active or suspended")] = None,
    country: Annotated[str | None, typer.Option(help="ISO country code")] = None,
    institution: Annotated[str | None, typer.Option()] = None,
    gpu_model: Annotated[str | None, typer.Option(help="Sites with this GPU model, e.g. a100")] = None,
    software: Annotated[str | None, typer.Option(help="Sites offering this package, e.g. relion")] = None,
    q: Annotated[str | None, typer.Option(help="Text search")] = None,
    hub: HubOpt = None,
    client_id: IdOpt = None,
    client_secret: SecretOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List sites in the registry."""
    params = {
        "status": status,
        "country": country,
        "institution": institution,
        "gpu_model": gpu_model,
        "software": software,
        "q": q,
        "limit": 500,
    }
    page = hub_call((hub, client_id, client_secret), "GET", "/api/v1/sites", params=params)
    print_json(page) if as_json else console.print(sites_table(page["items"]))


@sites_app.command("show")
def sites_show(
    name: str, hub: HubOpt = None, client_id: IdOpt = None, client_secret: SecretOpt = None, as_json: JsonOpt = False
) -> None:
    """Show one site, with its latest capacity."""
    with session(hub, client_id, client_secret) as s:
        site = call(s, "GET", f"/api/v1/sites/{name}")
        try:
            capacity = s.call("GET", f"/api/v1/sites/{name}/capacity")
        except CliError:
            capacity = None
    if as_json:
        print_json({"site": site, "capacity": capacity})
        return
    for table in site_detail(site, capacity):
        console.print(table)


@network_app.command("summary")
def network_summary(
    status: Annotated[str | None, typer.Option(help="List only sites pending, active or suspended")] = None,
    reachability: Annotated[str | None, typer.Option(help="List only sites unknown, online or unreachable")] = None,
    institution: Annotated[str | None, typer.Option(help="List only this institution's sites")] = None,
    q: Annotated[str | None, typer.Option(help="List only sites with this text in their name or description")] = None,
    limit: Annotated[int, typer.Option(help="Sites to list (at most 500); 0: the network's totals alone")] = 100,
    offset: Annotated[int, typer.Option(help="Sites to skip, for the next page")] = 0,
    hub: HubOpt = None,
    client_id: IdOpt = None,
    client_secret: SecretOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Sites by status, free and total CPUs and GPUs by model (the whole network), and a page
    of sites with their capacity and heartbeat age."""
    params = {"status": status, "reachability": reachability, "institution": institution, "q": q, "limit": limit,
              "offset": offset}  # fmt: skip
    summary = hub_call((hub, client_id, client_secret), "GET", "/api/v1/network/summary", params=params)
    print_json(summary) if as_json else console.print(summary_table(summary))


# ---------------------------------------------------------------- people signing in


@app.command("login")
def login(hub: Annotated[str, typer.Option("--hub", help="Hub URL", envvar="CRYOMESH_HUB_URL")]) -> None:
    """Sign in as a person (RFC 8628 device grant): approve the code in a browser; the token is
    kept in your config directory (mode 0600) until the sign-in expires or `cryomesh logout`."""
    from cryomesh_cli.client import device_login, save_token

    def show(grant: dict[str, Any]) -> None:
        console.print(
            f"Open [bold]{grant['verification_uri_complete']}[/bold] in a browser, sign in and approve the code "
            f"[bold]{grant['user_code']}[/bold]. Waiting…",
            highlight=False,
        )

    token = device_login(hub, show)
    path = save_token(normalise_hub_url(hub), token)
    with session(hub, None, None) as s:
        me = call(s, "GET", "/api/v1/session")
    console.print(f"signed in as {me['client_id']} ({me['role']}) until {me['expires_at']}; token saved in {path}")


@app.command("logout")
def logout() -> None:
    """End the sign-in `cryomesh login` made (on the hub too) and forget its token."""
    from cryomesh_cli.client import saved_token, token_path

    login = saved_token(None)
    if login is not None:
        with httpx.Client(base_url=login[0], timeout=15) as http, contextlib.suppress(httpx.HTTPError):
            http.post("/api/v1/session/end", headers={"Authorization": f"Bearer {login[1]}"})
    token_path().unlink(missing_ok=True)
    console.print("signed out")


# ---------------------------------------------------------------- demo


@app.command("demo")
def demo(
    duration: Annotated[
        float | None,
        typer.Option(help="Stop once every job has finished, or after this many seconds (default: serve until Ctrl-C)"),
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Write a JSON report of what the demo saw")] = None,
    heartbeat: Annotated[float, typer.Option(help="Agents' heartbeat interval, seconds")] = 2.0,
    executor: Annotated[
        str, typer.Option(help="Where the sites run jobs: 'local' processes or a real local 'slurm' cluster")
    ] = "local",
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the working directory (database, credentials, data, logs) at the end")
    ] = False,
) -> None:
    """Run a small network on this machine: an embedded hub, three enrolled site agents, and a
    batch of jobs placed by the broker and run by the sites. Everything lives in a fresh
    directory under the system's temp directory, removed at the end unless --keep. Exits
    non-zero, saying what did not finish and why, when the story did not finish in --duration."""
    from cryomesh_cli.demo import run_demo

    if executor not in ("local", "slurm"):
        fail("--executor is 'local' or 'slurm'")
    raise typer.Exit(run_demo(duration=duration, report=report, heartbeat_s=heartbeat, executor=executor, keep=keep))


def main() -> None:
    from pydantic import ValidationError

    try:
        app()
    except CliError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(1)
    except ValidationError as exc:  # a local file or option the schemas refuse: no traceback, no pydantic URL
        console.print(f"[red]error:[/red] {validation_text(exc, 'not valid')}", highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
