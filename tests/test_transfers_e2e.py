"""Transfers end to end: a hub process and two real agent processes moving real bytes,
through a filesystem exchange and through S3 (moto's server, over HTTP, presigned URLs)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.processes import AgentProcess, HubProcess, cli, enrolled_agent
from tests.services import S3Server, free_port, wait_for

pytestmark = pytest.mark.slow

MB = 10**6


def transfers_section(tmp: Path, name: str, **kw: Any) -> str:
    cfg = {
        "exchange": "fs",
        "path": str(tmp / "exchange"),
        "incoming": str(tmp / name / "datasets"),
        "poll_interval_s": 0.3,
        "progress_interval_s": 0.3,
        "part_size_mb": 0.5,
        "concurrency": 4,
        **kw,
    }
    lines = [f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}" for k, v in cfg.items()]
    return "[transfers]\n" + "\n".join(lines).replace("'", '"') + "\n"


def make_data(root: Path, sizes: dict[str, int]) -> Path:
    for rel, size in sizes.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(size))
    return root


def digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


class Network:
    def __init__(self, hub: HubProcess, tmp: Path) -> None:
        self.hub, self.tmp = hub, tmp
        self.agents: list[AgentProcess] = []
        self.researcher = hub.account("researcher", institution="osaka-u")

    def agent(
        self, name: str, institution: str, env: dict[str, str] | None = None, extra: str = "", **transfers: Any
    ) -> AgentProcess:
        extra = transfers_section(self.tmp, name, **transfers) + extra
        a = enrolled_agent(self.hub, self.tmp, name, extra=extra, institution=institution)
        a.env = {**self.hub.env, **(env or {})}  # type: ignore[attr-defined]
        self.hub.api("POST", f"/api/v1/sites/{name}/activate")
        return a

    def start(self, a: AgentProcess) -> None:
        a.start(a.env)  # type: ignore[attr-defined]
        self.agents.append(a)

    def register(self, a: AgentProcess, path: Path, visibility: str = "network", title: str = "apoferritin") -> dict[str, Any]:
        import json

        out = subprocess.run(
            cli("datasets", "register", "--config", str(a.config), "--path", str(path), "--title", title,
                "--visibility", visibility, "--json"),
            env=self.hub.env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
        return dict(json.loads(out.stdout))

    def share(self, ds_id: str, dest: str) -> dict[str, Any]:
        req = self.hub.call("POST", f"/api/v1/datasets/{ds_id}/share-requests", account=self.researcher,
                            json={"dest_site": dest, "purpose": "refinement"})  # fmt: skip
        self.hub.api("POST", f"/api/v1/share-requests/{req['id']}/approve", json={"reason": "ok"})
        (t,) = self.hub.api("GET", "/api/v1/transfers", params={"dataset": ds_id})
        return dict(t)

    def transfer(self, tid: str) -> dict[str, Any]:
        return dict(self.hub.api("GET", f"/api/v1/transfers/{tid}"))

    def wait(self, tid: str, cond: Any, what: str, timeout: float = 120) -> dict[str, Any]:
        seen: dict[str, Any] = {}

        def check() -> bool:
            seen.update(self.transfer(tid))
            assert seen["state"] not in ("SUSPENDED", "CANCELLED"), seen
            return bool(cond(seen))

        wait_for(check, timeout, f"transfer {tid}: {what} (last {seen.get('state')})", interval=0.2)
        return seen


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Network]:
    hub = HubProcess(tmp_path / "hub")
    hub.start()
    n = Network(hub, tmp_path)
    yield n
    for a in n.agents:
        a.stop()
    hub.stop()


def test_a_share_is_copied_and_verified_through_a_filesystem_exchange(net: Network, tmp_path: Path) -> None:
    src = net.agent("kek-krios", "kek")
    audit = "[audit]\nfirst_after_s = 0\ninterval_s = 0.5\nsample_fraction = 1.0\n"
    metrics_port = free_port()
    dst = net.agent("osaka-gpu", "osaka-u", extra=audit)
    dst.config.write_text(dst.config.read_text().replace("[agent]\n", f'[agent]\nmetrics_address = "127.0.0.1:{metrics_port}"\n'))
    data = make_data(tmp_path / "ds", {"movies/m1.mrc": 3 * MB + 11, "movies/m2.mrc": 2 * MB, "run.star": 120, "empty": 0})
    ds = net.register(src, data)
    net.start(src)
    net.start(dst)
    t = net.share(ds["id"], "osaka-gpu")
    done = net.wait(t["id"], lambda x: x["state"] == "DONE", "DONE")
    assert (done["fetched_bytes"], done["fetched_files"]) == (ds["total_bytes"], ds["file_count"])
    assert done["published_bytes"] == ds["total_bytes"] and done["file_errors"] == []
    copy = Path(next(r["location"] for r in net.hub.api("GET", f"/api/v1/datasets/{ds['id']}")["replicas"]
                     if r["site"] == "osaka-gpu"))  # fmt: skip
    assert copy == tmp_path / "osaka-gpu" / "datasets" / ds["id"]
    assert digests(copy) == digests(data)
    # The destination agent's own metrics: Prometheus text, with the bytes it moved.
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
    samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples["cryomesh_agent_transfer_bytes_total"] >= ds["total_bytes"]
    assert samples["cryomesh_agent_heartbeats_total"] >= 1 and samples["cryomesh_agent_last_heartbeat_timestamp_seconds"] > 0
    assert samples["cryomesh_agent_outbox_depth"] == 0 and samples["cryomesh_agent_jobs_running"] == 0
    reps = {r["site"]: r["state"] for r in net.hub.api("GET", f"/api/v1/datasets/{ds['id']}")["replicas"]}
    assert reps == {"kek-krios": "AVAILABLE", "osaka-gpu": "AVAILABLE"}
    # The source removes its published copy once the transfer is over.
    wait_for(lambda: not (tmp_path / "exchange" / t["id"]).exists(), 60, "the exchange copy to be removed")
    listed = net.hub.call("GET", "/api/v1/datasets", account=net.researcher, params={"site": "osaka-gpu"})
    assert [d["id"] for d in listed["items"]] == [ds["id"]]

    # The destination's periodic audit finds a byte changed on its storage: the replica is BAD.
    with (copy / "movies" / "m2.mrc").open("r+b") as fh:
        fh.seek(1234)
        fh.write(b"\x00" if fh.read(1) != b"\x00" else b"\x01")

    def replica() -> dict[str, Any]:
        return next(r for r in net.hub.api("GET", f"/api/v1/datasets/{ds['id']}")["replicas"] if r["site"] == "osaka-gpu")

    wait_for(lambda: replica()["state"] == "BAD", 60, "the audit to mark the copy BAD")
    assert "1 corrupt (e.g. movies/m2.mrc)" in replica()["state_reason"]

    # Revoking the request retires the copy: the destination's agent removes it, then the replica.
    net.hub.call("POST", f"/api/v1/share-requests/{t['share_request']}/revoke", account=net.researcher, json={})
    sites = lambda: {r["site"] for r in net.hub.api("GET", f"/api/v1/datasets/{ds['id']}")["replicas"]}  # noqa: E731
    wait_for(lambda: sites() == {"kek-krios"}, 60, "the retired copy to be removed")
    assert not copy.exists() and data.exists(), "the copy is gone, the owner's data untouched"


def test_s3_exchange_catches_a_flipped_byte_and_sends_the_file_again(net: Network, tmp_path: Path, s3: S3Server) -> None:
    bucket = s3.bucket("kek-exchange")
    src = net.agent("kek-krios", "kek", env=s3.env, exchange="s3", endpoint_url=s3.endpoint_url, bucket=bucket,
                    region=s3.region, part_size_mb=5, presign_ttl_s=600)  # fmt: skip
    # The destination has no AWS credentials at all: it reads through presigned URLs.
    dst = net.agent("osaka-gpu", "osaka-u", env={"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}, part_size_mb=2)
    data = make_data(tmp_path / "ds", {"stack.mrcs": 11 * MB, "mic.mrc": 700_000})
    ds = net.register(src, data)
    net.start(src)
    t = net.share(ds["id"], "osaka-gpu")
    net.wait(t["id"], lambda x: x["state"] == "FETCHING", "published")
    key = f"cryomesh-exchange/{t['id']}/stack.mrcs"
    body = bytearray(s3.client().get_object(Bucket=bucket, Key=key)["Body"].read())
    body[7_654_321] ^= 0x40
    s3.client().put_object(Bucket=bucket, Key=key, Body=bytes(body))
    net.start(dst)
    done = net.wait(t["id"], lambda x: x["state"] == "DONE", "DONE")
    assert done["resent_files"] == {"stack.mrcs": 1}, "the corrupt file was published again, once"
    assert any(e["path"] == "stack.mrcs" and "checksum" in e["error"] for e in done["file_errors"])
    copy = tmp_path / "osaka-gpu" / "datasets" / ds["id"]
    assert digests(copy) == digests(data), "only verified data became the replica"
    wait_for(lambda: "Contents" not in s3.client().list_objects_v2(Bucket=bucket), 60, "the bucket to be emptied")


def test_an_agent_killed_mid_transfer_resumes_where_it_stopped(net: Network, tmp_path: Path) -> None:
    part_mb, conc = 0.5, 2
    src = net.agent("kek-krios", "kek")
    dst = net.agent("osaka-gpu", "osaka-u", part_size_mb=part_mb, concurrency=conc, bandwidth_mb_s=4)
    data = make_data(tmp_path / "ds", {f"movie_{i}.mrc": 4 * MB for i in range(4)})
    ds = net.register(src, data)
    net.start(src)
    net.start(dst)
    t = net.share(ds["id"], "osaka-gpu")
    before = net.wait(t["id"], lambda x: x["fetched_bytes"] >= 5 * MB, "5 MB fetched")
    dst.kill()
    net.agents.remove(dst)
    net.start(dst)
    done = net.wait(t["id"], lambda x: x["state"] == "DONE", "DONE", timeout=120)
    resent = done["resent_bytes"]
    assert resent <= conc * part_mb * 2**20, f"re-sent {resent} bytes, more than concurrency x part size"
    assert digests(tmp_path / "osaka-gpu" / "datasets" / ds["id"]) == digests(data)
    assert done["attempt"] == 1, "the restart resumed the same attempt"
    (line,) = [m for m in dst.messages() if "verified, replica at" in m]
    moved = int(line.split("fetched ")[1].split(" bytes")[0])
    assert moved <= ds["total_bytes"] - before["fetched_bytes"] + conc * part_mb * 2**20, (
        f"the restarted agent fetched {moved} bytes; it should only fetch what was left"
    )
    print(f"killed after {before['fetched_bytes']} of {ds['total_bytes']} bytes; after the restart fetched {moved}, "
          f"of which re-sent {resent}")  # fmt: skip


def test_a_job_whose_input_is_elsewhere_runs_after_the_copy_on_verified_data(net: Network, tmp_path: Path) -> None:
    import sys

    import mrcfile
    import numpy as np

    from cryomesh_cli.synthetic import correlation, projection, write_particles

    src = net.agent("kek-krios", "kek")
    dst = net.agent("osaka-gpu", "osaka-u")
    n_images = write_particles(tmp_path / "particles", stacks=3, per_stack=40, size=48)
    ds = net.register(src, tmp_path / "particles")
    net.hub.api("PUT", "/api/v1/sites/kek-krios/share-policy", json={"auto_approve_institutions": ["osaka-u"]})
    net.start(src)
    net.start(dst)
    wait_for(lambda: all(net.hub.site(s)["reachability"] == "online" for s in ("kek-krios", "osaka-gpu")), 60, "sites online")
    job = net.hub.call("POST", "/api/v1/jobs", account=net.researcher, json={
        "name": "2d-average", "kind": "generic.command", "command": [sys.executable, "-m", "cryomesh_cli.synthetic", "average"],
        "resources": {"cpus": 1, "memory_gb": 2}, "inputs": [{"dataset": ds["id"]}],
        "placement": {"allowed_sites": ["osaka-gpu"]},
        "outputs": {"title": "2D average", "visibility": "network"},
    })  # fmt: skip
    assert job["state"] == "INITIALIZING" and "being copied" in job["state_reason"]

    def state() -> dict[str, Any]:
        return dict(net.hub.call("GET", f"/api/v1/jobs/{job['id']}", account=net.researcher))

    wait_for(lambda: state()["state"] == "COMPLETE", 120, "the job to complete")
    done = state()
    (t,) = net.hub.api("GET", "/api/v1/transfers", params={"dataset": ds["id"]})
    assert t["state"] == "DONE" and t["job"] == job["id"]
    assert done["site"] == "osaka-gpu" and "output registered as dataset" in done["state_reason"]
    logs = net.hub.call("GET", f"/api/v1/jobs/{job['id']}/logs", account=net.researcher)
    assert f'"images": {n_images}' in logs["stdout_tail"], "the job read every image of the copy"
    (out,) = net.hub.call("GET", "/api/v1/datasets", account=net.researcher, params={"source_job": job["id"]})["items"]
    assert out["source_datasets"] == [ds["id"]] and out["owner_site"] == "osaka-gpu" and out["title"] == "2D average"
    with mrcfile.open(Path(out["replicas"][0]["location"]) / "average_2d.mrc") as m:
        avg = np.asarray(m.data)
    clean = projection(48)
    with mrcfile.open(tmp_path / "particles" / "Particles" / "particles_000.mrcs") as m:
        single = np.asarray(m.data[0])
    assert correlation(avg, clean) > 0.9 > correlation(single, clean), "averaging brought the signal out of the noise"


def test_an_input_is_copied_from_the_faster_holder_the_broker_named(tmp_path: Path) -> None:
    """kek-krios owns two datasets and osaka-gpu holds complete copies of both; osaka-gpu's share
    policy lets public data leave it. kek-krios's link to tokyo-cpu carries a copy still under
    way (kek-krios's agent is stopped, so it stays queued). A job at tokyo-cpu on the public
    dataset is estimated and copied from osaka-gpu, and runs on that copy while the owner is
    down; one on the other dataset, which no policy lets leave osaka-gpu, is estimated and
    copied from the owner alone."""
    import sys

    # Each submission reads the transfers under way afresh (the default re-reads them every 5 s).
    hub = HubProcess(tmp_path / "hub", site_view_max_age_s=0)
    hub.start()
    net = Network(hub, tmp_path)
    try:
        kek, osaka, tokyo = net.agent("kek-krios", "kek"), net.agent("osaka-gpu", "osaka-u"), net.agent("tokyo-cpu", "tokyo-u")
        data = {v: make_data(tmp_path / v, {"movies/m1.mrc": 2 * MB + 7, "run.star": 300}) for v in ("public", "network")}
        ds = {v: net.register(kek, data[v], visibility=v, title=f"{v} apoferritin") for v in data}
        large = net.register(kek, make_data(tmp_path / "large", {"stack.mrcs": 6 * MB}), title="large")
        net.start(kek)
        net.start(osaka)
        for v in ds:
            net.wait(net.share(ds[v]["id"], "osaka-gpu")["id"], lambda x: x["state"] == "DONE", "copied to osaka-gpu")
        kek.stop()
        net.agents.remove(kek)
        busy = net.share(large["id"], "tokyo-cpu")
        assert (busy["source_site"], busy["state"]) == ("kek-krios", "QUEUED")
        hub.api("PUT", "/api/v1/sites/kek-krios/share-policy", json={"auto_approve_public": True,
                "auto_approve_institutions": ["osaka-u"]})  # fmt: skip
        hub.api("PUT", "/api/v1/sites/osaka-gpu/share-policy", json={"serve_public_copies": True})
        net.start(tokyo)
        wait_for(lambda: all(hub.site(s)["reachability"] == "online" for s in ("osaka-gpu", "tokyo-cpu")), 60, "sites online")

        def submit(v: str) -> dict[str, Any]:
            job = hub.call("POST", "/api/v1/jobs", account=net.researcher, json={
                "name": f"on-{v}", "kind": "generic.command", "command": [sys.executable, "-c", "print('read')"],
                "resources": {"cpus": 1, "memory_gb": 1}, "inputs": [{"dataset": ds[v]["id"]}],
                "placement": {"allowed_sites": ["tokyo-cpu"]},
            })  # fmt: skip
            assert job["state"] == "INITIALIZING", job
            why = hub.call("GET", f"/api/v1/jobs/{job['id']}/placement", account=net.researcher)
            (verdict,) = [x for x in why["latest"]["verdicts"] if x["site"] == "tokyo-cpu"]
            (t,) = [
                t for t in hub.api("GET", "/api/v1/transfers", params={"dataset": ds[v]["id"]}) if t["dest_site"] == "tokyo-cpu"
            ]
            return {"job": job, "reasons": " / ".join(verdict["reasons"]), "transfer": t}

        pub = submit("public")
        assert "copying 2.0 MB from osaka-gpu" in pub["reasons"], pub["reasons"]
        assert pub["transfer"]["source_site"] == "osaka-gpu" and pub["transfer"]["job"] == pub["job"]["id"]
        state = lambda: hub.call("GET", f"/api/v1/jobs/{pub['job']['id']}", account=net.researcher)["state"]  # noqa: E731
        wait_for(lambda: state() == "COMPLETE", 120, "the job on the public dataset to complete")
        assert net.transfer(pub["transfer"]["id"])["state"] == "DONE"
        assert digests(tmp_path / "tokyo-cpu" / "datasets" / ds["public"]["id"]) == digests(data["public"])
        assert net.transfer(busy["id"])["state"] == "QUEUED", "the owner's agent never ran: osaka-gpu sent every byte"

        other = submit("network")
        assert "copying 2.0 MB from kek-krios" in other["reasons"] and "osaka-gpu" not in other["reasons"], other["reasons"]
        assert (other["transfer"]["source_site"], other["transfer"]["state"]) == ("kek-krios", "QUEUED"), (
            "osaka-gpu is sooner but may not serve it"
        )
    finally:
        for a in net.agents:
            a.stop()
        hub.stop()
