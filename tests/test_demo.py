"""`cryomesh demo`, the product's front door: three sites enrolled for real, online."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def temp_env(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The demo's temp directory, where the test can see what it leaves behind."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    return tmp, {**os.environ, "TMPDIR": str(tmp)}


def test_demo_brings_three_sites_online(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    tmp, env = temp_env(tmp_path)
    out = subprocess.run(
        # It stops as soon as every job has finished; the duration is only a limit, generous
        # for a busy machine.
        [sys.executable, "-m", "cryomesh_cli.main", "demo", "--duration", "480", "--report", str(report), "--keep"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all 3 sites online" in out.stdout and "all 7 jobs finished after" in out.stdout
    assert "the demo's story finished in" in out.stdout
    (kept,) = tmp.glob("cryomesh-demo-*")
    said = " ".join(out.stdout.split())  # rich wraps long lines
    assert f"working directory {kept}" in said and f"kept the working directory {kept}" in said, "named at start and end"
    assert (kept / "coordinator.json").is_file() and (kept / "hub.log").is_file()
    data = json.loads(report.read_text())
    assert data["hub_url"].startswith("http://127.0.0.1:")
    sites = {s["name"]: s for s in data["sites"]}
    assert set(sites) == {"kyoto-gpu", "osaka-cpu", "aws-tokyo"}
    for s in sites.values():
        assert s["status"] == "online" and s["lifecycle"] == "active"
        assert s["cpus_total"] > 0 and 0 <= s["cpus_free"] <= s["cpus_total"]
    assert sites["kyoto-gpu"]["gpus"]["a100"]["total"] == 32 and sites["kyoto-gpu"]["gpus"]["h100"]["total"] == 16
    assert sites["aws-tokyo"]["gpus"]["a10g"]["total"] == 40
    assert sites["osaka-cpu"]["cpus_total"] == os.cpu_count(), "the local site measured this machine"
    assert data["network"]["sites_by_reachability"] == {"online": 3}

    jobs = data["jobs"]
    assert len(jobs) == 7 and all({"id", "kind", "state", "site", "placement"} <= set(j) for j in jobs)
    assert {j["state"] for j in jobs} == {"COMPLETE"}, [(j["name"], j["state"]) for j in jobs]
    for j in jobs:
        verdicts = {v["site"]: v for v in j["placement"]["verdicts"]}
        assert verdicts["aws-tokyo"]["reasons"] == ["policy: does not lend to institution osaka-u"]
        if j["name"].startswith("refine3d"):
            assert j["site"] == "kyoto-gpu", "only kyoto-gpu has A100s"
            assert verdicts["osaka-cpu"]["reasons"] == ["has no a100 GPUs"]
    assert "refused at submission" in out.stdout
    dash = data["dashboard"]
    assert f"dashboard at {dash['url']}" in out.stdout and dash["url"] == data["hub_url"] + "/dashboard/"
    assert dash["username"] == "coordinator" and len(dash["password"]) >= 12

    # The data story: a RELION data set made at kyoto-gpu, shared with osaka-cpu on its admin's
    # approval, copied and verified, classified there by a real relion_refine with the RELION
    # osaka-cpu's agent measured, the classes registered with their provenance.
    datasets = {d["title"]: d for d in data["datasets"]}
    raw = datasets["Synthetic particles: noisy projections of a known density"]
    derived = datasets["2D classes of the synthetic particles"]
    assert {(r["site"], r["state"]) for r in raw["replicas"]} == {("kyoto-gpu", "AVAILABLE"), ("osaka-cpu", "AVAILABLE")}
    assert derived["source_datasets"] == [raw["id"]] and derived["owner_site"] == "osaka-cpu"
    (share,) = data["shares"]
    assert share["state"] == "approved" and share["decided_by"] and not share["auto_approved"]
    (t,) = data["transfers"]
    assert t["state"] == "DONE" and t["fetched_bytes"] == raw["total_bytes"] == t["bytes_total"]
    (relion,) = [s for s in data["measured_software"]["osaka-cpu"] if s["name"] == "relion"]  # podman may be there too
    assert relion["name"] == "relion" and relion["build"] == "cpu" and relion["version"].startswith("3.")
    job = data["data_job"]
    assert (job["state"], job["site"], job["output_dataset"]) == ("COMPLETE", "osaka-cpu", derived["id"])
    assert derived["source_job"] == job["id"]
    a = job["analysis"]
    assert a["particles"] == 240 and a["iteration_file"] == "run_it010_classes.mrcs" and len(a["classes"]) == 3
    # Averaging hundreds of particles brings a view out of noise no single particle shows.
    assert a["best_class_correlation"] > 0.9 and a["single_image_correlation"] < 0.6, a
    assert abs(sum(c["share"] for c in a["classes"]) - 1) < 0.01
    assert len(job["pictures"]) == 3 and all(p["site"] == "osaka-cpu" for p in job["pictures"])
    said_once = " ".join(out.stdout.split())
    assert f"its class averages: {dash['url']}#/job/{job['id']}" in said_once


def test_demo_cut_short_says_what_did_not_finish(tmp_path: Path) -> None:
    tmp, env = temp_env(tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "cryomesh_cli.main", "demo", "--duration", "3"], capture_output=True, text=True, timeout=120,
        env=env,
    )  # fmt: skip
    said = " ".join(out.stdout.split())
    assert out.returncode == 1, said
    assert "the demo's story did not finish (the time was up: --duration 3):" in said, said
    assert "job batch: not submitted" in said and "data story: not started" in said, "it names what did not happen"
    assert "None" not in said
    assert list(tmp.glob("cryomesh-demo-*")) == [], "the working directory is removed"
    assert "removed the working directory" in said


def test_demo_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    import contextlib
    import signal
    import time

    import psutil

    tmp, env = temp_env(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cryomesh_cli.main", "demo"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=env,
        # A test run started in the background inherits SIGINT ignored; Ctrl-C must reach the demo.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    children: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(children) < 4:  # the hub and three agents
            time.sleep(0.5)
            children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 4, "the demo started a hub and three agents"
        time.sleep(2)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=90)
        assert proc.returncode == 0, out
        assert "stopping" in out
        _, alive = psutil.wait_procs(children, timeout=30)
        assert alive == [], "no hub or agent process is left behind"
        assert list(tmp.glob("cryomesh-demo-*")) == [], "nor its working directory"
    finally:  # a failed run leaves nothing running either
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
