"""GA4GH TES tasks in a real container runtime: a real hub process, a real agent process
whose site runs its allowed image in rootful podman (a private configuration and store,
``tests.podman``), the py-tes client. The image is a busybox root file system made here and
named by the site's ``[tes] image_files``: nothing comes from a registry.

One test on purpose (each podman run costs about a second here): the agent reports podman
and the image patterns it allows, the broker places the task by them, the executors run one
container each with the task's paths mounted where it names them (workdir, env, stdin,
stdout, no network), an image no site runs is refused with each site's verdict, and cancel
removes the running container.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import tes

from tests import ga4gh_schemas
from tests.podman import busybox_rootfs, containers, podman_env, require_podman
from tests.processes import AgentProcess, HubProcess, enrolled_agent, hub_process, register_site
from tests.services import wait_for

pytestmark = pytest.mark.slow

IMAGE = "cryomesh-test/busybox:1"
SITE = "box-site"
IN_IMAGE = "cat in.txt > /out/a.txt; echo $GREETING; pwd; test -e /usr || echo no-usr"


hub = hub_process  # the fixture: a hub process for each test


@pytest.fixture
def podman(tmp_path: Path) -> Iterator[dict[str, str]]:
    require_podman()
    env = podman_env(tmp_path)
    yield env
    left = containers(env)  # a failed test must not leave containers running
    if left:
        subprocess.run(["podman", "rm", "--force", "--time", "0", *left], env={**os.environ, **env}, check=False)


@pytest.fixture
def agent(hub: HubProcess, podman: dict[str, str], tmp_path: Path) -> Iterator[AgentProcess]:
    exports = tmp_path / "exports"
    exports.mkdir()
    rootfs = busybox_rootfs(tmp_path)
    extra = (
        f'[tes]\nruntime = "podman"\ncontainer_images = ["cryomesh-test/busybox:*"]\n'
        f'image_files = {{"{IMAGE}" = "{rootfs}"}}\nexported_dirs = ["{exports}"]\n'
    )
    a = enrolled_agent(hub, tmp_path, SITE, extra=extra)  # declares no image: the agent reports what it runs
    a.start({**hub.env, **podman})
    wait_for(lambda: hub.site(SITE)["reachability"] == "online", 60, f"{SITE} to come online")
    yield a
    a.stop()


def test_a_task_runs_in_podman_an_unknown_image_is_refused_and_cancel_removes_the_container(
    hub: HubProcess, agent: AgentProcess, podman: dict[str, str], tmp_path: Path
) -> None:
    register_site(hub, "host-site", software=[{"name": "image:python:3.11-slim", "version": "host"}])
    podman_version = subprocess.run(["podman", "--version"], capture_output=True, text=True, check=True).stdout.split()[-1]

    def reported() -> dict[str, str]:
        return {s["name"]: s["version"] for s in hub.site(SITE)["software"] if s["source"] == "measured"}

    wait_for(lambda: "podman" in reported(), 60, f"{SITE} to report its container runtime")
    assert reported()["podman"] == podman_version and reported()["image:cryomesh-test/busybox:*"] == "podman"
    overview = hub.api("GET", "/api/v1/dashboard/overview", params={"q": SITE})  # what the dashboard shows
    assert [s["runtimes"] for s in overview["sites"]] == [[f"podman {podman_version}"]], overview

    token = hub.token(hub.account("researcher", institution="kek"))
    client = tes.HTTPClient(url=hub.url, token=token)
    exports = tmp_path / "exports"
    task_id = client.create_task(
        tes.Task(
            name="in-podman",
            inputs=[tes.Input(path="/data/in.txt", content="hello\n")],
            outputs=[
                tes.Output(path="/out/a.txt", url=f"file://{exports}/a.txt"),
                tes.Output(path="/out/count.txt", url=f"file://{exports}/count.txt"),
            ],
            executors=[
                # In the image, not on the host: the host has /usr, the busybox root has not.
                tes.Executor(image=IMAGE, workdir="/data", env={"GREETING": "hi"}, command=["sh", "-c", IN_IMAGE]),
                tes.Executor(image=IMAGE, command=["wc", "-c"], stdin="/out/a.txt", stdout="/out/count.txt"),
                tes.Executor(image=IMAGE, command=["ls", "/sys/class/net"]),  # no network: the loopback only
            ],
        )
    )
    assert client.wait(task_id, timeout=180).state == "COMPLETE", agent.log.read_text()[-3000:]
    assert (exports / "a.txt").read_text() == "hello\n"
    assert (exports / "count.txt").read_text().strip() == "6"
    auth = {"Authorization": f"Bearer {token}"}
    r = httpx.get(f"{hub.url}/ga4gh/tes/v1/tasks/{task_id}", params={"view": "FULL"}, headers=auth)
    ga4gh_schemas.tes_task(r.json(), "FULL")
    log = r.json()["logs"][-1]
    assert log["metadata"]["site"] == SITE
    assert [e["exit_code"] for e in log["logs"]] == [0, 0, 0]
    assert log["logs"][0]["stdout"] == "hi\n/data\nno-usr\n" and log["logs"][2]["stdout"] == "lo\n"

    # An image no site runs: refused at once, each site's verdict said.
    r = httpx.post(
        f"{hub.url}/ga4gh/tes/v1/tasks", headers=auth, json={"executors": [{"image": "ubuntu:24.04", "command": ["true"]}]}
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "BadRequest", r.text
    detail = r.json()["detail"]
    assert f"{SITE}: does not offer image:ubuntu:24.04 (container runtime podman {podman_version};" in detail, detail
    assert "host-site: does not offer image:ubuntu:24.04 (no container runtime;" in detail, detail

    # Cancel: the container, which the job's signal does not reach, is removed.
    sleeper = client.create_task(tes.Task(name="sleeper", executors=[tes.Executor(image=IMAGE, command=["sleep", "300"])]))
    wait_for(lambda: any(n.startswith("cryomesh-") for n in containers(podman)), 120, "the sleeper's container to run")
    client.cancel_task(sleeper)
    wait_for(lambda: client.get_task(sleeper, view="MINIMAL").state == "CANCELED", 120, "the sleeper to be canceled")
    wait_for(lambda: containers(podman) == [], 60, "the sleeper's container to be removed")
