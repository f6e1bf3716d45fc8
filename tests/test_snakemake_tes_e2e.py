"""Snakemake on the network, end to end: a researcher runs a real Snakemake workflow with
``snakemake --executor tes --tes-url <hub>/ga4gh/tes`` and their bearer token; each rule
becomes a TES task that the broker places at a partner site, whose real agent process runs
it, and the workflow finishes with its outputs in the researcher's object store.

What is real, and what stands in for what cannot run here:
- Snakemake 9.27.1 with ``snakemake-executor-plugin-tes`` 0.1.3 (py-tes 0.4.2) and
  ``snakemake-storage-plugin-s3``, from their own locked environment ``.venv-snakemake``
  (``make install``, deploy/snakemake/requirements.txt); the plugin pins a py-tes older than
  the project's.
- The plugin expects a container: every task runs ``mkdir /tmp/conda && cd /tmp && ...
  python -m snakemake ...`` from a job script sent inline as ``/tmp/run_snakemake.sh``. There
  is no container runtime here, so the site runs its tasks with ``[tes] isolation =
  "unshare"`` (each executor in its own user and mount namespace, unprivileged, with its own
  /tmp) and plays the image ``snakemake/snakemake:v9.27.1`` with the same ``.venv-snakemake``
  (``[tes] image_env`` puts its bin first on PATH, and points the job script's ``pip`` at the
  environment's own wheels: nothing is downloaded while a task runs).
- Storage: the plugin declares no shared file system, so Snakemake 9 needs a default storage
  provider; inputs, outputs and the workflow's sources travel through S3, with moto's S3
  server on loopback standing in for the researcher's object store.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest

from tests import ga4gh_schemas
from tests.processes import AgentProcess, HubProcess, hub_process, online_agent, register_site
from tests.services import S3Server, s3_server

# Each task starts Python three times: on a machine as busy as the suite makes it, a run
# takes minutes (docs/benchmarks.md).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ENV = Path(__file__).resolve().parent.parent / ".venv-snakemake"
SNAKEMAKE = ENV / "bin" / "snakemake"
#: Snakemake's command line with the plugin's first status check after 1 s, not 40 s (its docstring says why).
SNAKEMAKE_CLI = Path(__file__).resolve().parent / "snakemake_cli.py"
IMAGE = "snakemake/snakemake:v9.27.1"
SITE = "snk-site"
BUCKET = "kek-workflows"

SNAKEFILE = """\
localrules: all

rule all:
    input: "results/summary.txt"

rule shout:
    input: "raw/greeting.txt"
    output: "work/shout.txt"
    shell: "tr a-z A-Z < {input} > {output}"

rule count:
    input: "raw/greeting.txt"
    output: "work/count.txt"
    script: "scripts/count.py"

rule summary:
    input: loud="work/shout.txt", words="work/count.txt"
    output: "results/summary.txt"
    shell: "cat {input.loud} {input.words} > {output}"
"""

# Deployed to the task with the workflow's sources (through the storage), not sent by TES.
COUNT_SCRIPT = """\
from pathlib import Path

