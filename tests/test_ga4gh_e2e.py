"""GA4GH TES end to end with the real py-tes client: a real hub process, a real agent
process running tasks as local processes. Tasks are placed by the broker, their executors
run in order in one work dir, outputs land in the site's exported directory, cancel stops a
running task. Every response is validated against the official TES 1.1 OpenAPI."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import tes

from tests.processes import AgentProcess, HubProcess, cli, full_task, online_agent
from tests.services import wait_for

pytestmark = pytest.mark.slow

IMAGE = "python:3.11-slim"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubProcess]:
    with HubProcess(tmp_path / "hub") as h:
        yield h


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
    bundle = httpx.get(f"{hub.url}/ga4gh/drs/v1/objects/{ds_id}", headers={"Authorization": f"Bearer {token}"}).json()
    (item,) = bundle["contents"]
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
