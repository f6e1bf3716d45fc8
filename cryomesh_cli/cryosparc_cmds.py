"""``cryomesh cryosparc ...``: a cryoSPARC cluster lane whose jobs go into the network.

``cryomesh cryosparc lane`` writes the two files ``cryosparcm cluster connect`` reads:
``cluster_info.json``, whose ``qsub_cmd_tpl``, ``qstat_cmd_tpl``, ``qdel_cmd_tpl`` and
``qinfo_cmd_tpl`` call ``cryomesh cryosparc qsub|qstat|qdel|qinfo``, and
``cluster_script.sh``, a Jinja2 template cryoSPARC renders per job with its documented
variables (``{{ num_cpu }}``, ``{{ num_gpu }}``, ``{{ ram_gb }}``, ``{{ job_uid }}``,
``{{ project_uid }}``, ``{{ job_log_path_abs }}``, ``{{ run_cmd }}``). ``qsub`` reads the
rendered script and submits a ``cryosparc.job`` to the hub; it prints the network job id,
which cryoSPARC keeps as ``{{ cluster_job_id }}`` for ``qstat`` and ``qdel``.

cryomesh places and runs the worker command only. cryoSPARC moves its own data: the
worker at the partner site reaches the master over the network and reads the project
directory itself (docs/researcher-guide.md says what a partner site needs).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated, Any

import typer

from cryomesh_cli.common import HubOpt, IdOpt, SecretOpt, fail, hub_call
from cryomesh_cli.render import console

cryosparc_app = typer.Typer(help="A cryoSPARC cluster lane into the network.", no_args_is_help=True)

SCRIPT = """#!/bin/sh
# cryoSPARC cluster script for the cryomesh lane {name}. cryoSPARC renders it per job and
# runs `cryomesh cryosparc qsub <rendered script>`, which reads the "#cryomesh" lines and
# the worker command; no shell runs it.
#cryomesh site {site}
#cryomesh num_cpu {{{{ num_cpu }}}}
#cryomesh num_gpu {{{{ num_gpu }}}}
#cryomesh ram_gb {{{{ ram_gb }}}}
#cryomesh gpu_model {gpu_model}
#cryomesh project_uid {{{{ project_uid }}}}
#cryomesh job_uid {{{{ job_uid }}}}
#cryomesh job_log_path_abs {{{{ job_log_path_abs }}}}
{{{{ run_cmd }}}}
"""


@cryosparc_app.command("lane")
def lane(
    name: Annotated[str, typer.Option(help="The lane's name in cryoSPARC")],
    worker_bin_path: Annotated[str, typer.Option(help="cryosparcw at the partner sites (the same path at each)")],
    out: Annotated[Path, typer.Option(help="Directory to write cluster_info.json and cluster_script.sh to")] = Path(),
    site: Annotated[str, typer.Option(help="The site to run at, or auto: the broker chooses")] = "auto",
    gpu_model: Annotated[str, typer.Option(help="GPU model the jobs need (blank: any)")] = "",
    cache_path: Annotated[str, typer.Option(help="SSD cache directory at the partner sites (blank: none)")] = "",
    cryomesh: Annotated[str, typer.Option(help="How cryoSPARC's master calls cryomesh")] = "cryomesh",
) -> None:
    """Write cluster_info.json and cluster_script.sh for `cryosparcm cluster connect`."""
    out.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {
        "name": name,
        "title": f"{name} (cryomesh)",
        "worker_bin_path": worker_bin_path,
        "cache_path": cache_path,
        "send_cmd_tpl": "{{ command }}",
        "qsub_cmd_tpl": f"{cryomesh} cryosparc qsub {{{{ script_path_abs }}}}",
        "qstat_cmd_tpl": f"{cryomesh} cryosparc qstat {{{{ cluster_job_id }}}}",
        "qdel_cmd_tpl": f"{cryomesh} cryosparc qdel {{{{ cluster_job_id }}}}",
        "qinfo_cmd_tpl": f"{cryomesh} cryosparc qinfo",
    }
    (out / "cluster_info.json").write_text(json.dumps(info, indent=2) + "\n")
    (out / "cluster_script.sh").write_text(SCRIPT.format(name=name, site=site, gpu_model=gpu_model))
    console.print(f"wrote {out / 'cluster_info.json'} and {out / 'cluster_script.sh'}; "
                  f"then: cd {out} && cryosparcm cluster connect")  # fmt: skip


def _rendered(path: Path) -> tuple[dict[str, str], list[str]]:
    """The #cryomesh fields and the worker command (argv) of a rendered cluster script."""
    fields: dict[str, str] = {}
    command: list[str] = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("#cryomesh "):
            key, _, value = line[len("#cryomesh ") :].partition(" ")
            fields[key] = value.strip()
        elif line and not line.startswith("#"):
            if command:
                fail(f"{path}: more than one command line; the lane runs cryoSPARC's one worker command")
            try:
                argv = shlex.split(line)
            except ValueError as exc:
                fail(f"{path}: {exc}")
            # cryoSPARC appends its own log redirection; the site keeps the output itself.
            command = argv[: next((i for i, a in enumerate(argv) if a.startswith((">", "2>", "&>"))), len(argv))]
    if not command or Path(command[0]).name != "cryosparcw":
        fail(f"{path}: the command is not cryoSPARC's worker (cryosparcw ...); the lane runs nothing else")
    return fields, ["cryosparcw", *command[1:]]


