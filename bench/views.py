"""Views and submission as the network grows: 100, 1,000 and 10,000 sites.

A real hub process (SQLite) whose database is seeded with N active, online sites, each with
a registry entry and a capacity snapshot (the broker benchmark's simulated sites). One
client then times, request by request, over loopback HTTP:

- ``GET /healthz``, the baseline;
- ``GET /api/v1/network/summary?limit=0``, the summary form (totals alone), and the
  default page (100 sites), with their sizes;
- ``GET /api/v1/dashboard/overview?limit=50``, what the dashboard asks every 5 s, and the
  same with ``If-None-Match`` (a 304 while nothing changed);
- ``POST /api/v1/jobs``, a researcher's submission, placed at once.

With ``--before DIR`` the same requests go, in the same run, to a hub started from the
checkout in DIR with its own virtual environment (``DIR/.venv``), e.g. the main branch
before this change; there the summary and overview return every site.

    python -m bench.views --before /work/main
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.broker import seed
from bench.common import bench_hub

JOB = {"name": "bench", "kind": "generic.command", "command": ["true"], "resources": {"cpus": 1}}


def timed(n: int, fn: Callable[[], httpx.Response]) -> tuple[float, int]:
    """p50 in ms and the size of the last body."""
    out, size = [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        r = fn()
        out.append((time.perf_counter() - t0) * 1000)
        assert r.status_code in (200, 201, 304), r.text[:300]
        size = len(r.content)
    return statistics.median(out), size


def measure(n_sites: int, requests: int, python: str | None) -> dict[str, tuple[float, int]]:
    settings = {"sweep_interval_s": "86400", "token_lifetime_s": "86400"}  # slow baselines outlive a token
    with bench_hub(f"cryomesh-views-{n_sites}-", python=python, **settings) as bh:
        db = bh.tmp / "hub.db"
        seed(f"sqlite:///{db}", 0, n_sites, heard_at=datetime.now(UTC))
        http = httpx.Client(base_url=bh.url, timeout=600)
        creds = (bh.admin["client_id"], bh.admin["client_secret"])
        admin = {
            "Authorization": "Bearer "
            + http.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=creds).json()["access_token"]
        }
        acct = http.post(
            "/api/v1/accounts", headers=admin, json={"name": "r", "role": "researcher", "institution": "inst-1"}
        ).json()
        rtok = http.post(
            "/oauth/token", data={"grant_type": "client_credentials"}, auth=(acct["client_id"], acct["client_secret"])
        )
        researcher = {"Authorization": f"Bearer {rtok.json()['access_token']}"}
        few = 3 if n_sites >= 10_000 and python else requests
        out = {"healthz": timed(requests, lambda: http.get("/healthz"))}
        out["summary"] = timed(few, lambda: http.get("/api/v1/network/summary", params={"limit": 0}, headers=admin))
        out["summary_page"] = timed(few, lambda: http.get("/api/v1/network/summary", headers=admin))
        overview = http.get("/api/v1/dashboard/overview", params={"limit": 50}, headers=admin)
        out["overview"] = timed(few, lambda: http.get("/api/v1/dashboard/overview", params={"limit": 50}, headers=admin))
        tag = {"If-None-Match": overview.headers.get("etag", '"none"')}
        out["overview_304"] = timed(
            few, lambda: http.get("/api/v1/dashboard/overview", params={"limit": 50}, headers={**admin, **tag})
        )
        out["submit"] = timed(few, lambda: http.post("/api/v1/jobs", json=JOB, headers=researcher))
        return out


def section(sizes: list[int], after: dict[int, Any], before: dict[int, Any] | None) -> str:
    rows = []
    for n in sizes:
        for key, label in (("summary", "summary, `?limit=0`"), ("summary_page", "summary, default page"),
                           ("overview", "dashboard overview, `?limit=50`"), ("overview_304", "overview, If-None-Match"),
                           ("submit", "`POST /api/v1/jobs`")):  # fmt: skip
            a_ms, a_b = after[n][key]
            base = after[n]["healthz"][0]
            b = f"{before[n][key][0]:.1f} ms, {before[n][key][1]:,} B" if before else "—"
            rows.append(f"| {n:,} | {label} | {b} | {a_ms:.1f} ms, {a_b:,} B | {a_ms / base:.0f}x |")
    return (
        "| sites | request | before: p50, body | after: p50, body | after vs `/healthz` |\n|---|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, nargs="+", default=[100, 1_000, 10_000])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--before", type=Path, help="A checkout to measure as the baseline, with its own .venv")
    args = parser.parse_args()
    before_python = str(args.before / ".venv" / "bin" / "python") if args.before else None
    after, before = {}, {} if args.before else None
    for n in args.sites:
        after[n] = measure(n, args.requests, None)
        print(n, "after", after[n], file=sys.stderr, flush=True)
        if before is not None:
            before[n] = measure(n, args.requests, before_python)
            print(n, "before", before[n], file=sys.stderr, flush=True)
    print(section(args.sites, after, before))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    main()
