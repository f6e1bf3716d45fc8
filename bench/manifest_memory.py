"""Hub memory and listing latency with one large manifest (issue 9, part 3).

Starts `cryomesh hub serve` as its own process on SQLite, registers 20 small datasets, then
a manifest of FILES files twice: first in pages (``/api/v1/datasets/uploads``: 5,000 files a
page), then in one body (``POST /api/v1/datasets``, the baseline). It prints the growth of the
hub's resident memory over its level before each (the paged one goes first: memory a process
has once taken is not given back, so the one-shot peak would hide the paged one), the peak
while the whole manifest is read back (streamed), and the median latency of a dataset
listing and a dataset page before and after the large ones exist.

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


class PeakRss:
    """The largest resident memory of ``process`` while the block runs, sampled every 20 ms."""

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self.before = self.peak = 0

    def __enter__(self) -> PeakRss:
        self.before = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.02)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.before


def register_in_pages(agent: httpx.Client, m: dict[str, object], location: str, page_files: int = 5000) -> str:
    files: list[dict[str, object]] = m["files"]  # type: ignore[assignment]
    total = sum(int(f["size"]) for f in files)  # type: ignore[call-overload]
    head = {"title": "large, in pages", "location": location, "algorithm": m["algorithm"], "file_count": len(files),
            "total_bytes": total}  # fmt: skip
    r = agent.post("/api/v1/datasets/uploads", content=json.dumps(head))
    assert r.status_code == 201, r.text[:300]
    up = r.json()["id"]
    for n, i in enumerate(range(0, len(files), page_files)):
        body = json.dumps({"page": n, "files": files[i : i + page_files]})
        r = agent.post(f"/api/v1/datasets/uploads/{up}/files", content=body)
        assert r.status_code == 200, r.text[:300]
    r = agent.post(f"/api/v1/datasets/uploads/{up}/complete", content=json.dumps({"digest": m["digest"]}))
    assert r.status_code == 201, r.text[:300]
    return str(r.json()["id"])


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

        paged_manifest = manifest(n, "paged")
        with PeakRss(process) as paged:
            t0 = time.perf_counter()
            paged_id = register_in_pages(agent, paged_manifest, "/data/paged")
            paged_s = time.perf_counter() - t0
        del paged_manifest
        with PeakRss(process) as streamed:
            t0 = time.perf_counter()
            r = admin.get(f"/api/v1/datasets/{paged_id}/manifest")
            read_s = time.perf_counter() - t0
        assert r.status_code == 200 and len(r.json()["files"]) == n

        body_bytes = json.dumps({"title": "large", "manifest": manifest(n, "big"), "location": "/data/big"}).encode()
        with PeakRss(process) as oneshot:
            t0 = time.perf_counter()
            r = agent.post("/api/v1/datasets", content=body_bytes)
            oneshot_s = time.perf_counter() - t0
        assert r.status_code == 201, r.text[:300]
        big_id = r.json()["id"]
        after = (median_ms(admin, "/api/v1/datasets"), median_ms(admin, f"/api/v1/datasets/{big_id}"))
        mib = 1024 * 1024
        print(f"manifest: {n} files; one-shot body {len(body_bytes) / mib:.1f} MiB; hub RSS idle {idle / mib:.0f} MiB")
        print(f"paged (5,000 files a page): {paged_s:.1f} s, hub RSS {paged.before / mib:.0f} -> peak "
              f"{paged.peak / mib:.0f} MiB (+{paged.growth / mib:.0f} MiB)")  # fmt: skip
        print(f"read back whole (streamed): {read_s:.1f} s, hub RSS {streamed.before / mib:.0f} -> peak "
              f"{streamed.peak / mib:.0f} MiB (+{streamed.growth / mib:.0f} MiB)")  # fmt: skip
        print(f"one-shot (baseline): {oneshot_s:.1f} s, hub RSS {oneshot.before / mib:.0f} -> peak "
              f"{oneshot.peak / mib:.0f} MiB (+{oneshot.growth / mib:.0f} MiB)")  # fmt: skip
        print(f"peak growth, paged / one-shot: {paged.growth / max(oneshot.growth, 1):.3f}")
        print(f"listing (limit 50): {before[0]:.1f} ms with 20 small datasets, {after[0]:.1f} ms with the 2 large ones too")
        print(f"dataset page: {before[1]:.1f} ms (small), {after[1]:.1f} ms (the large one)")
    finally:
        proc.stop()


if __name__ == "__main__":
    main()
