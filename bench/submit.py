"""Submission latency as the network grows: 100, 1,000 and 10,000 sites.

A real hub process (SQLite) whose database is seeded with N active, online sites with
capacity snapshots (the broker benchmark's simulated sites), and one researcher over
loopback HTTP. Each round sends, one after another: ``GET /api/v1/whoami`` (an
authenticated no-op, the baseline), and ``POST /api/v1/jobs`` with a job that has no
limits, one with a ``deadline`` a week away, and one with a ``max_cost``. Rounds interleave
the four, so a busy machine slows them alike; the table gives p50 and p99 of each and its
p50 as a multiple of the no-op's.

With ``--before DIR`` the same rounds go, in the same run, to a hub started from the
checkout in DIR with its own virtual environment (``DIR/.venv``), e.g. main before a change.

    python -m bench.submit --before /work/main
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.broker import seed
from bench.common import bench_hub

JOB: dict[str, Any] = {"name": "bench", "kind": "generic.command", "command": ["true"], "resources": {"cpus": 1}}


def _token(http: httpx.Client, creds: tuple[str, str]) -> dict[str, str]:
    r = http.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=creds)
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def measure(n_sites: int, rounds: int, python: str | None) -> dict[str, list[float]]:
    """Milliseconds of each request, by name."""
    settings = {"sweep_interval_s": "86400", "token_lifetime_s": "86400"}
    with bench_hub(f"cryomesh-submit-{n_sites}-", python=python, **settings) as bh:
        seed(f"sqlite:///{bh.tmp / 'hub.db'}", 0, n_sites, heard_at=datetime.now(UTC))
        http = httpx.Client(base_url=bh.url, timeout=600)
        admin = _token(http, (bh.admin["client_id"], bh.admin["client_secret"]))
        acct = http.post("/api/v1/accounts", headers=admin, json={"name": "r", "role": "researcher", "institution": "inst-1"})
        researcher = _token(http, (acct.json()["client_id"], acct.json()["client_secret"]))
        deadline = (datetime.now(UTC) + timedelta(days=7)).isoformat()
        requests = {
            "noop": lambda: http.get("/api/v1/whoami", headers=researcher),
            "plain": lambda: http.post("/api/v1/jobs", json=JOB, headers=researcher),
            "deadline": lambda: http.post("/api/v1/jobs", json={**JOB, "deadline": deadline}, headers=researcher),
            "max_cost": lambda: http.post("/api/v1/jobs", json={**JOB, "max_cost": 1000.0}, headers=researcher),
        }
        out: dict[str, list[float]] = {name: [] for name in requests}
        for r in range(rounds + 1):  # the first round warms the views up and is not counted
            for name, send in requests.items():
                t0 = time.perf_counter()
                resp = send()
                ms = (time.perf_counter() - t0) * 1000
                assert resp.status_code in (200, 201), resp.text[:300]
                if name != "noop":
                    assert resp.json()["state"] == "QUEUED" and resp.json()["site"], resp.text[:300]  # placed at once
                if r:
                    out[name].append(ms)
        return out


def _p(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[int(q) - 1] if len(xs) > 1 else xs[0]


def section(sizes: list[int], runs: dict[str, dict[int, dict[str, list[float]]]]) -> str:
    head = "| sites | request | " + " | ".join(f"{name}: p50 / p99 ms (p50 / no-op)" for name in runs) + " |"
    rows = [head, "|---|---|" + "---|" * len(runs)]
    labels = {"noop": "`GET /api/v1/whoami` (no-op)", "plain": "submit", "deadline": "submit, deadline",
              "max_cost": "submit, max_cost"}  # fmt: skip
    for n in sizes:
        for key, label in labels.items():
            cells = []
            for run in runs.values():
                xs, base = run[n][key], statistics.median(run[n]["noop"])
                cells.append(f"{statistics.median(xs):.1f} / {_p(xs, 99):.1f} ({statistics.median(xs) / base:.1f}x)")
            rows.append(f"| {n:,} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, nargs="+", default=[100, 1_000, 10_000])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--before", type=Path, help="a checkout to measure as the baseline, with its own .venv")
    args = parser.parse_args()
    runs: dict[str, dict[int, dict[str, list[float]]]] = {"after": {}}
    if args.before:
        runs = {"before": {}, "after": {}}
    for n in args.sites:
        for name in runs:
            python = str(args.before / ".venv" / "bin" / "python") if name == "before" else None
            runs[name][n] = measure(n, args.rounds, python)
            print(n, name, {k: round(statistics.median(v), 1) for k, v in runs[name][n].items()}, file=sys.stderr, flush=True)
    print(section(args.sites, runs))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    main()
