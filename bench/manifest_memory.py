"""Hub memory and listing latency with one large manifest (issue 9, part 3).

Starts `cryomesh hub serve` as its own process on SQLite, registers 20 small datasets and
one with FILES files, and prints the hub's resident memory (idle, peak while registering,
after) and the median latency of a dataset listing and a dataset page before and after the
large one exists.

    .venv/bin/python -m bench.manifest_memory [FILES]     # default 340000 (~57 MB of JSON)
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

from shared.schemas.datasets import ManifestFile, manifest_digest
from tests.helpers import Hub, hub_settings, site_body
from tests.processes import HubProcess


def manifest(n: int, prefix: str) -> dict[str, object]:
    files = [{"path": f"{prefix}/Movies/FoilHole_{i:08d}_Data_fractions.tiff", "size": 10**9 + i,
              "checksum": "rosiV2YdTQA="} for i in range(n)]  # fmt: skip
    digest = manifest_digest("crc64nvme", [ManifestFile.model_construct(**f) for f in files])  # type: ignore[arg-type]
    return {"algorithm": "crc64nvme", "files": files, "digest": digest}


def median_ms(client: httpx.Client, path: str, n: int = 15) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        assert client.get(path).status_code == 200
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 340_000
    tmp = Path(tempfile.mkdtemp(prefix="cryomesh-bench-"))
    proc = HubProcess(tmp, max_manifest_body_bytes=256 * 1024 * 1024)
    proc.start()
    try:
        hub = Hub(proc.url, hub_settings(f"sqlite:///{tmp / 'hub.db'}", tmp / "data", proc.port), proc.admin)
        with hub.as_admin() as c:
            assert c.post("/api/v1/sites", json=site_body("alpha")).status_code == 201
        token = hub.agent_token(hub.enroll_agent("alpha", tmp / "agent"))
        agent = httpx.Client(base_url=proc.url, headers={"Authorization": f"Bearer {token}",
                                                         "Content-Type": "application/json"}, timeout=600)  # fmt: skip
        for i in range(20):
            body = {"title": f"small {i}", "manifest": manifest(100, f"s{i}"), "location": f"/data/s{i}"}
            assert agent.post("/api/v1/datasets", content=json.dumps(body)).status_code == 201
        admin = hub.as_admin()
        admin.timeout = httpx.Timeout(600)
        small_id = admin.get("/api/v1/datasets").json()["items"][0]["id"]
        before = (median_ms(admin, "/api/v1/datasets"), median_ms(admin, f"/api/v1/datasets/{small_id}"))

        process = psutil.Process(proc.proc.pid)  # type: ignore[union-attr]
        idle = process.memory_info().rss
        peak = idle
        stop = threading.Event()

        def watch() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, process.memory_info().rss)
                time.sleep(0.02)

        body_bytes = json.dumps({"title": "large", "manifest": manifest(n, "big"), "location": "/data/big"}).encode()
        watcher = threading.Thread(target=watch)
        watcher.start()
        t0 = time.perf_counter()
        r = agent.post("/api/v1/datasets", content=body_bytes)
        took = time.perf_counter() - t0
        stop.set()
        watcher.join()
        assert r.status_code == 201, r.text[:300]
        big_id = r.json()["id"]
        after_rss = process.memory_info().rss
        after = (median_ms(admin, "/api/v1/datasets"), median_ms(admin, f"/api/v1/datasets/{big_id}"))
        mib = 1024 * 1024
        print(f"manifest: {n} files, body {len(body_bytes) / mib:.1f} MiB, registered in {took:.1f} s")
        print(f"hub RSS: idle {idle / mib:.0f} MiB, peak while registering {peak / mib:.0f} MiB, after {after_rss / mib:.0f} MiB")
        print(f"listing (21 datasets, limit 50): {before[0]:.1f} ms before the large one, {after[0]:.1f} ms after")
        print(f"dataset page: {before[1]:.1f} ms (small), {after[1]:.1f} ms (the large one)")
    finally:
        proc.stop()


if __name__ == "__main__":
    main()