words = Path(snakemake.input[0]).read_text().split()
Path(snakemake.output[0]).write_text(f"{len(words)} words\\n")
"""


@pytest.fixture
def snakemake_env() -> Path:
    if not SNAKEMAKE.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{SNAKEMAKE} is missing: `make install` builds it from deploy/snakemake/requirements.txt")
        pytest.skip("no .venv-snakemake: run `make install`")
    return ENV


@pytest.fixture
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        boto3.client("s3", endpoint_url=server.endpoint_url, **_keys(server)).create_bucket(Bucket=BUCKET)
        yield server


hub = hub_process  # the fixture: a hub process for each test


@pytest.fixture
def agent(hub: HubProcess, snakemake_env: Path, tmp_path: Path) -> Iterator[AgentProcess]:
    extra = (
        f'[tes]\nhost_images = ["snakemake/snakemake:v9.*"]\nisolation = "unshare"\n'
        f'[tes.image_env."snakemake/snakemake:v9.*"]\nPATH = "{snakemake_env}/bin:{os.environ["PATH"]}"\n'
        f'PIP_FIND_LINKS = "{snakemake_env}/wheels"\n'
    )
    a = online_agent(hub, tmp_path, SITE, extra=extra, software=[{"name": f"image:{IMAGE}", "version": "host"}])
    yield a
    a.stop()


def _keys(s3: S3Server) -> dict[str, str]:
    return {"aws_access_key_id": s3.access_key, "aws_secret_access_key": s3.secret_key, "region_name": s3.region}


def workflow(where: Path) -> Path:
    wf = where / "workflow"
    (wf / "scripts").mkdir(parents=True)
    (wf / "Snakefile").write_text(SNAKEFILE)
    (wf / "scripts" / "count.py").write_text(COUNT_SCRIPT)
    return wf


def snakemake(wf: Path, hub: HubProcess, s3: S3Server, credentials: dict[str, str], image: str = IMAGE) -> subprocess.Popen[str]:
    """The researcher's command line, started; credentials come from the environment, as the docs say:
    SNAKEMAKE_TES_TOKEN (bearer), or SNAKEMAKE_TES_USER and SNAKEMAKE_TES_PASSWORD (Basic)."""
    env = {
        **os.environ,
        "SNAKEMAKE_STORAGE_S3_ENDPOINT_URL": s3.endpoint_url,
        "SNAKEMAKE_STORAGE_S3_ACCESS_KEY": s3.access_key,
        "SNAKEMAKE_STORAGE_S3_SECRET_KEY": s3.secret_key,
        **credentials,
    }
    return subprocess.Popen(
        [str(ENV / "bin" / "python"), str(SNAKEMAKE_CLI),
         "--executor", "tes", "--tes-url", f"{hub.url}/ga4gh/tes", "--container-image", image,
         "--default-storage-provider", "s3", "--default-storage-prefix", f"s3://{BUCKET}/run",
         "--jobs", "3", "--seconds-between-status-checks", "1"],
        cwd=wf, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def finished(run: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        out, _ = run.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        run.kill()
        out, _ = run.communicate()
    return run.returncode, out


def tasks(hub: HubProcess, token: str) -> list[dict[str, object]]:
    r = httpx.get(f"{hub.url}/ga4gh/tes/v1/tasks", params={"view": "FULL"}, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    ga4gh_schemas.tes_list(r.json(), "FULL")
    return list(r.json()["tasks"])


def test_a_snakemake_workflow_runs_its_rules_as_tes_tasks_at_a_site(
    hub: HubProcess, agent: AgentProcess, s3: S3Server, tmp_path: Path
) -> None:
    store = boto3.client("s3", endpoint_url=s3.endpoint_url, **_keys(s3))
    store.put_object(Bucket=BUCKET, Key="run/raw/greeting.txt", Body=b"hello from the microscope\n")
    token = hub.token(hub.account("researcher", institution="kek"))

    code, out = finished(snakemake(workflow(tmp_path), hub, s3, {"SNAKEMAKE_TES_TOKEN": token}))

    if code != 0:  # say what the hub saw of each task (Snakemake's plugin hides a failed task's logs)
        seen = [{k: t.get(k) for k in ("name", "state", "logs")} for t in tasks(hub, token)]
        said = "\n".join(agent.messages()[-40:])
        raise AssertionError(f"snakemake exited {code}; the hub's tasks: {json.dumps(seen, indent=1)}\nthe agent: {said}\n{out}")
    summary = store.get_object(Bucket=BUCKET, Key="run/results/summary.txt")["Body"].read().decode()
    assert summary == "HELLO FROM THE MICROSCOPE\n4 words\n"
    ran = tasks(hub, token)
    # Each rule but the local `all` was one task (named by the plugin snakejob.<rule>.<id>.sh),
    # placed by the broker at the site and run there by its agent.
    assert sorted(str(t["name"]).split(".")[1] for t in ran) == ["count", "shout", "summary"], ran
    for t in ran:
        assert t["state"] == "COMPLETE", t
        (executor,) = t["executors"]  # type: ignore[misc]
        assert executor["image"] == IMAGE and executor["command"] == ["/bin/bash", "/tmp/run_snakemake.sh"]
        (script,) = t["inputs"]  # type: ignore[misc]  # the job script, inline; the files went through S3
        assert script["path"] == "/tmp/run_snakemake.sh" and "-m snakemake" in script["content"]
        log = t["logs"][-1]  # type: ignore[index]
        assert log["metadata"]["site"] == SITE
        assert [e["exit_code"] for e in log["logs"]] == [0]
        assert any(f"placed at {SITE}" in line for line in log["system_logs"]), log["system_logs"]


def test_snakemake_is_refused_an_image_no_site_runs_and_a_site_that_does_not_lend_to_the_researcher(
    hub: HubProcess, snakemake_env: Path, s3: S3Server, tmp_path: Path
) -> None:
    # The hub refuses before any site is asked, from what it knows of the sites: no agent here.
    register_site(hub, SITE, software=[{"name": f"image:{IMAGE}", "version": "host"}])
    hub.api("PUT", f"/api/v1/sites/{SITE}/policy", json={"allowed_institutions": ["kek"]})
    boto3.client("s3", endpoint_url=s3.endpoint_url, **_keys(s3)).put_object(
        Bucket=BUCKET, Key="run/raw/greeting.txt", Body=b"hello\n"
    )
    kek = hub.token(hub.account("researcher", institution="kek"))
    osaka_account = hub.account("researcher", institution="osaka")
    osaka = hub.token(osaka_account)

    # An image no site runs, and a researcher whose institution the only site running the
    # image does not lend to: the hub refuses the first task and Snakemake stops with its
    # answer.
    bearer = {"SNAKEMAKE_TES_TOKEN": kek}
    basic = {"SNAKEMAKE_TES_USER": osaka_account.client_id, "SNAKEMAKE_TES_PASSWORD": osaka_account.client_secret}
    runs = [  # the second as a service account over Basic, as the docs suggest for long workflows
        (kek, snakemake(workflow(tmp_path / "v8"), hub, s3, bearer, image="snakemake/snakemake:v8.0.0")),
        (osaka, snakemake(workflow(tmp_path / "osaka"), hub, s3, basic)),
    ]
    for token, run in runs:
        code, out = finished(run)
        assert code != 0 and "400 Client Error" in out, out
        assert tasks(hub, token) == []

    # The same task as the plugin sends it, to read the hub's answer: status and body.
    def send(token: str, image: str) -> httpx.Response:
        task = {
            "name": "snakejob.shout.1.sh",
            "inputs": [{"path": "/tmp/run_snakemake.sh", "content": "python -m snakemake ...\n"}],
            "executors": [{"image": image, "command": ["/bin/bash", "/tmp/run_snakemake.sh"], "workdir": "/tmp"}],
            "resources": {"cpu_cores": 1, "ram_gb": 1, "disk_gb": 1},
        }
        return httpx.post(f"{hub.url}/ga4gh/tes/v1/tasks", json=task, headers={"Authorization": f"Bearer {token}"})

    r = send(kek, "snakemake/snakemake:v8.0.0")
    assert r.status_code == 400 and r.json()["error"] == "BadRequest", r.text
    assert SITE in r.json()["detail"] and "image:snakemake/snakemake:v8.0.0" in r.json()["detail"], r.text
    r = send(osaka, IMAGE)
    assert r.status_code == 400 and r.json()["error"] == "BadRequest", r.text
    assert SITE in r.json()["detail"] and "osaka" in r.json()["detail"], r.text