def _number(fields: dict[str, str], key: str) -> float:
    try:
        return float(fields.get(key) or 0)
    except ValueError:
        fail(f"#cryomesh {key}: {fields[key]!r} is not a number")


@cryosparc_app.command("qsub")
def qsub(
    script: Annotated[Path, typer.Argument(help="The cluster script cryoSPARC rendered ({{ script_path_abs }})")],
    hub: HubOpt = None,
    client_id: IdOpt = None,
    client_secret: SecretOpt = None,
) -> None:
    """Submit a rendered cryoSPARC cluster script as a network job; prints its id (the cluster job id)."""
    fields, command = _rendered(script)
    cpus, gpus, ram = int(_number(fields, "num_cpu")) or 1, int(_number(fields, "num_gpu")), _number(fields, "ram_gb") or 1
    resources: dict[str, Any] = {"cpus": cpus, "gpus": gpus, "memory_gb": ram}
    if gpus and fields.get("gpu_model"):
        resources["gpu_model"] = fields["gpu_model"]
    ids = f"{fields.get('project_uid', '')}-{fields.get('job_uid', '')}"
    spec: dict[str, Any] = {
        "name": f"cryosparc {ids}",
        "kind": "cryosparc.job",
        "command": command,
        "resources": resources,
        "software": [{"name": "cryosparc"}],
        "tags": ["cryosparc-lane"],
    }
    if fields.get("site") and fields["site"] not in ("auto", "any"):
        spec["placement"] = {"allowed_sites": [fields["site"]]}
    job = hub_call((hub, client_id, client_secret), "POST", "/api/v1/jobs", json_body=spec)
    print(job["id"])  # cryoSPARC keeps what qsub prints as the cluster job id


@cryosparc_app.command("qstat")
def qstat(
    cluster_job_id: Annotated[str, typer.Argument(help="The id qsub printed")],
    hub: HubOpt = None,
    client_id: IdOpt = None,
    client_secret: SecretOpt = None,
) -> None:
    """The network job's state, where it runs and why: cryoSPARC shows this as the queue status."""
    job = hub_call((hub, client_id, client_secret), "GET", f"/api/v1/jobs/{cluster_job_id}")
    print(f"{job['id']} {job['state']} {job.get('site') or '-'} {job.get('state_reason') or ''}".rstrip())


@cryosparc_app.command("qdel")
def qdel(
    cluster_job_id: Annotated[str, typer.Argument(help="The id qsub printed")],
    hub: HubOpt = None,
    client_id: IdOpt = None,
    client_secret: SecretOpt = None,
) -> None:
    """Cancel the network job (the site stops the worker)."""
    job = hub_call((hub, client_id, client_secret), "POST", f"/api/v1/jobs/{cluster_job_id}/cancel")
    print(f"{job['id']} {job['state']}")


@cryosparc_app.command("qinfo")
def qinfo(hub: HubOpt = None, client_id: IdOpt = None, client_secret: SecretOpt = None) -> None:
    """What the network has: sites online and free capacity."""
    summary = hub_call((hub, client_id, client_secret), "GET", "/api/v1/network/summary")
    print(json.dumps(summary, indent=1, default=str))
