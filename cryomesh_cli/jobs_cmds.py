"""``cryomesh jobs ...`` and ``cryomesh usage``."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cryomesh_cli.client import CliError, HubSession
from cryomesh_cli.common import HubOpt, IdOpt, JsonOpt, SecretOpt, call, fail, hub_call, load_document, session
from cryomesh_cli.render import Col, console, fitted_table, print_json

jobs_app = typer.Typer(help="Submit and follow jobs.", no_args_is_help=True)

FINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}


def jobs_table(items: list[dict[str, Any]]) -> Table:
    cols = (
        Col("id", keep=True),
        Col("name", drop=1),
        Col("kind", drop=3),
        Col("state"),
        Col("site", keep=True),
        Col("attempt", drop=5),
        Col("institution", drop=4),
        Col("submitted", drop=2),
    )
    colours = {"COMPLETE": "green", "RUNNING": "cyan", "EXECUTOR_ERROR": "red", "SYSTEM_ERROR": "red", "CANCELED": "yellow"}
    rows = []
    for j in items:
        c = colours.get(j["state"], "white")
        rows.append(
            (
                j["id"],
                j["name"],
                j["kind"],
                f"[{c}]{j['state']}[/{c}]",
                j["site"] or "-",
                str(j["attempt"]),
                j["institution"],
                j["created_at"][:19].replace("T", " "),
            )
        )
    return fitted_table(cols, rows, title=f"{len(items)} job(s)")


def placement_text(p: dict[str, Any]) -> Table:
    table = Table("site", "eligible", "score", "reasons", title=p["explanation"], show_lines=False)
    latest = p.get("latest") or {"verdicts": []}
    for v in latest["verdicts"]:
        table.add_row(
            v["site"],
            "yes" if v["eligible"] else "no",
            f"{v['score']:.3f}" if v.get("score") is not None else "-",
            "; ".join(v["reasons"]),
        )
    return table


def wait_for_job(s: HubSession, job_id: str, timeout: float | None) -> dict[str, Any]:
    deadline = time.monotonic() + timeout if timeout else None
    last = None
    with console.status("waiting") as status:
        while True:
            j = s.call("GET", f"/api/v1/jobs/{job_id}")
            line = f"{j['state']}" + (f" at {j['site']}" if j["site"] else "") + f" (attempt {j['attempt']})"
            if line != last:
                console.print(
                    f"{datetime.now(UTC):%H:%M:%S} {line}" + (f" — {j['state_reason']}" if j.get("state_reason") else "")
                )
                last = line
            status.update(line)
            if j["state"] in FINAL or (deadline and time.monotonic() > deadline):
                return dict(j)
            time.sleep(1)


@jobs_app.command("submit")
def submit(
    spec_file: Annotated[Path | None, typer.Argument(help="YAML or JSON job spec")] = None,
    command: Annotated[
        str | None, typer.Option("--command", help="Run this shell-free command line instead of a spec file")
    ] = None,
    name: Annotated[str, typer.Option(help="Job name (with --command)")] = "command",
    cpus: Annotated[int, typer.Option(help="CPUs (with --command)")] = 1,
    gpus: Annotated[int, typer.Option(help="GPUs (with --command)")] = 0,
    gpu_model: Annotated[str | None, typer.Option(help="GPU model (with --command)")] = None,
    memory_gb: Annotated[float, typer.Option(help="Memory in GB (with --command)")] = 4,
    walltime: Annotated[int, typer.Option(help="Walltime in seconds (with --command)")] = 3600,
    idempotency_key: Annotated[str | None, typer.Option(help="Submitting twice with one key makes one job")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the job until it ends")] = False,
    hub: HubOpt = None,
    client_id: IdOpt = None,
    client_secret: SecretOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Submit a job from a spec file, or a single command with --command."""
    import shlex

    if (spec_file is None) == (command is None):
        fail("give a spec file or --command, not both")
    if spec_file is not None:
        from shared.schemas.jobs import JobSpec

        body = load_document(spec_file, JobSpec)
    else:
        assert command is not None
        resources: dict[str, Any] = {"cpus": cpus, "gpus": gpus, "memory_gb": memory_gb, "walltime_s": walltime}
        if gpu_model:
            resources["gpu_model"] = gpu_model
        body = {"name": name, "kind": "generic.command", "command": shlex.split(command), "resources": resources}
    if idempotency_key:
        body["idempotency_key"] = idempotency_key
    with session(hub, client_id, client_secret) as s:
        job = call(s, "POST", "/api/v1/jobs", json_body=body)
        if as_json and not wait:
            print_json(job)
            return
        console.print(
            f"job [bold]{job['id']}[/bold] {job['state']}"
            + (f", placed on {job['site']}" if job["site"] else ", waiting for a site")
        )
        for warning in job.get("warnings", []):
            console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False, soft_wrap=True)
        if wait:
            try:
                final = wait_for_job(s, job["id"], None)
            except CliError as exc:
                fail(str(exc))
            if as_json:
                print_json(final)
            raise typer.Exit(0 if final["state"] == "COMPLETE" else 1)


