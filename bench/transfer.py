"""Transfer benchmarks: throughput against boto3's own transfer functions, checksum speed,
and the bytes re-sent when a transfer is stopped and resumed.

The S3 store is moto's standalone server in its own process (so it does not share the
benchmark's interpreter lock), on loopback. Both sides move the same files through it:

- baseline: ``upload_file`` then ``download_file`` per file, boto3's defaults (its
  multipart threshold, 10 threads per file, its default CRC32 checksums);
- cryomesh: the agent engine's publish (multipart, parts journaled) then fetch through
  presigned URLs, with every fetched file's CRC64NVME checked against the manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from awscrt import checksums

from cryomesh_cli.devslurm import free_port, wait_for
from site_agent.config import TransfersSection
from site_agent.datasets import scan
from site_agent.transfers.engine import Cancelled, Progress, fetch, publish
from site_agent.transfers.exchange import MIB, S3Publisher, UrlReader
from site_agent.transfers.journal import Journal

FILES = 8
FILE_MB = 32
SMALL_FILES = 64
SMALL_KB = 256
PART_MB = 32
CONCURRENCY = 8


class S3Process:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"})

        def up() -> bool:
            import httpx

            try:
                return httpx.get(self.url, timeout=1).status_code < 500
            except httpx.TransportError:
                return False

        wait_for(up, 30, "moto's S3 server")

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.url)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _files(root: Path) -> int:
    """A dataset shaped like a real one: movies, and many small files (metadata, thumbnails)."""
    root.mkdir(parents=True)
    block = os.urandom(MIB)
    for i in range(FILES):
        with (root / f"movie_{i:03d}.mrc").open("wb") as fh:
            for k in range(FILE_MB):
                fh.write(block[k:] + block[:k])  # distinct content per MiB, cheap to make
    (root / "thumbnails").mkdir()
    for i in range(SMALL_FILES):
        (root / "thumbnails" / f"movie_{i:03d}.jpg").write_bytes(os.urandom(SMALL_KB * 1024))
    return FILES * FILE_MB * MIB + SMALL_FILES * SMALL_KB * 1024


def checksum_speed() -> dict[str, float]:
    data = os.urandom(256 * MIB)
    out = {}
    t = time.perf_counter()
    checksums.crc64nvme(data)
    out["crc64nvme_gb_s"] = len(data) / (time.perf_counter() - t) / 1e9
    t = time.perf_counter()
    hashlib.sha256(data).digest()
    out["sha256_gb_s"] = len(data) / (time.perf_counter() - t) / 1e9
    t = time.perf_counter()
    hashlib.md5(data).digest()  # noqa: S324 (a speed reference, not security)
    out["md5_gb_s"] = len(data) / (time.perf_counter() - t) / 1e9
    return out


REPEATS = 3


def throughput(s3: S3Process, tmp: Path) -> dict[str, float]:
    """Each side {REPEATS} times, interleaved, into emptied buckets; the medians."""
    src = tmp / "src"
    total = _files(src)
    runs = [_once(s3, tmp, src, i) for i in range(REPEATS)]
    out = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    out["bytes"] = total
    out["ratio"] = (out["base_up_s"] + out["base_down_s"]) / (out["ours_up_s"] + out["ours_down_s"])
    return out


def _empty(client: Any, bucket: str) -> None:
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


def _once(s3: S3Process, tmp: Path, src: Path, run: int) -> dict[str, float]:
    tmp = tmp / f"run{run}"
    tmp.mkdir()
    manifest = scan(src)
    client = s3.client()
    for b in ("bench-baseline", "bench-cryomesh", "bench-ceiling"):
        if run == 0:
            client.create_bucket(Bucket=b)
        else:
            _empty(client, b)

    t = time.perf_counter()
    for f in manifest.files:
        client.upload_file(str(src / f.path), "bench-baseline", f.path)
    up_base = time.perf_counter() - t
    t = time.perf_counter()
    (tmp / "base").mkdir()
    for f in manifest.files:
        (tmp / "base" / f.path).parent.mkdir(parents=True, exist_ok=True)
        client.download_file("bench-baseline", f.path, str(tmp / "base" / f.path))
    down_base = time.perf_counter() - t

    # The store's own ceiling: the same objects PUT and GET from memory, 8 at once, no files,
    # no journal, no checks: as fast as any client could go against this server.
    from concurrent.futures import ThreadPoolExecutor

    blobs = {f.path: (src / f.path).read_bytes() for f in manifest.files}
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        t = time.perf_counter()
        list(pool.map(lambda kv: client.put_object(Bucket="bench-ceiling", Key=kv[0], Body=kv[1]), blobs.items()))
        up_ceiling = time.perf_counter() - t
        t = time.perf_counter()
        list(pool.map(lambda k: client.get_object(Bucket="bench-ceiling", Key=k)["Body"].read(), blobs))
        down_ceiling = time.perf_counter() - t
    del blobs

    cfg = TransfersSection(exchange="s3", endpoint_url=s3.url, bucket="bench-cryomesh", concurrency=CONCURRENCY)
    pub = S3Publisher(cfg, "tr-bench", PART_MB * MIB)
    never = threading.Event()
    t = time.perf_counter()
    out = publish(src, manifest.files, pub, Journal(tmp / "p.jsonl"), Progress(), CONCURRENCY, never)
    up_ours = time.perf_counter() - t
    assert out.ok, out.errors
    access = pub.access([f.path for f in manifest.files])
    reader = UrlReader(access.urls, CONCURRENCY)
    t = time.perf_counter()
    got = fetch(reader, manifest.files, tmp / "ours", manifest.algorithm, Journal(tmp / "f.jsonl"), Progress(), PART_MB * MIB,
                CONCURRENCY, never)  # fmt: skip
    down_ours = time.perf_counter() - t
    reader.close()
    assert got.ok and len(got.done) == len(manifest.files), got
    shutil.rmtree(tmp)
    return {
        "base_up_s": up_base,
        "base_down_s": down_base,
        "ours_up_s": up_ours,
        "ours_down_s": down_ours,
        "ceiling_up_s": up_ceiling,
        "ceiling_down_s": down_ceiling,
    }


class _StopAfter:
    def __init__(self, inner: Any, n: int, cancel: threading.Event) -> None:
        self.inner, self.n, self.cancel, self.lock = inner, n, cancel, threading.Lock()
        self.part_size = inner.part_size

    def put_part(self, *a: Any) -> str:
        """Parts still in flight when the n-th finishes are lost, as they would be in a kill."""
        if self.cancel.is_set():
            raise Cancelled
        r = self.inner.put_part(*a)
        with self.lock:
            if self.cancel.is_set():
                raise Cancelled
            self.n -= 1
            if self.n <= 0:
                self.cancel.set()
        return str(r)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def resume(s3: S3Process, tmp: Path) -> dict[str, float]:
    """Stop a publish after 40 % of its parts, as a kill would, and resume it."""
    src = tmp / "src"
    manifest = scan(src)
    s3.client().create_bucket(Bucket="bench-resume")
    part = 5 * MIB
    cfg = TransfersSection(exchange="s3", endpoint_url=s3.url, bucket="bench-resume", concurrency=CONCURRENCY)
    parts = sum(-(-f.size // part) for f in manifest.files)
    stop = threading.Event()
    journal_path = tmp / "resume.jsonl"
    with contextlib.suppress(Cancelled):
        publish(src, manifest.files, _StopAfter(S3Publisher(cfg, "tr-r", part), int(parts * 0.4), stop),  # type: ignore[arg-type]
                Journal(journal_path), Progress(), CONCURRENCY, stop)  # fmt: skip
    journal = Journal(journal_path)
    sizes = {f.path: f.size for f in manifest.files}
    before = sum(min(part, sizes[p] - k * part) for p, r in journal.files.items() for k in r.parts)
    prog = Progress()
    out = publish(src, manifest.files, S3Publisher(cfg, "tr-r", part), journal, prog, CONCURRENCY, threading.Event())
    assert out.ok, out.errors
    return {
        "total": manifest.total_bytes,
        "done_before_stop": before,
        "moved_after": prog.moved,
        "resent": journal.resent_bytes,
        "bound": CONCURRENCY * part,
    }


def run() -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="cryomesh-bench-transfer-"))
    s3 = S3Process()
    try:
        return {"checksum": checksum_speed(), "throughput": throughput(s3, tmp), "resume": resume(s3, tmp)}
    finally:
        s3.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def section(r: dict[str, Any]) -> str:
    c, t, z = r["checksum"], r["throughput"], r["resume"]
    mb = t["bytes"] / 1e6
    base = t["base_up_s"] + t["base_down_s"]

    def row(label: str, side: str) -> str:
        up, down = t[f"{side}_up_s"], t[f"{side}_down_s"]
        return f"| {label} | {up:.2f} | {down:.2f} | {2 * mb / (up + down):.0f} | {base / (up + down):.2f}x |"

    rows = "\n".join(
        (
            row("boto3 `upload_file` + `download_file` (baseline)", "base"),
            row("cryomesh publish + fetch with verification", "ours"),
            row(f"the store's ceiling: PUT/GET from memory, {CONCURRENCY} at once, no files or checks", "ceiling"),
        )
    )
    return f"""
