"""TES s3:// staging: what fetching and uploading with verification costs, against boto3's
own transfer functions moving the same objects with the same part size and concurrency.

The S3 store is moto's standalone server in its own process, on loopback (bench/transfer.py).
- baseline: ``download_file`` / ``upload_file`` per object, nothing checked;
- cryomesh: the TES runner's ``S3Staging.fetch`` / ``put`` (site_agent/tes_s3.py): HeadObject
  before a fetch and after an upload, and the size and a checksum (CRC32 stored with one-part
  objects, the MD5 of parts of its own multipart uploads) recomputed from the local file.

``python -m bench.tes_s3 [--objects 4] [--mb 32] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench.transfer import S3Process
from shared.schemas.tes import TesFileType
from site_agent.tes_s3 import S3Staging
from site_agent.transfers.exchange import MIB

PART_MB = 8
CONCURRENCY = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--objects", type=int, default=4)
    parser.add_argument("--mb", type=int, default=32, help="size of each object (MiB)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    server = S3Process()
    tmp = Path(tempfile.mkdtemp(prefix="bench-tes-s3-"))
    try:
        client = server.client()
        client.create_bucket(Bucket="bench-tes")
        staging = S3Staging(
            {"endpoint_url": server.url, "region": "us-east-1", "part_size_mb": PART_MB, "concurrency": CONCURRENCY}
        )
        files = []
        for i in range(args.objects):
            f = tmp / f"movie_{i}.mrc"
            f.write_bytes(os.urandom(args.mb * MIB))
            files.append(f)
        total = args.objects * args.mb * MIB
        times: dict[str, list[float]] = {"baseline upload": [], "cryomesh upload": [], "baseline fetch": [], "cryomesh fetch": []}
        for r in range(args.rounds):
            t = time.perf_counter()
            for f in files:
                client.upload_file(str(f), "bench-tes", f"base/{r}/{f.name}", Config=staging.config)
            times["baseline upload"].append(time.perf_counter() - t)
            t = time.perf_counter()
            for f in files:
                staging.put(f, f"s3://bench-tes/ours/{r}/{f.name}")
            times["cryomesh upload"].append(time.perf_counter() - t)
            t = time.perf_counter()
            for f in files:
                client.download_file("bench-tes", f"ours/{r}/{f.name}", str(tmp / "base.out"), Config=staging.config)
            times["baseline fetch"].append(time.perf_counter() - t)
            t = time.perf_counter()
            for f in files:
                staging.fetch(f"s3://bench-tes/ours/{r}/{f.name}", tmp / "ours.out", TesFileType.FILE)
            times["cryomesh fetch"].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{args.objects} objects x {args.mb} MiB, part {PART_MB} MiB, {CONCURRENCY} threads, median of {args.rounds}")
        for kind in ("upload", "fetch"):
            base, ours = med[f"baseline {kind}"], med[f"cryomesh {kind}"]
            print(
                f"{kind:6s}  baseline {total / base / 1e6:7.1f} MB/s   cryomesh {total / ours / 1e6:7.1f} MB/s   "
                f"time ratio {ours / base:.2f}"
            )
        print("checks made:", sorted({line.split(", ", 1)[1].rstrip(")") for line in staging.log}))
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