@jobs_app.command("list")
def list_jobs(
    state: Annotated[str | None, typer.Option(help="QUEUED, RUNNING, COMPLETE, ...")] = None,
    site: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option()] = 50,
    hub: HubOpt = None,
    client_id: IdOpt = None,
    client_secret: SecretOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Jobs you may see, newest first."""
    page = hub_call((hub, client_id, client_secret), "GET", "/api/v1/jobs", params={"state": state, "site": site, "limit": limit})
    print_json(page) if as_json else console.print(jobs_table(page["items"]))


def _full_id(s: HubSession, job_id: str) -> str:
    if len(job_id) >= 32:
        return job_id
    for j in s.call("GET", "/api/v1/jobs", params={"limit": 500})["items"]:
        if j["id"].startswith(job_id):
            return str(j["id"])
    return job_id


@jobs_app.command("show")
def show(
    job_id: str, hub: HubOpt = None, client_id: IdOpt = None, client_secret: SecretOpt = None, as_json: JsonOpt = False
) -> None:
    """One job (a unique prefix of its id is enough), and where its pictures are (a
    classification's class averages, sent by the site as small PNGs)."""
    with session(hub, client_id, client_secret) as s:
        j = call(s, "GET", f"/api/v1/jobs/{_full_id(s, job_id)}")
        pictures = call(s, "GET", f"/api/v1/jobs/{j['id']}/pictures")
        dashboard = f"{s.profile.hub_url.rstrip('/')}/dashboard/#/job/{j['id']}"
    if as_json:
        print_json({**j, "pictures": pictures})
        return
    table = Table(title=f"job {j['id']}", show_header=False)
    table.add_column("field")
    table.add_column("value")
    for key in (
        "name",
        "kind",
        "state",
        "site",
        "attempt",
        "owner",
        "institution",
        "state_reason",
        "exit_code",
        "created_at",
        "finished_at",
    ):
        table.add_row(key, str(j.get(key) if j.get(key) is not None else "-"))
    r = j["spec"]["resources"]
    table.add_row(
        "resources", f"{r['cpus']} CPUs, {r['gpus']} GPUs {r.get('gpu_model') or ''}, {r['memory_gb']} GB, {r['walltime_s']} s"
    )
    console.print(table)
    if pictures:  # after the table, so the addresses stay whole for copying
        shares = [f"{p['share']:.0%}" for p in pictures if p.get("share") is not None]
        console.print(
            f"pictures: {len(pictures)} from {pictures[0]['site']}" + (f" (class shares {', '.join(shares)})" if shares else "")
            + f"; in the dashboard at {dashboard} ; each PNG at {pictures[0]['url'].rsplit('/', 1)[0]}/<name>",
            highlight=False, soft_wrap=True, markup=False,
        )  # fmt: skip


@jobs_app.command("logs")
def logs(job_id: str, hub: HubOpt = None, client_id: IdOpt = None, client_secret: SecretOpt = None) -> None:
    """The tail of the job's stdout and stderr."""
    with session(hub, client_id, client_secret) as s:
        out = call(s, "GET", f"/api/v1/jobs/{_full_id(s, job_id)}/logs")
    console.print(f"[bold]stdout[/bold] (attempt {out['attempt']} at {out['site'] or '-'})", highlight=False)
    console.out(out["stdout_tail"] or "(empty)")
    console.print("[bold]stderr[/bold]")
    console.out(out["stderr_tail"] or "(empty)")


@jobs_app.command("cancel")
def cancel(job_id: str, hub: HubOpt = None, client_id: IdOpt = None, client_secret: SecretOpt = None) -> None:
    """Cancel a job: at once if queued; running jobs stop at their site first."""
    with session(hub, client_id, client_secret) as s:
        j = call(s, "POST", f"/api/v1/jobs/{_full_id(s, job_id)}/cancel")
    console.print(f"job {j['id']}: {j['state']}")


@jobs_app.command("explain")
def explain(
    job_id: str, hub: HubOpt = None, client_id: IdOpt = None, client_secret: SecretOpt = None, as_json: JsonOpt = False
) -> None:
    """Why is this job still queued, or why did it go where it went?"""
    with session(hub, client_id, client_secret) as s:
        p = call(s, "GET", f"/api/v1/jobs/{_full_id(s, job_id)}/placement")
    print_json(p) if as_json else console.print(placement_text(p))


def _dur(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes < 1:
        return f"{seconds:.0f} s"
    return f"{minutes // 60} h {minutes % 60:02d} m" if minutes >= 60 else f"{minutes} m"


def estimate_table(e: dict[str, Any]) -> Table:
    t = Table("site", "now", "run time p50", "p10 .. p90", "learned from", f"cost ({e['currency']})", "why",
              title=f"estimate for {e['spec']['name']}: eligible sites first, soonest first")  # fmt: skip
    for s in e["sites"]:
        r = s["runtime"]
        boot = f" + {_dur(s['startup_s'])} start-up" if s.get("startup_s") else ""
        t.add_row(
            s["site"], "eligible" if s["eligible"] else "no",
            _dur(r["p50"]) + boot if r else "-", f"{_dur(r['p10'])} .. {_dur(r['p90'])}" if r else "-",
            (f"{r['runs']} runs" if r["runs"] else "benchmarks") if r else "-",
            f"{s['cost']:.2f}" if s.get("cost") is not None else "-", "; ".join(s["reasons"]),
        )  # fmt: skip
    return t


@jobs_app.command("estimate")
def estimate(
    spec_file: Annotated[Path, typer.Argument(help="YAML or JSON job spec")],
    hub: HubOpt = None,
    client_id: IdOpt = None,
    client_secret: SecretOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """How long and how much the job would take at each site, without submitting it."""
    from shared.schemas.jobs import JobSpec

    body = load_document(spec_file, JobSpec)
    e = hub_call((hub, client_id, client_secret), "POST", "/api/v1/jobs/estimate", json_body=body)
    print_json(e) if as_json else console.print(estimate_table(e))


def usage_tables(report: dict[str, Any]) -> list[Table]:
    window = f"{report['since'][:10]} .. {report['until'][:10]}"
    balance = Table(
        "institution", "lent (CPU h / GPU h)", "borrowed (CPU h / GPU h)", "own use (CPU h / GPU h)",
        title=f"lent and borrowed, by institution ({window}); own use is neither",
    )  # fmt: skip
    for b in report.get("balance_by_institution", []):
        balance.add_row(
            b["institution"], *(f"{b[f'{k}_cpu_hours']:.3f} / {b[f'{k}_gpu_hours']:.3f}" for k in ("lent", "borrowed", "own"))
        )
    out = [balance]
    for title, rows in (
        ("consumed, by institution, own use included", report["consumed_by_institution"]),
        ("provided, by site, own institution included", report["provided_by_site"]),
    ):
        t = Table(
            "who",
            "attempts",
            "wall h",
            "CPU h",
            "GPU h",
            f"cost ({report.get('currency', 'USD')})",
            title=f"usage {title} ({window})",
        )
        for r in rows:
            gpu = ", ".join(f"{m} {h:.2f}" for m, h in r["gpu_hours"].items()) or "-"
            t.add_row(
                r["key"], str(r["attempts"]), f"{r['wall_hours']:.3f}", f"{r['cpu_hours']:.3f}", gpu, f"{r.get('cost', 0):.2f}"
            )
        out.append(t)
    return out


def usage(
    days: Annotated[float, typer.Option(help="Window: the last N days")] = 30,
    hub: HubOpt = None,
    client_id: IdOpt = None,
    client_secret: SecretOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Who borrowed and who lent: CPU- and GPU-hours and cost by institution and by site."""
    report = hub_call((hub, client_id, client_secret), "GET", "/api/v1/usage", params={"days": days})
    if as_json:
        print_json(report)
        return
    for t in usage_tables(report):
        console.print(t)
