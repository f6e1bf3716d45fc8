"""TES tasks with s3:// inputs and outputs, end to end: the py-tes client, a real hub
process, a real agent process and a real S3 protocol endpoint (moto's server over HTTP).
The agent reaches S3 with its [transfers] settings and the AWS credentials in its
environment; the site lists the buckets it reaches. A task's input object is fetched before
its executor runs and its output goes up as an object with the right bytes; a bucket no site
reaches is refused at submission naming the URL; a missing object fails the task as a
system error whose logs say which object. Responses are validated against TES 1.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import tes

from tests.processes import AgentProcess, HubProcess, full_task, hub_process, online_agent
from tests.services import S3Server

pytestmark = pytest.mark.slow

IMAGE = "python:3.11-slim"
BUCKET = "tes-e2e-data"


hub = hub_process  # the fixture: a hub process for each test


@pytest.fixture
def agent(hub: HubProcess, tmp_path: Path, s3: S3Server) -> Iterator[AgentProcess]:
    s3.bucket(BUCKET)
    extra = (
        f'[tes]\nhost_images = ["{IMAGE}"]\ns3_buckets = ["{BUCKET}"]\n'
        f'[transfers]\nendpoint_url = "{s3.endpoint_url}"\nregion = "{s3.region}"\npart_size_mb = 5\n'
    )
    software = [{"name": f"image:{IMAGE}", "version": "host"}, {"name": f"s3:{BUCKET}", "version": "reachable"}]
    a = online_agent(hub, tmp_path, "s3-site", {**hub.env, **s3.env}, extra=extra, software=software)
    yield a
    a.stop()


def test_s3_input_and_output_through_a_real_agent(hub: HubProcess, agent: AgentProcess, s3: S3Server) -> None:
    objects = s3.client()
    objects.put_object(Bucket=BUCKET, Key="raw/movie-list.txt", Body=b"movie_001.tif\nmovie_002.tif\n")
    token = hub.token(hub.account("researcher", institution="kek"))
    client = tes.HTTPClient(url=hub.url, token=token)
    task_id = client.create_task(
        tes.Task(
            name="s3-roundtrip",
            inputs=[tes.Input(path="/data/movies.txt", url=f"s3://{BUCKET}/raw/movie-list.txt")],
            outputs=[tes.Output(path="/out/count.txt", url=f"s3://{BUCKET}/results/count.txt")],
            executors=[tes.Executor(image=IMAGE, command=["wc", "-l"], stdin="/data/movies.txt", stdout="/out/count.txt")],
        )
    )
    assert client.wait(task_id, timeout=180).state == "COMPLETE", full_task(hub, token, task_id)
    assert objects.get_object(Bucket=BUCKET, Key="results/count.txt")["Body"].read().strip() == b"2"
    log = full_task(hub, token, task_id)["logs"][-1]  # type: ignore[index]
    assert log["outputs"] == [{"url": f"s3://{BUCKET}/results/count.txt", "path": "/out/count.txt", "size_bytes": "2"}]
    lines = "\n".join(log["system_logs"])
    assert f"s3: fetched s3://{BUCKET}/raw/movie-list.txt (28 bytes, size and" in lines, lines
    assert f"s3: wrote s3://{BUCKET}/results/count.txt (2 bytes, size and" in lines, lines

    # A bucket no site reaches: refused at submission, the URL named.
    body = {
        "name": "elsewhere",
        "inputs": [{"path": "/data/x", "url": "s3://someone-elses-bucket/x"}],
        "executors": [{"image": IMAGE, "command": ["true"]}],
    }
    r = httpx.post(f"{hub.url}/ga4gh/tes/v1/tasks", json=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "BadRequest" and "s3://someone-elses-bucket/x" in r.json()["detail"], r.text

    # A missing object in a bucket the site reaches: the task ends as a system error (after
    # the retries every staging failure gets), its logs naming the object; nothing ran.
    missing = client.create_task(
        tes.Task(
            name="missing",
            inputs=[tes.Input(path="/data/x", url=f"s3://{BUCKET}/raw/not-there.txt")],
            executors=[tes.Executor(image=IMAGE, command=["sh", "-c", "echo ran"])],
        )
    )
    assert client.wait(missing, timeout=240).state == "SYSTEM_ERROR"
    last = full_task(hub, token, missing)["logs"][-1]  # type: ignore[index]
    assert last["logs"] == []  # no executor ran
    assert any(f"no object s3://{BUCKET}/raw/not-there.txt" in line for line in last["system_logs"]), last
