"""Real RELION at a site: measured by its agent, run for the network, looked at in the dashboard.

A real hub and a real agent process; Debian's RELION 3.1.3 (CPU) on PATH, plus a *fake* GPU
build in the agent's ``[software] relion_dirs`` (no GPU or CUDA here: it only answers
``--version`` and ``cuobjdump`` as a CUDA build does, and fails if run). The site declares no
RELION: only what the agent measured makes it eligible for a ``relion.class2d`` job. The data
set is made by ``relion_project``; the job is a real ``relion_refine`` Class2D, which must run
with the CPU build (the fake one would fail it). Its class averages and the data set's
particles come back as small PNGs, shown in Debian's Chromium driven by Playwright.
Screenshots go to a temp dir, or to ``$CRYOMESH_SCREENSHOTS`` (``docs/images``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Account
from tests.processes import HubProcess, cli, enrolled_agent
from tests.services import missing, wait_for
from tests.site_agent.test_software import fake_gpu_build
from tests.test_dashboard import PAGE_TIMEOUT_MS, person, shots, sign_in
from tests.test_transfers_e2e import Network, transfers_section

pytestmark = pytest.mark.slow
CLASSES = 3
PARTICLES = 150
CLASS2D = {
    "i": "particles.star", "o": "output/run", "dont_combine_weights_via_disc": True, "ctf": True, "iter": 5,
    "tau2_fudge": 2, "particle_diameter": 70, "K": CLASSES, "flatten_solvent": True, "zero_mask": True, "oversampling": 1,
    "psi_step": 15, "offset_range": 4, "offset_step": 2, "norm": True, "scale": True, "j": 1, "pool": 30, "pad": 2,
}  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from cryomesh_cli.synthetic import write_relion_particles

    if shutil.which("relion_refine") is None or shutil.which("relion_project") is None:
        missing("relion (Debian's relion package)")
    tmp = tmp_path_factory.mktemp("relion")
    hub = HubProcess(tmp / "hub")
    hub.start()
    net = Network(hub, tmp)
    try:
        fake_gpu_build(tmp / "relion-5.0-cuda")
        extra = transfers_section(tmp, "osaka-relion") + f'\n[software]\nrelion_dirs = ["{tmp / "relion-5.0-cuda"}"]\n'
        agent = enrolled_agent(hub, tmp, "osaka-relion", extra=extra, institution="osaka-u", software=[])
        agent.env = {**hub.env}  # type: ignore[attr-defined]
        hub.api("POST", "/api/v1/sites/osaka-relion/activate")
        write_relion_particles(tmp / "particles", tmp / "truth", count=PARTICLES)
        ds = net.register(agent, tmp / "particles", title="relion particles")
        net.start(agent)
        rin = person(hub, "rin", role="researcher", institution="osaka-u")
        researcher = Account(rin["client_id"], rin["client_secret"], "researcher")
        yield {"hub": hub, "net": net, "agent": agent, "ds": ds, "researcher": researcher, "tmp": tmp}
    finally:
        for a in net.agents:
            a.stop()
        hub.stop()


def measured(hub: HubProcess) -> list[dict[str, Any]]:
    """The RELION builds the agent measured (it also reports the container runtimes it finds)."""
    software = hub.api("GET", "/api/v1/sites/osaka-relion")["software"]
    return [s for s in software if s["source"] == "measured" and s["name"] == "relion"]


@pytest.fixture(scope="module")
def class2d(world: dict[str, Any]) -> dict[str, Any]:
    """A real Class2D, submitted once the site's measured RELION is in the registry."""
    hub = world["hub"]
    wait_for(lambda: len(measured(hub)) == 3, 60, "the agent's measured RELION builds in the registry")
    job = hub.call("POST", "/api/v1/jobs", account=world["researcher"], json={
        "name": "class2d", "kind": "relion.class2d", "parameters": CLASS2D, "software": [{"name": "relion", "version": ">=3.1"}],
        "resources": {"cpus": 1, "memory_gb": 2, "walltime_s": 1800}, "inputs": [{"dataset": world["ds"]["id"]}],
        "outputs": {"title": "2D classes", "visibility": "network", "experiment_type": "spa"},
    })  # fmt: skip
    # A real relion_refine on a busy machine: generous, and it ends as soon as the job does.
    wait_for(lambda: hub.api("GET", f"/api/v1/jobs/{job['id']}")["state"] not in ("QUEUED", "INITIALIZING", "RUNNING"),
             600, "the Class2D to finish", interval=1)  # fmt: skip
    return dict(hub.api("GET", f"/api/v1/jobs/{job['id']}"))


