"""Following a RELION job in the network until its output is home, from a state file.

``<job dir>/.cryomesh-relion.json`` holds the job id, the exchange and every output file
already fetched and verified (path -> SHA-256), saved after each file. Whoever follows the
job (the submit command, or ``cryomesh relion sync`` after it died) reads it, so a file is
never fetched twice and the exit file RELION waits for is written exactly once, after
every output file is in place and checked:

- ``RELION_JOB_ABORT_NOW`` appearing in the job directory cancels the job in the network;
  the job ends with ``RELION_JOB_EXIT_ABORTED``;
- a job that ran to the end brings its output directory home (``run.out``/``run.err`` with
  it) and ends with ``RELION_JOB_EXIT_SUCCESS``, or ``RELION_JOB_EXIT_FAILURE`` when a
  command failed or the network could not run it (the reason appended to ``run.err``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from cryomesh_cli.client import CliError, HubSession, load_profile
from cryomesh_cli.render import console
from shared.relion_files import ChecksumMismatch, copy_checked, inside, write_json_atomic

STATE = ".cryomesh-relion.json"
FINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}
EXIT_FILES = ("RELION_JOB_EXIT_SUCCESS", "RELION_JOB_EXIT_FAILURE", "RELION_JOB_EXIT_ABORTED")


def poll_interval() -> float:
    return float(os.environ.get("CRYOMESH_RELION_POLL_S", "2"))


def load_state(jobdir: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((jobdir / STATE).read_text()))
    except (OSError, ValueError):
        return None


def save_state(jobdir: Path, state: dict[str, Any]) -> None:
    write_json_atomic(jobdir / STATE, state)


class _Hub:
    """Calls that survive a hub restart or an expired token: a new session on each failure."""

    def __init__(self, creds: tuple[str | None, str | None, str | None]) -> None:
        self.profile = load_profile(*creds)
        self.s: HubSession | None = None

    def call(self, method: str, path: str) -> Any:
        delay, refused = 1.0, 0
        while True:
            if self.s is None:
                self.s = HubSession(self.profile)
            try:
                return self.s.call(method, path)
            except CliError as exc:
                text = str(exc)
                refused = refused + 1 if text.startswith(("401", "sign-in refused")) else 0
                transient = text.startswith("cannot reach") or re.match(r"(5\d\d|408|429)\b", text) or 0 < refused < 3
                if not transient:
                    raise
                console.print(f"hub: {text}; retrying in {delay:.0f}s")
                self.s.http.close()
                self.s = None
                time.sleep(delay)
                delay = min(delay * 2, 30)


def _fetch(jobdir: Path, state: dict[str, Any], results: Path) -> dict[str, Any]:
    """Copy every output file not yet home into the job directory, checked; record each."""
    manifest = json.loads((results / "manifest.json").read_text())
    fetched: dict[str, str] = state.setdefault("fetched", {})
    moved = 0
    for f in manifest["files"]:
        dest = inside(jobdir, f["path"])
        if fetched.get(f["path"]) == f["sha256"] and dest.is_file():
            continue
        copy_checked(inside(results / "files", f["path"]), dest, f["size"], f["sha256"])
        fetched[f["path"]] = f["sha256"]
        moved += f["size"]
        state["fetched_bytes"] = state.get("fetched_bytes", 0) + f["size"]
        save_state(jobdir, state)
    console.print(f"{len(manifest['files'])} output files home and verified ({moved} bytes fetched now)")
    return dict(manifest)


def _finish(jobdir: Path, state: dict[str, Any], flag: str, note: str | None = None) -> int:
    if note:
        with (jobdir / "run.err").open("a") as fh:
            fh.write(f"cryomesh: {note}\n")
    (jobdir / flag).touch()
    state["done"] = flag
    save_state(jobdir, state)
    console.print(f"{state['output_dir']}: {flag}" + (f" ({note})" if note else ""))
    return 0 if flag == "RELION_JOB_EXIT_SUCCESS" else 1


def follow(jobdir: Path, creds: tuple[str | None, str | None, str | None]) -> int:
    state = load_state(jobdir)
    assert state is not None
    if state.get("done"):
        console.print(f"{state['output_dir']}: already ended ({state['done']})")
        return 0 if state["done"] == "RELION_JOB_EXIT_SUCCESS" else 1
    try:
        return _follow(jobdir, state, _Hub(creds))
    except CliError as exc:  # the job goes on in the network; its output waits in the exchange
        console.print(f"[red]error:[/red] {exc}; resume with `cryomesh relion sync {state['output_dir']}`")
        return 1


def _follow(jobdir: Path, state: dict[str, Any], hub: _Hub) -> int:
    job_id = state["job_id"]
    said = None
    while True:
        if (jobdir / "RELION_JOB_ABORT_NOW").exists() and not state.get("cancel_sent"):
            hub.call("POST", f"/api/v1/jobs/{job_id}/cancel")
            state["cancel_sent"] = True
            save_state(jobdir, state)
            console.print(f"RELION_JOB_ABORT_NOW: job {job_id} canceled in the network")
        job = hub.call("GET", f"/api/v1/jobs/{job_id}")
        if (why := job.get("state_reason")) and why != said:  # e.g. a site's refusal: in run.out for RELION's user
            console.print(f"job {job_id} {job['state']}: {why}", markup=False, highlight=False, soft_wrap=True)
            said = why
        if job["state"] in FINAL:
            break
        time.sleep(poll_interval())
    if job["state"] == "CANCELED" or state.get("cancel_sent"):
        return _finish(jobdir, state, "RELION_JOB_EXIT_ABORTED")
    results = Path(state["exchange"]) / "relion" / "results" / job_id
    if not (results / "manifest.json").is_file():
        logs = hub.call("GET", f"/api/v1/jobs/{job_id}/logs")
        with (jobdir / "run.err").open("a") as fh:
            fh.write(logs.get("stderr_tail") or "")
        why = f"job {job_id} ended {job['state']} at {job.get('site')}: {job.get('state_reason') or 'no output came back'}"
        return _finish(jobdir, state, "RELION_JOB_EXIT_FAILURE", why)
    try:
        manifest = _fetch(jobdir, state, results)
    except (ChecksumMismatch, OSError, ValueError) as exc:
        return _finish(jobdir, state, "RELION_JOB_EXIT_FAILURE", f"the output did not come home intact: {exc}")
    shutil.rmtree(results, ignore_errors=True)  # home and verified: the exchange copy has done its work
    if job["state"] == "COMPLETE" and manifest.get("exit_code") == 0:
        return _finish(jobdir, state, "RELION_JOB_EXIT_SUCCESS")
    return _finish(jobdir, state, "RELION_JOB_EXIT_FAILURE", f"job {job_id} ended {job['state']}: {job.get('state_reason')}")
