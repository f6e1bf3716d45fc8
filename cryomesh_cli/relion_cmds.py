"""``cryomesh relion submit`` and ``cryomesh relion sync``: RELION's "Submit to queue" into the network.

RELION runs ``cryomesh relion submit Class2D/job012/run_submit.script &`` from the project
directory. The command reads the script (``relion_script``), finds the project files the
commands read (``relion_inputs``), publishes them by SHA-256 to the home site's exchange
(``$CRYOMESH_RELION_EXCHANGE``; a file already there is not copied again), submits a job
with them to the hub (metadata only: bulk bytes never pass through the hub), and follows it.

Following (``relion_follow``) is driven by a state file in the job's directory
(``.cryomesh-relion.json``), so a killed submit is taken over by ``cryomesh relion sync
<job dir>``, which fetches only what is not yet home and verified.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from cryomesh_cli.common import HubOpt, IdOpt, SecretOpt, call, fail, session
from cryomesh_cli.relion_follow import STATE, follow, load_state, save_state
from cryomesh_cli.relion_inputs import OutsideProject, project_inputs
from cryomesh_cli.relion_script import ScriptError, job_fields, parse
from cryomesh_cli.render import console
from shared.relion_files import copy_checked, sha256_of
from shared.schemas.relion import RelionRun

relion_app = typer.Typer(help="RELION's queue submission into the network.", no_args_is_help=True)

ExchangeOpt = Annotated[
    Path | None,
    typer.Option("--exchange", help="The home site's exchange directory (or CRYOMESH_RELION_EXCHANGE)", show_default=False),
]


def _exchange(option: Path | None) -> Path:
    value = option or (Path(os.environ["CRYOMESH_RELION_EXCHANGE"]) if os.environ.get("CRYOMESH_RELION_EXCHANGE") else None)
    if value is None:
        fail("no exchange directory: set CRYOMESH_RELION_EXCHANGE (deploy/relion/relion-env.sh) or give --exchange")
    if not value.is_dir():
        fail(f"the exchange directory {value} does not exist")
    return value.resolve()


def _publish(project: Path, paths: list[str], exchange: Path) -> tuple[list[dict[str, Any]], int]:
    """Checksum each input and copy it to ``cas/<sha256>`` unless it is there already."""
    cas = exchange / "relion" / "cas"
    files, sent = [], 0
    for rel in paths:
        full = project / rel
        size, digest = full.stat().st_size, sha256_of(full)
        target = cas / digest
        if not (target.is_file() and target.stat().st_size == size):
            copy_checked(full, target, size, digest)
            sent += size
        files.append({"path": rel, "size": size, "sha256": digest})
    return files, sent


@relion_app.command("submit")
def submit(
    script_path: Annotated[Path, typer.Argument(help="The run_submit.script RELION wrote", metavar="RUN_SUBMIT_SCRIPT")],
    exchange: ExchangeOpt = None,
    project: Annotated[Path | None, typer.Option(help="The RELION project directory (default: the current one)")] = None,
    hub: HubOpt = None,
    client_id: IdOpt = None,
    client_secret: SecretOpt = None,
) -> None:
    """Send a RELION job to the network and bring its output home (RELION's "Queue submit command")."""
    project = (project or Path.cwd()).resolve()
    try:
        text = script_path.read_text()
        script = parse(text)
    except OSError as exc:
        fail(f"cannot read {script_path}: {exc}")
    except ScriptError as exc:
        _refuse(project, script_path.parent if script_path.parent.is_dir() else None, f"{script_path}: {exc}")
    jobdir = project / script.output_dir
    if not jobdir.resolve().is_relative_to(project) or not jobdir.is_dir():
        fail(f"{script.output_dir} is not a job directory inside the project {project} (run this from the project directory)")
    earlier = load_state(jobdir)
    if earlier is not None and not earlier.get("done"):  # sent and not ended (a retry after a crash): follow that job
        console.print(f"{script.output_dir} was already sent to the network as job {earlier['job_id']}; following it")
        raise typer.Exit(follow(jobdir, (hub, client_id, client_secret)))
    try:
        fields = job_fields(script)
    except ScriptError as exc:
        _refuse(project, jobdir, f"{script_path}: {exc}")
    store = _exchange(exchange)
    try:
        paths = project_inputs(project, script.commands, script.output_dir)
    except OutsideProject as exc:
        _refuse(project, jobdir, str(exc))
    if generic := sorted({c.program for c in script.commands if not c.relion}):
        console.print(f"{', '.join(generic)}: not RELION's; only a site whose policy allows generic commands runs this job")
    files, sent = _publish(project, paths, store)
    total = sum(f["size"] for f in files)
    console.print(f"{len(files)} project files read by the job ({total} bytes); {sent} bytes published to {store}")
    run = RelionRun.model_validate(
        {
            "commands": [c.model_dump() for c in script.commands],
            "files": files,
            "output_dir": script.output_dir,
            "exchange": str(store),
        }
    )
    # The same script written at the same moment is the same submission (a retry after a crash
    # between the hub's answer and the state file); RELION writes the script anew on each Run!.
    written = script_path.stat().st_mtime_ns
    key = hashlib.sha256(f"{project}\0{script.output_dir}\0{written}\0{text}".encode()).hexdigest()[:40]
    spec: dict[str, Any] = {
        "name": f"relion {script.output_dir}"[:200],
        "kind": script.kind,
        **fields,
        "software": [{"name": "relion"}],
        "relion": run.model_dump(mode="json"),
        "idempotency_key": f"relion-{key}",
        "tags": ["relion-queue"],
    }
    if script.site:
        spec["placement"] = {"allowed_sites": [script.site]}
    creds = (hub, client_id, client_secret)
    with session(*creds) as s:
        job = call(s, "POST", "/api/v1/jobs", json_body=spec)
    save_state(jobdir, {"job_id": job["id"], "exchange": str(store), "output_dir": script.output_dir,
                        "input_bytes": total, "published_bytes": sent, "fetched": {}})  # fmt: skip
    where = f"at {job['site']}" if job.get("site") else "(waiting for a site)"
    console.print(f"job {job['id']} {job['state']} {where}; follow with `cryomesh jobs show {job['id']}`")
    raise typer.Exit(follow(jobdir, creds))


def _refuse(project: Path, jobdir: Path | None, message: str) -> None:
    """Refused before anything was sent: say why in run.err and end the job as failed for RELION."""
    if jobdir is not None:
        with (jobdir / "run.err").open("a") as fh:
            fh.write(f"cryomesh: refused: {message}\n")
        (jobdir / "RELION_JOB_EXIT_FAILURE").touch()
    fail(f"refused: {message}")


@relion_app.command("sync")
def sync(
    jobdir: Annotated[Path, typer.Argument(help="The RELION job directory, e.g. Class2D/job012")],
    hub: HubOpt = None,
    client_id: IdOpt = None,
    client_secret: SecretOpt = None,
) -> None:
    """Take over following a job sent with `cryomesh relion submit` (after the submit was
    killed or the machine restarted): wait for it, fetch what is not home yet, verified."""
    if load_state(jobdir) is None:
        fail(f"{jobdir} holds no {STATE}: it was not sent with `cryomesh relion submit`")
    raise typer.Exit(follow(jobdir, (hub, client_id, client_secret)))
