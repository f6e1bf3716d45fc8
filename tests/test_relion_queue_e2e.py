"""RELION's "Submit to queue" into the network, driven by RELION itself.

A RELION project at the home site; ``relion_pipeliner`` (RELION 3.1's own job runner, which
does what the GUI's Run! button does) writes ``run_submit.script`` from
``deploy/relion/cryomesh_submit.sh`` and runs ``cryomesh relion submit`` on it. A real hub
and two real agents (local executors); the job runs real ``relion_refine`` at the partner
site and its output comes back into the project. Particles are projections of a small
synthetic map made with ``relion_project``, so a Class2D takes seconds.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers import Account
from tests.processes import AgentProcess, HubProcess, enrolled_agent
from tests.services import missing, wait_for

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "deploy" / "relion" / "cryomesh_submit.sh"
SUBMIT = f"{Path(sys.executable).parent / 'cryomesh'} relion submit"
RELION = [{"name": "relion", "version": "3.1.3"}]


def make_project(root: Path, particles: int = 120, box: int = 32) -> Path:
    """A RELION project: particles.star naming Particles/particles.mrcs (relion_project
    projections of a two-blob map, with noise), and files the job does not read."""
    import mrcfile

    (root / "Particles").mkdir(parents=True)
    n = box
    z, y, x = np.mgrid[:n, :n, :n] - n / 2
    vol = np.exp(-((x - 4) ** 2 + y**2 + z**2) / 18) + 0.7 * np.exp(-((x + 5) ** 2 + (y - 3) ** 2 + (z + 2) ** 2) / 10)
    with mrcfile.new(root / "map.mrc") as m:
        m.set_data(vol.astype(np.float32))
        m.voxel_size = 3.0
    out = subprocess.run(
        ["relion_project", "--i", "map.mrc", "--o", "Particles/particles", "--nr_uniform", str(particles), "--angpix", "3",
         "--add_noise", "--white_noise", "0.5"],
        cwd=root, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    (root / "Particles" / "particles.star").rename(root / "particles.star")
    (root / "Movies").mkdir()
    (root / "Movies" / "session1.mrc").write_bytes(os.urandom(3 * 2**20))  # in the project, not read by the job
    (root / "default_pipeline.star").write_text("data_pipeline_general\n_rlnPipeLineJobCounter 1\n")
    return root


def queue_extras() -> dict[str, str]:
    """The extra fields of the shipped deploy/relion/relion-env.sh (RELION_QSUB_EXTRA*): RELION
    offers ``qsub_extraN`` options only for those it finds labelled in its environment."""
    extras = {}
    for line in (REPO / "deploy" / "relion" / "relion-env.sh").read_text().splitlines():
        if line.startswith("export RELION_QSUB_EXTRA"):
            [assignment] = shlex.split(line.removeprefix("export "), comments=True)
            name, _, value = assignment.partition("=")
            extras[name] = value
    return extras


def pipeliner(project: Path, env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["relion_pipeliner", *args], cwd=project, env=env, capture_output=True, text=True, timeout=timeout)


def add_class2d(project: Path, env: dict[str, str], fn_img: str = "particles.star", queue: str = "auto", **opts: Any) -> None:
    options = {"fn_img": fn_img, "nr_classes": 2, "nr_iter": 2, "do_queue": "Yes", "queuename": queue, "qsub": SUBMIT,
               "qsubscript": str(TEMPLATE), "nr_mpi": 1, "nr_threads": 2, "particle_diameter": 90,
               "do_ctf_correction": "No", "nr_pool": 3, **opts}  # fmt: skip
    text = ";".join(f"{k} == {v}" for k, v in options.items())
    out = pipeliner(project, env, "--addJob", "Class2D", "--addJobOptions", text)
    assert out.returncode == 0, out.stdout + out.stderr


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@contextmanager
def relion_network(
    tmp_path: Path, partners: dict[str, str], discovery: dict[str, str] | None = None, exchanges: int = 1
) -> Iterator[dict[str, Any]]:
    """A hub, the home site's agent and a partner agent per entry of ``partners`` (its name,
    and site.toml lines after ``[relion] exchanges``: more [relion] keys, then other
    sections), all online; a researcher at the home institution and the environment RELION
    runs ``cryomesh relion submit`` in. ``discovery``: a partner's [discovery] lines.
    ``exchanges``: how many exchange directories the partners read from (``exchanges``; the
    researcher's environment names the first)."""
    if shutil.which("relion_refine") is None or shutil.which("relion_pipeliner") is None:
        missing("RELION (relion_refine, relion_pipeliner)")
    hub = HubProcess(tmp_path / "hub")
    hub.start()
    dirs = [tmp_path / ("exchange" if i == 0 else f"exchange-{i}") for i in range(exchanges)]
    for d in dirs:
        d.mkdir()
    listed = ", ".join(f'"{d}"' for d in dirs)
    agents: list[AgentProcess] = []
    try:
        sites = [
            ("home", "kek", ""),
            *((n, f"{n}-u", f"\n[relion]\nexchanges = [{listed}]\n{extra}") for n, extra in partners.items()),
        ]
        for name, inst, toml in sites:
            found = (discovery or {}).get(name, 'backend = "local"')
            agent = enrolled_agent(hub, tmp_path, name, found, extra=toml, software=RELION, institution=inst)
            agent.start(hub.env)
            agents.append(agent)
            wait_for(lambda n=name: hub.site(n)["reachability"] == "online", 60, f"{name} to come online")
        me = hub.account("researcher", institution="kek")
        yield {"hub": hub, "me": me, "env": researcher_env(hub, me, dirs[0]), "exchange": dirs[0], "exchanges": dirs,
               "agents": agents}  # fmt: skip
    finally:
        for a in agents:
            a.stop()
        hub.stop()


def researcher_env(hub: HubProcess, me: Account, exchange: Path) -> dict[str, str]:
    """The environment RELION runs ``cryomesh relion submit`` in: ``me`` at ``hub``, ``exchange``."""
    return {**os.environ, "CRYOMESH_HUB_URL": hub.url, "CRYOMESH_CLIENT_ID": me.client_id,
            "CRYOMESH_CLIENT_SECRET": me.client_secret, "CRYOMESH_RELION_EXCHANGE": str(exchange),
            "CRYOMESH_RELION_POLL_S": "0.3", "COLUMNS": "200"}  # fmt: skip


#: The tests that use ``network``, each given its own exchange directory.
NETWORK_TESTS = 4


@pytest.fixture(scope="module")
def shared_network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One hub with the home site and a partner, for this module's tests that need nothing
    more (starting them is a hub and two agents' worth of CPU per test)."""
    with relion_network(tmp_path_factory.mktemp("relion"), {"partner": ""}, exchanges=NETWORK_TESTS) as n:
        n["unused"] = list(n["exchanges"])
        yield n


@pytest.fixture
def network(shared_network: dict[str, Any]) -> dict[str, Any]:
    """The shared network as this test's own: a researcher of its own (whose jobs are the
    only ones it lists as theirs) and an exchange directory no other test publishes to."""
    hub = shared_network["hub"]
    exchange = shared_network["unused"].pop(0)
    me = hub.account("researcher", institution="kek")
    return {**shared_network, "me": me, "env": researcher_env(hub, me, exchange), "exchange": exchange}


def job_of(project: Path, jobdir: str) -> str:
    import json

    return str(json.loads((project / jobdir / ".cryomesh-relion.json").read_text())["job_id"])


@pytest.mark.timeout(600)
def test_class2d_from_relion_runs_at_a_partner_and_comes_home(network: dict[str, Any], tmp_path: Path) -> None:
    hub, env = network["hub"], network["env"]
    project = make_project(tmp_path / "project")
    project_bytes = du(project)
    add_class2d(project, env, queue="partner")
    out = pipeliner(project, env, "--RunJobs", "Class2D/job001/")
    assert out.returncode == 0, out.stdout + out.stderr
    job1 = project / "Class2D" / "job001"
    assert (job1 / "RELION_JOB_EXIT_SUCCESS").exists(), (job1 / "run.err").read_text() if (job1 / "run.err").exists() else ""
    for name in ("run_it002_classes.mrcs", "run_it002_data.star", "run_it002_model.star", "run.out"):
        assert (job1 / name).is_file(), f"{name} came home"
    job = hub.call("GET", f"/api/v1/jobs/{job_of(project, 'Class2D/job001')}", network["me"])
    assert job["state"] == "COMPLETE" and job["site"] == "partner" and job["kind"] == "relion.class2d"
    logs = hub.call("GET", f"/api/v1/jobs/{job['id']}/logs", network["me"])["stdout_tail"]
    stack = (project / "Particles" / "particles.mrcs").stat().st_size
    star = (project / "particles.star").stat().st_size
    assert f"staged 2 project files: {stack + star} bytes fetched, 0 bytes already here" in logs, logs
    pipeline = (project / "default_pipeline.star").read_text()
    assert "Class2D/job001/run_it002_data.star" in pipeline, "RELION's pipeline knows the job's outputs"
    print(f"\nproject {project_bytes} bytes; inputs sent {stack + star} bytes ({(stack + star) / project_bytes:.1%})")

    # RELION continues from the output: the next job reads the first one's particles. The
    # stack is already at the partner (same checksum): only the new STAR file moves.
    add_class2d(project, env, fn_img="Class2D/job001/run_it002_data.star", queue="partner", nr_iter=1)
    out = pipeliner(project, env, "--RunJobs", "Class2D/job002/")
    assert out.returncode == 0, out.stdout + out.stderr
    assert (project / "Class2D" / "job002" / "RELION_JOB_EXIT_SUCCESS").exists()
    assert (project / "Class2D" / "job002" / "run_it001_classes.mrcs").is_file()
    logs = hub.call("GET", f"/api/v1/jobs/{job_of(project, 'Class2D/job002')}/logs", network["me"])["stdout_tail"]
    data = (project / "Class2D" / "job001" / "run_it002_data.star").stat().st_size
    assert f"{data} bytes fetched, {stack} bytes already here" in logs, logs
    print(f"second job: {data} bytes fetched, {stack} bytes reused from the partner's cache")


@pytest.mark.timeout(600)
def test_outside_files_are_refused_and_a_failing_command_fails(network: dict[str, Any], tmp_path: Path) -> None:
    hub, env, me = network["hub"], network["env"], network["me"]
    project = make_project(tmp_path / "project")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(project / "Particles" / "particles.mrcs", elsewhere / "particles.mrcs")
    star = (project / "particles.star").read_text()
    (project / "outside.star").write_text(star.replace("@Particles/particles.mrcs", f"@{elsewhere}/particles.mrcs"))
    add_class2d(project, env, fn_img="outside.star")
    out = pipeliner(project, env, "--RunJobs", "Class2D/job001/")
    assert out.returncode == 0, out.stdout + out.stderr
    job1 = project / "Class2D" / "job001"
    assert (job1 / "RELION_JOB_EXIT_FAILURE").exists()
    err = (job1 / "run.err").read_text()
    assert f"outside.star (_rlnImageName) names {elsewhere}/particles.mrcs, which is outside the project" in err
    # The module's network is shared: the hub may list other tests' jobs, none of them this researcher's.
    mine = [j for j in hub.call("GET", "/api/v1/jobs", me)["items"] if j["owner"] == me.client_id]
    assert mine == [], "nothing was sent to the network"
    assert not (network["exchange"] / "relion").exists(), "nothing was published"

    # A STAR file naming images the stack does not have: relion_refine itself fails at the partner.
    (project / "broken.star").write_text(star.replace("000001@Particles", "009999@Particles"))
    add_class2d(project, env, fn_img="broken.star", queue="partner")
    out = pipeliner(project, env, "--RunJobs", "Class2D/job002/")
    assert out.returncode == 0, out.stdout + out.stderr
    job2 = project / "Class2D" / "job002"
    assert (job2 / "RELION_JOB_EXIT_FAILURE").exists() and not (job2 / "RELION_JOB_EXIT_SUCCESS").exists()
    remote = hub.call("GET", f"/api/v1/jobs/{job_of(project, 'Class2D/job002')}", me)
    assert remote["state"] == "EXECUTOR_ERROR" and remote["site"] == "partner"
    err = (job2 / "run.err").read_text()
    assert "ERROR" in err and "009999@Particles/particles.mrcs" in err, err
    pipeline = (project / "default_pipeline.star").read_text()
    assert re.search(r"Class2D/job002/\s+None\s+8\s+3\s", pipeline), f"RELION marks the job failed: {pipeline}"


@pytest.mark.timeout(600)
def test_relion_abort_now_cancels_the_job_in_the_network(network: dict[str, Any], tmp_path: Path) -> None:
    hub, env, me = network["hub"], network["env"], network["me"]
    project = make_project(tmp_path / "project")
    add_class2d(project, env, queue="partner", nr_iter=500)  # runs until aborted, however fast the machine
    runner = subprocess.Popen(["relion_pipeliner", "--RunJobs", "Class2D/job001/"], cwd=project, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        job1 = project / "Class2D" / "job001"
        wait_for(lambda: (job1 / ".cryomesh-relion.json").exists(), 120, "the job to be sent")
        job_id = job_of(project, "Class2D/job001")
        wait_for(lambda: hub.call("GET", f"/api/v1/jobs/{job_id}", me)["state"] == "RUNNING", 120, "the job to run")
        (job1 / "RELION_JOB_ABORT_NOW").touch()  # what RELION's Abort button does
        runner.wait(300)
    finally:
        runner.kill()
        runner.wait()
    assert (job1 / "RELION_JOB_EXIT_ABORTED").exists()
    assert hub.call("GET", f"/api/v1/jobs/{job_id}", me)["state"] == "CANCELED"
    pipeline = (project / "default_pipeline.star").read_text()
    assert re.search(r"Class2D/job001/\s+None\s+8\s+4\s", pipeline), f"RELION marks the job aborted: {pipeline}"


@pytest.mark.timeout(600)
def test_results_come_home_after_the_submit_command_is_killed(network: dict[str, Any], tmp_path: Path) -> None:
    import json

    import psutil

    hub, env, me = network["hub"], network["env"], network["me"]
    project = make_project(tmp_path / "project")
    release = project / "Class2D" / "job001"
    add_class2d(project, env, queue="partner", nr_iter=3)
    runner = subprocess.Popen(["relion_pipeliner", "--RunJobs", "Class2D/job001/"], cwd=project, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for(lambda: (release / ".cryomesh-relion.json").exists(), 120, "the job to be sent")
        job_id = job_of(project, "Class2D/job001")
        # The submit command RELION started (in the background, so not the pipeliner's child):
        # found by its arguments and its working directory, this test's project.
        submit = [
            p for p in psutil.process_iter(["cmdline", "cwd"])
            if p.info["cwd"] == str(project) and "submit" in (p.info["cmdline"] or []) and "relion" in (p.info["cmdline"] or [])
        ]  # fmt: skip
        assert len(submit) == 1, submit
        submit[0].kill()
        submit[0].wait(30)
        done = wait_for(lambda: hub.call("GET", f"/api/v1/jobs/{job_id}", me)["state"] == "COMPLETE", 300, "the job to end")
        assert done is None or done
        assert not (release / "RELION_JOB_EXIT_SUCCESS").exists(), "nobody brought the output home yet"
        sync = subprocess.run([*SUBMIT.split()[:1], "relion", "sync", "Class2D/job001"], cwd=project, env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert sync.returncode == 0, sync.stdout + sync.stderr
        runner.wait(120)  # RELION's pipeliner sees the exit file and ends
    finally:
        runner.kill()
        runner.wait()
    assert (release / "RELION_JOB_EXIT_SUCCESS").exists()
    assert (release / "run_it003_classes.mrcs").is_file() and (release / "run_it003_model.star").is_file()
    state = json.loads((release / ".cryomesh-relion.json").read_text())
    sizes = sum((release / p).stat().st_size for p in state["fetched"])
    assert state["fetched_bytes"] == sizes, "every output file was fetched exactly once"
    again = subprocess.run([*SUBMIT.split()[:1], "relion", "sync", "Class2D/job001"], cwd=project, env=env,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert again.returncode == 0 and "already ended (RELION_JOB_EXIT_SUCCESS)" in again.stdout


@pytest.mark.timeout(600)
def test_generic_commands_run_only_where_the_site_policy_allows_them(tmp_path: Path) -> None:
    """A template that also checksums the classification's output with ``sha256sum``, a
    program that is not RELION's: a site on the default policy refuses the job saying so; a
    site whose policy lists the program runs it. The same job carries the template's
    max_cost and deadline fields to the hub."""
    import hashlib
    from datetime import UTC, datetime, timedelta

    template = tmp_path / "with_checksum.sh"
    template.write_text(TEMPLATE.read_text() + "sha256sum XXXnameXXXrun_it001_data.star\n")
    listed = '[policy]\ngeneric_commands = "listed"\ngeneric_programs = ["sha256sum"]\n'
    with relion_network(tmp_path, {"strict": "", "open": listed}) as network:
        hub, me = network["hub"], network["me"]
        env = {**network["env"], **queue_extras()}
        project = make_project(tmp_path / "project")

        add_class2d(project, env, queue="strict", nr_iter=1, qsubscript=template)
        runner = subprocess.Popen(["relion_pipeliner", "--RunJobs", "Class2D/job001/"], cwd=project, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        job1 = project / "Class2D" / "job001"
        try:
            wait_for(lambda: (job1 / ".cryomesh-relion.json").exists(), 120, "the job to be sent")
            refused = ("refused by strict: sha256sum is not a RELION program, and this site's policy runs only RELION "
                       'programs ([policy] generic_commands = "none")')  # fmt: skip
            first = job_of(project, "Class2D/job001")
            wait_for(lambda: hub.call("GET", f"/api/v1/jobs/{first}", me)["state_reason"] == refused, 120, "the refusal")
            assert hub.call("GET", f"/api/v1/jobs/{first}", me)["state"] == "QUEUED", "nothing ran at strict"
            (job1 / "RELION_JOB_ABORT_NOW").touch()  # the researcher gives up on that queue
            said, _ = runner.communicate(timeout=300)
        finally:
            runner.kill()
            runner.wait()
        assert (job1 / "RELION_JOB_EXIT_ABORTED").exists()
        assert refused.removeprefix("refused by strict: ") in " ".join(said.split()), "the submit command said why"
        assert not (job1 / "run_it001_data.star").exists()

        sent_at = datetime.now(UTC)
        add_class2d(project, env, queue="open", nr_iter=1, qsubscript=template, qsub_extra5="250", qsub_extra6="+48")
        out = pipeliner(project, env, "--RunJobs", "Class2D/job002/")
        assert out.returncode == 0, out.stdout + out.stderr
        job2 = project / "Class2D" / "job002"
        assert (job2 / "RELION_JOB_EXIT_SUCCESS").exists(), (job2 / "run.err").read_text()
        digest = hashlib.sha256((job2 / "run_it001_data.star").read_bytes()).hexdigest()
        assert f"{digest}  Class2D/job002/run_it001_data.star" in (job2 / "run.out").read_text(), "sha256sum ran at open"
        second = hub.call("GET", f"/api/v1/jobs/{job_of(project, 'Class2D/job002')}", me)
        assert second["state"] == "COMPLETE" and second["site"] == "open"
        assert second["spec"]["max_cost"] == 250
        deadline = datetime.fromisoformat(second["spec"]["deadline"])
        assert sent_at + timedelta(hours=47.9) < deadline < datetime.now(UTC) + timedelta(hours=48.1)


def test_a_bad_max_cost_or_deadline_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    """No hub listens and the exchange stays empty: the value is refused first, in run.err
    and with RELION_JOB_EXIT_FAILURE, as RELION expects of a failed submission."""
    project = tmp_path / "project"
    jobdir = project / "Class2D" / "job001"
    jobdir.mkdir(parents=True)
    (project / "particles.star").write_text("data_particles\n")
    exchange = tmp_path / "exchange"
    exchange.mkdir()
    script = TEMPLATE.read_text()
    values = {"XXXqueueXXX": "auto", "XXXmpinodesXXX": "1", "XXXthreadsXXX": "2", "XXXnameXXX": "Class2D/job001/",
              "XXXextra5XXX": "twenty", "XXXcommandXXX": "relion_refine --i particles.star --o Class2D/job001/run"}  # fmt: skip
    for key, value in values.items():
        script = script.replace(key, value)
    (jobdir / "run_submit.script").write_text(script)
    env = {**os.environ, "CRYOMESH_HUB_URL": "http://127.0.0.1:9", "CRYOMESH_CLIENT_ID": "x", "CRYOMESH_CLIENT_SECRET": "y",
           "CRYOMESH_RELION_EXCHANGE": str(exchange), "COLUMNS": "200"}  # fmt: skip
    out = subprocess.run([*SUBMIT.split(), "Class2D/job001/run_submit.script"], cwd=project, env=env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 1
    said = " ".join(out.stdout.split())
    assert "refused: Class2D/job001/run_submit.script: #cryomesh max_cost: 'twenty' is not an amount" in said, said
    assert "#cryomesh max_cost: 'twenty' is not an amount" in (jobdir / "run.err").read_text()
    assert (jobdir / "RELION_JOB_EXIT_FAILURE").exists()
    assert list(exchange.iterdir()) == [], "nothing was published"
    assert not (jobdir / ".cryomesh-relion.json").exists(), "nothing was submitted"