## Transfers

{FILES} movies of {FILE_MB} MiB and {SMALL_FILES} thumbnails of {SMALL_KB} KiB ({mb:.0f} MB) through moto's S3 server
(its own process, loopback), up then down. cryomesh: {PART_MB} MiB parts, {CONCURRENCY} at once across files, every
fetched file's CRC64NVME checked against the manifest. Baseline: boto3 `upload_file`/`download_file` per file with
default settings on the same store and files. Each side runs {REPEATS} times, interleaved, into emptied buckets; the
table shows medians. Target: at least 1.5x.

| side | up s | down s | total MB/s | vs baseline |
|---|---|---|---|---|
{rows}

Reading: both sides are bound by the store. moto is one Python process, and this machine's
2 cores are shared by the server and the client, so the ratio moves from run to run (1.29x to
1.57x over the last three runs on this machine); cryomesh runs at about the store's own
ceiling, boto3's per-file loop well below it. moto's CompleteMultipartUpload copies the parts
(about 0.2 s per 64 MB), which is one reason files that fit in one part go up as one PUT; AWS
S3 does not copy on completion, and there the concurrency across files and parts counts for more.

Checksums over 256 MiB in memory, one core: CRC64NVME (awscrt) {c["crc64nvme_gb_s"]:.2f} GB/s,
SHA-256 {c["sha256_gb_s"]:.2f} GB/s, MD5 (reference) {c["md5_gb_s"]:.2f} GB/s.

Resume: a publish of {z["total"] / 1e6:.0f} MB in 5 MiB parts, {CONCURRENCY} at once, stopped once 40 % of its parts had
finished, with the parts still in flight lost as in a kill, then started again from its journal:
{z["done_before_stop"] / 1e6:.0f} MB were recorded before the stop; the second run moved {z["moved_after"] / 1e6:.0f} MB,
of which {z["resent"] / 1e6:.1f} MB were parts sent again (bound: concurrency x part size = {z["bound"] / 1e6:.0f} MB).
"""


if __name__ == "__main__":
    print(section(run()))
