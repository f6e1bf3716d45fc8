"""A real hub process for a benchmark: SQLite in a temp dir, a bootstrapped admin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from cryomesh_cli.devslurm import free_port


@dataclass
class BenchHub:
    url: str
    tmp: Path
    admin: dict[str, Any]


@contextmanager
def bench_hub(prefix: str, python: str | None = None, **settings: str) -> Iterator[BenchHub]:
    """``python``: another checkout's interpreter (its ``.venv``), run from that checkout."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "CRYOMESH_DATA_DIR": str(tmp),
        "CRYOMESH_PUBLIC_URL": url,
        "CRYOMESH_PORT": str(port),
        "CRYOMESH_CREDENTIALS": str(tmp / "admin.json"),
        "CRYOMESH_LOG_LEVEL": "WARNING",
        **{f"CRYOMESH_{k.upper()}": v for k, v in settings.items()},
    }
    cli = [python or sys.executable, "-m", "cryomesh_cli.main"]
    cwd = Path(python).parent.parent.parent if python else None
    if python:
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # leave the other checkout as it is
    subprocess.run([*cli, "admin", "bootstrap", "--name", "bench"], env=env, check=True, capture_output=True, cwd=cwd)
    admin = json.loads((tmp / "admin.json").read_text())
    hub = subprocess.Popen([*cli, "hub", "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd)
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield BenchHub(url, tmp, admin)
    finally:
        hub.terminate()
        hub.wait(15)
