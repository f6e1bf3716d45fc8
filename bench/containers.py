"""What running a TES executor in podman costs against running it on the host, in the same run.

The task runner (``site_agent.tes_run.Runner``) runs a task of N executors, each a shell
that copies an input and writes a line, three ways: on the host (the baseline), on the host
under ``isolation = "unshare"``, and in rootful podman (one container per executor, the
busybox image of ``tests.podman``, loaded once before timing). Reported: seconds per
executor (median over rounds) and the multiple of the baseline.

    .venv/bin/python -m bench.containers --executors 10 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from site_agent.containers import choose, ensure_image
from site_agent.tes_run import Runner
from tests.podman import busybox_rootfs, podman_env

IMAGE = "cryomesh-bench/busybox:1"


def _task(n: int, exported: Path, how: dict[str, Any] | None, isolation: str) -> dict[str, Any]:
    work = {
        "inputs": [{"path": "/data/in.txt", "content": "hello\n"}],
        "executors": [{"image": IMAGE, "command": ["sh", "-c", f"cat /data/in.txt > /out/{i}.txt; echo {i}"]} for i in range(n)],
        "outputs": [{"path": f"/out/{n - 1}.txt", "url": f"file://{exported}/last.txt"}],
    }
    return {"work": work, "exported_dirs": [str(exported)], "isolation": isolation, "containers": {IMAGE: how}}


def _per_executor(base: Path, n: int, rounds: int, how: dict[str, Any] | None, isolation: str = "none") -> float:
    samples = []
    for r in range(rounds):
        workdir = base / f"{isolation}-{'podman' if how else 'host'}-{r}"
        workdir.mkdir(parents=True)
        start = time.perf_counter()
        code = Runner(workdir, _task(n, base, how, isolation)).run()
        samples.append((time.perf_counter() - start) / n)
        assert code == 0, (workdir / "tes_result.json").read_text()
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--executors", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-containers-") as tmp:
        base = Path(tmp)
        os.environ.update(podman_env(base))
        rt = choose("podman")
        ensure_image(rt, IMAGE, str(busybox_rootfs(base)))
        how = {"runtime": asdict(rt), "image_file": None, "network": False}
        host = _per_executor(base, args.executors, args.rounds, None)
        unshare = _per_executor(base, args.executors, args.rounds, None, "unshare")
        podman = _per_executor(base, args.executors, args.rounds, how)
    print(f"machine: {platform.node()} ({os.cpu_count()} CPUs), podman {rt.version}")
    print(f"{args.executors} executors a task, {args.rounds} rounds; seconds per executor (median), x host")
    print(f"| way | s/executor | x host |\n|---|---|---|\n| host | {host:.3f} | 1.0 |")
    print(f"| host, unshare | {unshare:.3f} | {unshare / host:.1f} |\n| podman | {podman:.3f} | {podman / host:.1f} |")


if __name__ == "__main__":
    main()