def test_the_registry_lists_the_relion_the_agent_measured(world: dict[str, Any]) -> None:
    hub = world["hub"]
    wait_for(lambda: len(measured(hub)) == 3, 60, "the agent's measured RELION builds in the registry")
    rows = {(s["version"], s["cuda_arch"]): s for s in measured(hub)}
    assert set(rows) == {("3.1.3", None), ("5.0.0", "8.0"), ("5.0.0", "8.6")}
    debian = rows[("3.1.3", None)]
    assert debian["build"] == "cpu" and debian["path"] == str(Path(shutil.which("relion_refine") or "").parent)
    assert rows[("5.0.0", "8.6")]["build"] == "cuda" and rows[("5.0.0", "8.6")]["path"].endswith("relion-5.0-cuda/bin")
    # Sent when it changes, not with every heartbeat: later heartbeats leave it as it was.
    first = {s["measured_at"] for s in measured(hub)}
    beat = hub.api("GET", "/api/v1/sites/osaka-relion")["last_heartbeat_at"]
    wait_for(lambda: hub.api("GET", "/api/v1/sites/osaka-relion")["last_heartbeat_at"] != beat, 60, "another heartbeat")
    assert {s["measured_at"] for s in measured(hub)} == first and len(first) == 1
    shown = subprocess.run(cli("sites", "show", "osaka-relion", "--hub", hub.url, "--client-id", hub.admin.client_id,
                               "--client-secret", hub.admin.client_secret),
                           env={**hub.env, "COLUMNS": "200"}, capture_output=True, text=True, timeout=120)  # fmt: skip
    lines = [line for line in shown.stdout.splitlines() if "relion" in line and "3.1.3" in line]
    assert shown.returncode == 0 and lines and "measured" in lines[0] and "cpu" in lines[0], shown.stdout + shown.stderr


def test_a_real_class2d_runs_with_the_sites_relion_and_its_output_is_a_derived_dataset(
    world: dict[str, Any], class2d: dict[str, Any]
) -> None:
    hub = world["hub"]
    assert class2d["state"] == "COMPLETE" and class2d["site"] == "osaka-relion", class2d
    (out,) = hub.api("GET", "/api/v1/datasets", params={"source_job": class2d["id"]})["items"]
    assert out["source_datasets"] == [world["ds"]["id"]] and out["title"] == "2D classes"
    files = {f.name for f in Path(out["replicas"][0]["location"]).iterdir()}
    assert {f"run_it005_{x}" for x in ("classes.mrcs", "data.star", "model.star")} <= files, sorted(files)
    logs = hub.api("GET", f"/api/v1/jobs/{class2d['id']}/logs")
    assert "no GPU here" not in logs["stderr_tail"], "ran with the CPU build, not the fake GPU one"

    pictures = hub.call("GET", f"/api/v1/jobs/{class2d['id']}/pictures", account=world["researcher"])
    assert len(pictures) == CLASSES and all(p["site"] == "osaka-relion" for p in pictures)
    shares = [p["share"] for p in pictures]
    assert abs(sum(shares) - 1) < 0.01 and all(p["pixel_size_a"] == 2.0 for p in pictures), pictures
    assert shares == sorted(shares, reverse=True), "largest share first"
    particles = hub.call("GET", f"/api/v1/datasets/{world['ds']['id']}/pictures", account=world["researcher"])
    assert [p["name"] for p in particles] == [f"particle-{i:03d}" for i in range(1, 7)]
    assert all(p["pixel_size_a"] == 2.0 and p["width"] == 96 for p in particles), "pixel size from the optics table"

    shown = subprocess.run(cli("jobs", "show", class2d["id"], "--hub", hub.url, "--client-id", world["researcher"].client_id,
                               "--client-secret", world["researcher"].client_secret),
                           env=hub.env, capture_output=True, text=True, timeout=120)  # fmt: skip
    said = " ".join(shown.stdout.split())
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert f"pictures: {CLASSES} from osaka-relion" in said and f"{hub.url}/dashboard/#/job/{class2d['id']}" in said, said
    as_json = subprocess.run(cli("jobs", "show", class2d["id"], "--json", "--hub", hub.url, "--client-id",
                                 world["researcher"].client_id, "--client-secret", world["researcher"].client_secret),
                             env=hub.env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert [p["url"] for p in json.loads(as_json.stdout)["pictures"]] == [p["url"] for p in pictures]


def test_the_dashboard_shows_class_averages_and_particles(
    world: dict[str, Any], class2d: dict[str, Any], chromium: Any, tmp_path: Path
) -> None:
    hub, out = world["hub"], shots(tmp_path)
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    sign_in(page, hub, "rin")
    page.goto(f"{hub.url}/dashboard/#/job/{class2d['id']}")
    page.wait_for_selector("[data-testid=classes] [data-testid=thumb]")
    thumbs = page.locator("[data-testid=classes] [data-testid=thumb]")
    assert thumbs.count() == CLASSES
    # Rendered, not just present: each image decoded to its 96 px.
    widths = page.eval_on_selector_all("[data-testid=classes] img", "imgs => imgs.map((i) => i.complete && i.naturalWidth)")
    assert widths == [96] * CLASSES, widths
    captions = thumbs.all_inner_texts()
    assert all(re.search(r"\d+\.\d %", c) and "of the particles" in c for c in captions), captions
    page.screenshot(path=str(out / "dashboard-classes.png"), full_page=True)

    page.goto(f"{hub.url}/dashboard/#/dataset/{world['ds']['id']}")
    page.wait_for_selector("[data-testid=dataset-thumbs] [data-testid=thumb]")
    assert page.locator("[data-testid=dataset-thumbs] [data-testid=thumb]").count() == 6
    assert page.inner_text("[data-testid=pixel-size]") == "not given", "registered with a title only"
    assert page.inner_text("[data-testid=pixel-size-measured]") == "(in the images: 2 Å)", "read from the optics table"
    widths = page.eval_on_selector_all("[data-testid=dataset-thumbs] img", "imgs => imgs.map((i) => i.naturalWidth)")
    assert widths == [96] * 6, widths
    page.screenshot(path=str(out / "dashboard-dataset.png"), full_page=True)
