"""GA4GH TES end to end with the real py-tes client: a real hub process, a real agent
process running tasks as local processes. Tasks are placed by the broker, their executors
run in order in one work dir, outputs land in the site's exported directory, cancel stops a
running task. Every response is validated against the official TES 1.1 OpenAPI."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import tes

from tests import ga4gh_schemas
from tests.processes import AgentProcess, HubProcess, cli, full_task, hub_process, online_agent
from tests.services import wait_for

pytestmark = pytest.mark.slow

IMAGE = "python:3.11-slim"


hub = hub_process  # the fixture: a hub process for each test


@pytest.fixture
def agent(hub: HubProcess, tmp_path: Path) -> Iterator[AgentProcess]:
    exports = tmp_path / "exports"
    (exports / "results").mkdir(parents=True)
    extra = f'[tes]\nhost_images = ["{IMAGE}"]\nexported_dirs = ["{exports}"]\n'
    a = online_agent(hub, tmp_path, "tes-site", extra=extra, software=[{"name": f"image:{IMAGE}", "version": "host"}])
    yield a
    a.stop()


def test_py_tes_runs_lists_and_cancels_tasks_on_a_real_agent(hub: HubProcess, agent: AgentProcess, tmp_path: Path) -> None:
    exports = tmp_path / "exports"
    (exports / "src.txt").write_text("from the site\n")
    researcher = hub.account("researcher", institution="kek")
    token = hub.token(researcher)
    client = tes.HTTPClient(url=hub.url, token=token)
    assert client.get_service_info().type["artifact"] == "tes"

    task = tes.Task(
        name="two-steps",
        tags={"project": "e2e"},
        inputs=[
            tes.Input(path="/data/in.txt", content="hello\n"),
            tes.Input(path="/data/src.txt", url=f"file://{exports}/src.txt"),
        ],
        outputs=[
            tes.Output(path="/out/both.txt", url=f"file://{exports}/results/both.txt"),
            tes.Output(path="/out/count.txt", url=f"file://{exports}/results/count.txt"),
        ],
        executors=[
            tes.Executor(image=IMAGE, command=["sh", "-c", "cat /data/in.txt /data/src.txt > /out/both.txt; echo made"]),
            tes.Executor(image=IMAGE, command=["wc", "-c"], stdin="/out/both.txt", stdout="/out/count.txt"),
            tes.Executor(image=IMAGE, command=["sh", "-c", "echo oops >&2; exit 3"], ignore_error=True),
        ],
        resources=tes.Resources(cpu_cores=1, ram_gb=1),
    )
    task_id = client.create_task(task)
    failing = client.create_task(
        tes.Task(
            name="fails",
            executors=[
                tes.Executor(image=IMAGE, command=["sh", "-c", "exit 5"]),
                tes.Executor(image=IMAGE, command=["sh", "-c", "echo never"]),
            ],
        )
    )
    assert client.wait(task_id, timeout=180).state == "COMPLETE"
    assert client.wait(failing, timeout=180).state == "EXECUTOR_ERROR"

    assert (exports / "results" / "both.txt").read_text() == "hello\nfrom the site\n"
    assert (exports / "results" / "count.txt").read_text().strip() == "20"
    done = client.get_task(task_id, view="FULL")  # py-tes parses the FULL view
    assert done.name == "two-steps" and done.tags == {"project": "e2e"}
    raw = full_task(hub, token, task_id)
    log = raw["logs"][-1]  # type: ignore[index]
    assert [e["exit_code"] for e in log["logs"]] == [0, 0, 3]
    assert log["logs"][0]["stdout"] == "made\n" and log["logs"][2]["stderr"] == "oops\n"
    assert {(o["path"], o["size_bytes"]) for o in log["outputs"]} == {("/out/both.txt", "20"), ("/out/count.txt", "3")}
    assert log["metadata"]["site"] == "tes-site" and log["start_time"] and log["end_time"]
    assert any("placed at tes-site" in line for line in log["system_logs"]), log["system_logs"]
    failed = full_task(hub, token, failing)["logs"][-1]  # type: ignore[index]
    assert [e["exit_code"] for e in failed["logs"]] == [5]  # the second executor never ran

    listed = client.list_tasks(view="MINIMAL")
    assert {t.id for t in listed.tasks} == {task_id, failing}

    # drs:// inputs: a file of a dataset registered at the site, and the whole dataset.
    data = tmp_path / "dataset"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "a.txt").write_text("particles\n")
    out = subprocess.run(
        cli("datasets", "register", "--config", str(agent.config), "--path", str(data), "--title", "t", "--json"),
        env=hub.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    ds_id = json.loads(out.stdout)["id"]
    bundle = httpx.get(
        f"{hub.url}/ga4gh/drs/v1/objects/{ds_id}", params={"expand": True}, headers={"Authorization": f"Bearer {token}"}
    ).json()
    ((item,),) = (sub["contents"] for sub in bundle["contents"])
    with_drs = client.create_task(
        tes.Task(
            name="drs",
            inputs=[
                tes.Input(path="/in/a.txt", url=item["drs_uri"][0]),
                tes.Input(path="/in/all", url=bundle["self_uri"], type="DIRECTORY"),
            ],
            outputs=[tes.Output(path="/out/x.txt", url=f"file://{exports}/results/x.txt")],
            executors=[tes.Executor(image=IMAGE, command=["sh", "-c", "cat /in/a.txt /in/all/sub/a.txt > /out/x.txt"])],
        )
    )
    assert client.wait(with_drs, timeout=180).state == "COMPLETE"
    assert (exports / "results" / "x.txt").read_text() == "particles\nparticles\n"

    sleeper = client.create_task(tes.Task(name="sleeper", executors=[tes.Executor(image=IMAGE, command=["sleep", "300"])]))
    wait_for(lambda: client.get_task(sleeper, view="MINIMAL").state == "RUNNING", 120, "the sleeper to run")
    client.cancel_task(sleeper)
    # py-tes's wait() returns at CANCELING; the task ends CANCELED once the site has stopped it.
    wait_for(lambda: client.get_task(sleeper, view="MINIMAL").state == "CANCELED", 120, "the sleeper to be canceled")

    # Another institution's researcher: the task is not even confirmed to exist.
    outsider = tes.HTTPClient(url=hub.url, token=hub.token(hub.account("researcher", institution="osaka")))
    with pytest.raises(Exception, match="404"):
        outsider.get_task(task_id)
    with pytest.raises(Exception, match="404"):
        outsider.cancel_task(task_id)


def test_outputs_registered_as_datasets_resolve_over_drs(hub: HubProcess, agent: AgentProcess) -> None:
    """Outputs to drs://<hub>/new/<name> become one dataset at the site the task ran at, the
    task owner's and institution's; the task's logs name its files, which resolve over DRS
    with the SHA-256 of the bytes the task wrote. Bad names are refused naming the field."""
    host = hub.url.split("://", 1)[1]
    researcher = hub.account("researcher", institution="embl")  # the site is kek's
    token = hub.token(researcher)
    auth = {"Authorization": f"Bearer {token}"}
    client = tes.HTTPClient(url=hub.url, token=token)
    new = f"drs://{host}/new/refined-map"
    writes = "echo one > /out/half/a.txt && echo two > /out/half/b/c.txt"

    for url, field in ((f"drs://{host}/new/../x", "outputs[0].url"), ("drs://elsewhere.org/new/x", "outputs[0].url")):
        bad = {"executors": [{"image": IMAGE, "command": ["true"]}], "outputs": [{"path": "/out/x", "url": url}]}
        r = httpx.post(f"{hub.url}/ga4gh/tes/v1/tasks", json=bad, headers=auth)
        assert r.status_code == 400 and r.json()["error"] == "BadRequest" and field in r.json()["detail"], r.text

    task_id = client.create_task(
        tes.Task(
            name="refine",
            outputs=[
                tes.Output(path="/out/map.mrc", url=new),
                tes.Output(path="/out/half", url=new, type="DIRECTORY"),
            ],
            executors=[
                tes.Executor(
                    image=IMAGE,
                    command=["sh", "-c", f"mkdir -p /out/half/b && printf density > /out/map.mrc && {writes}"],
                )
            ],
        )
    )
    assert client.wait(task_id, timeout=180).state == "COMPLETE"
    log = full_task(hub, token, task_id)["logs"][-1]  # type: ignore[index]
    urls = {o["path"]: o["url"] for o in log["outputs"]}
    assert set(urls) == {"/out/map.mrc", "/out/half/a.txt", "/out/half/b/c.txt"}, log["outputs"]
    (line,) = [s for s in log["system_logs"] if s.startswith("output dataset refined-map: ")]
    ds_uri = line.rsplit(" ", 1)[1]
    ds_id = ds_uri.removeprefix(f"drs://{host}/")
    assert all(u.startswith(f"drs://{host}/{ds_id}_") for u in urls.values()), urls

    ds = httpx.get(f"{hub.url}/api/v1/datasets/{ds_id}", headers=auth).json()
    assert (ds["title"], ds["institution"], ds["owner"], ds["owner_site"], ds["source_job"]) == (
        "refined-map", "embl", researcher.client_id, "tes-site", task_id,
    )  # fmt: skip
    manifest = httpx.get(f"{hub.url}/api/v1/datasets/{ds_id}/manifest", headers=auth).json()
    checksums = {f["path"]: f["checksum"] for f in manifest["files"]}
    assert checksums == {
        "map.mrc": hashlib.sha256(b"density").hexdigest(),
        "a.txt": hashlib.sha256(b"one\n").hexdigest(),
        "b/c.txt": hashlib.sha256(b"two\n").hexdigest(),
    }

    # embl runs no site, so the copy at the task's site (kek's file system) is listed, as DRS
    # wants one method for a blob, but not available to this caller, and its access says why.
    blob_id = urls["/out/map.mrc"].rsplit("/", 1)[1]
    blob = httpx.get(f"{hub.url}/ga4gh/drs/v1/objects/{blob_id}", headers=auth).json()
    ga4gh_schemas.drs("DrsObject", blob)
    assert blob["name"] == "map.mrc" and blob["size"] == len(b"density")
    assert blob["checksums"] == [{"type": "sha-256", "checksum": hashlib.sha256(b"density").hexdigest()}]
    assert blob["access_methods"] == [{"type": "file", "access_id": "file.tes-site", "region": "tes-site", "available": False}]
    r = httpx.get(f"{hub.url}/ga4gh/drs/v1/objects/{blob_id}/access/file.tes-site", headers=auth)
    assert r.status_code == 403 and r.json()["error"] == "Forbidden", r.text
    assert "another institution's site" in r.json()["detail"] and "share" in r.json()["detail"], r.text
    bundle = httpx.get(f"{hub.url}/ga4gh/drs/v1/objects/{ds_id}", params={"expand": True}, headers=auth).json()
    ga4gh_schemas.drs("DrsObject", bundle)
    assert bundle["self_uri"] == ds_uri
    assert [(i["name"], "contents" in i) for i in bundle["contents"]] == [("a.txt", False), ("b", True), ("map.mrc", False)]
    # Private to the task owner's institution: the site's own institution does not see it.
    kek = hub.token(hub.account("researcher", institution="kek"))
    r = httpx.get(f"{hub.url}/ga4gh/drs/v1/objects/{ds_id}", headers={"Authorization": f"Bearer {kek}"})
    assert r.status_code == 404 and r.json()["error"] == "NotFound", r.text
