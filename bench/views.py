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

``--live``: the summary form while heartbeats stream. Every site is enrolled with its own
agent token (bench.loadseed) and has reported a snapshot; in each round a hub is served
from this checkout or from ``--before``, in turns (before, after, before, …), the summary
form is timed first with no heartbeat arriving (each hub process keeps the totals of an
unchanged network), then while heartbeats arrive at ``--rate`` per second (open loop), so
the network changes between any two summaries and each one sums again. The database is
seeded by this checkout, then taken down to ``--before-revision`` (main's schema) for the
baseline's rounds.

    python -m bench.views --live --sites 10000 --before /work/main --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench import loadgen, loadseed
from bench.broker import seed
from bench.common import bench_hub
from bench.heartbeat_load import TOKEN_LIFETIME_S
from bench.loadhub import LoadHub
from tests.helpers import hub_settings
from tests.services import free_port

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


def heard(url: str) -> int:
    """Every seeded site online, with a snapshot as its agent reports it (``loadgen``'s
    payload) and a day to its deadline, written as a heartbeat writes them; how many."""
    from sqlalchemy import insert, update
    from sqlmodel import select

    from hub.capacity.models import CapacityLatest, summed_columns
    from hub.capacity.service import totals_of
    from hub.db import make_engine, transaction
    from hub.sites.models import Site
    from hub.types import utcnow
    from shared.schemas.capacity import Heartbeat

    engine = make_engine(url)
    now = utcnow()
    try:
        with transaction(engine) as s:
            ids = s.exec(select(Site.id).order_by(Site.id)).all()  # type: ignore[arg-type]
            s.execute(update(Site).values(reachability="online", last_heartbeat_at=now, heartbeat_interval_s=86_400,
                                          reachable_until=now + timedelta(days=1)))  # fmt: skip
            rows = []
            for i, site_id in enumerate(ids):
                hb = Heartbeat.model_validate(loadgen.heartbeat_payload(i))
                t = totals_of(hb)
                snapshot = {
                    "sampled_at": hb.sampled_at,
                    "agent_version": hb.agent_version,
                    "backend": hb.backend,
                    "partitions": [p.model_dump() for p in hb.partitions],
                    "storage": [x.model_dump() for x in hb.storage],
                }
                rows.append({"site_id": site_id, "received_at": now, "totals": t.model_dump(), **snapshot, **summed_columns(t)})
            s.execute(insert(CapacityLatest), rows)
    finally:
        engine.dispose()
    return len(ids)


def downgrade(url: str, revision: str) -> None:
    """The baseline's schema (e.g. main's, without this branch's columns and indexes)."""
    from alembic import command

    from hub.db import alembic_config

    command.downgrade(alembic_config(url), revision)


def summaries(http: httpx.Client, token: str, n: int | None = None, until: threading.Event | None = None) -> list[float]:
    """Sequential ``GET /api/v1/network/summary?limit=0``: ``n`` of them, or until ``until`` is set; each one's ms."""
    out: list[float] = []
    headers = {"Authorization": f"Bearer {token}"}
    while (n is None or len(out) < n) and not (until and until.is_set()):
        t0 = time.perf_counter()
        r = http.get("/api/v1/network/summary", params={"limit": 0}, headers=headers)
        out.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200 and r.json()["cpus_total"] > 0, r.text[:300]
    return out


def live_round(label: str, python: str, src: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Seed, serve from ``src`` with ``python``, time summaries quiet and then while heartbeats stream."""
    tmp = Path(tempfile.mkdtemp(prefix=f"cryomesh-live-{label}-"))
    try:
        port = free_port()
        settings = hub_settings(f"sqlite:///{tmp / 'hub.db'}", tmp / "data", port, token_lifetime_s=TOKEN_LIFETIME_S,
                                sweep_interval_s=86_400)  # fmt: skip
        seeded = loadseed.seed(settings, args.sites[0], TOKEN_LIFETIME_S)
        heard(settings.resolved_database_url)
        if label == "before" and args.before_revision:
            downgrade(settings.resolved_database_url, args.before_revision)
        hub = LoadHub(tmp, settings, seeded.admin, 1, port, python=python, src=src)
        hub.start()
        try:
            token = hub.admin_token()
            with httpx.Client(base_url=hub.url, timeout=120) as http:
                summaries(http, token, 3)  # warm: first reads, the kept totals
                quiet = summaries(http, token, args.requests)
                done, beats = threading.Event(), []

                def stream() -> None:
                    make = loadgen.heartbeats(seeded.agents)
                    try:
                        beats.append(asyncio.run(loadgen.open_loop(hub.url, make, args.rate, args.duration, 64, 30)))
                    finally:
                        done.set()

                streamer = threading.Thread(target=stream, name="heartbeats")
                streamer.start()
                time.sleep(min(2.0, args.duration / 4))  # the stream under way
                live = summaries(http, token, until=done)
                streamer.join()
        finally:
            hub.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    hb = beats[0].summary()
    out = {"code": label, "quiet_p50": pct(quiet, 0.5), "live_p50": pct(live, 0.5), "live_p99": pct(live, 0.99),
           "summaries": len(live), "hb_per_s": hb["req_per_s"], "hb_p99_ms": hb["p99_ms"], "hb_statuses": hb["statuses"],
           "load": os.getloadavg()[0]}  # fmt: skip
    print(json.dumps(out), file=sys.stderr, flush=True)
    return out


def pct(xs: list[float], q: float) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def live_section(args: argparse.Namespace, rounds: list[dict[str, Any]]) -> str:
    rows = []
    for label in ("before", "after"):
        mine = [r for r in rounds if r["code"] == label]
        if not mine:
            continue
        med = {k: statistics.median(r[k] for r in mine) for k in ("quiet_p50", "live_p50", "live_p99", "hb_per_s", "hb_p99_ms")}
        each = ", ".join(f"{r['live_p50']:.0f}/{r['live_p99']:.0f}" for r in mine)
        load = statistics.median(r["load"] for r in mine)
        rows.append(f"| {label} | {med['quiet_p50']:.1f} ms | **{med['live_p50']:.1f} ms** | {med['live_p99']:.1f} ms | {each} | "
                    f"{med['hb_per_s']:.0f}/s, p99 {med['hb_p99_ms']:.0f} ms | {load:.1f} |")  # fmt: skip
    return (
        f"{args.sites[0]:,} sites, SQLite, one hub process; heartbeats at {args.rate:g}/s (open loop, each site with its own "
        f"token) for {args.duration:g} s per round; {len(rounds)} rounds, before and after in turns; medians over rounds.\n\n"
        "| code | summary, no heartbeat: p50 | summary, heartbeats streaming: p50 | p99 | p50/p99 per round (ms) "
        "| heartbeats answered | load (1 min) |\n|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


#: main's sums (before 0021): every snapshot's JSON read, twice.
_JSON_SUMS = (
    """SELECT coalesce(sum(json_extract(c.totals, '$.cpus_total')), 0), coalesce(sum(json_extract(c.totals, '$.cpus_free')), 0)
    FROM capacity_latest c JOIN sites s ON s.id = c.site_id WHERE s.status = 'active' AND s.reachability = 'online'""",
    """SELECT g.key, sum(json_extract(g.value, '$.total')), sum(json_extract(g.value, '$.free'))
    FROM capacity_latest c JOIN sites s ON s.id = c.site_id, json_each(c.totals, '$.gpus') g
    WHERE s.status = 'active' AND s.reachability = 'online' GROUP BY g.key""",
)


def sums(args: argparse.Namespace) -> None:
    """The totals alone, in this process, on one seeded SQLite database: main's JSON sums and
    the integer columns' (``usable_capacity``), in turns; checks they agree."""
    from sqlalchemy import text

    from hub.db import make_engine, transaction
    from hub.network.queries import usable_capacity
    from shared.schemas.capacity import GpuCount

    tmp = Path(tempfile.mkdtemp(prefix="cryomesh-sums-"))
    try:
        url = f"sqlite:///{tmp / 'hub.db'}"
        seed(url, 0, args.sites[0], heard_at=datetime.now(UTC))
        engine = make_engine(url)
        times: dict[str, list[float]] = {"json": [], "columns": []}
        try:
            for _ in range(args.requests):
                with transaction(engine, write=False) as s:
                    t0 = time.perf_counter()
                    cpus_total, cpus_free = s.connection().execute(text(_JSON_SUMS[0])).one()
                    old_gpus = {m: (int(t), int(f)) for m, t, f in s.connection().execute(text(_JSON_SUMS[1]))}
                    times["json"].append((time.perf_counter() - t0) * 1000)
                with transaction(engine, write=False) as s:
                    t0 = time.perf_counter()
                    new = usable_capacity(s)
                    times["columns"].append((time.perf_counter() - t0) * 1000)
                assert new == (cpus_total, cpus_free, {m: GpuCount(total=t, free=f) for m, (t, f) in sorted(old_gpus.items())})
        finally:
            engine.dispose()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    json_ms, col_ms = statistics.median(times["json"]), statistics.median(times["columns"])
    print(f"{args.sites[0]:,} sites, {args.requests} times each in turns, same totals: JSON sums p50 {json_ms:.1f} ms "
          f"(min {min(times['json']):.1f}), integer columns p50 {col_ms:.1f} ms (min {min(times['columns']):.1f}), "
          f"{json_ms / col_ms:.1f}x; load {os.getloadavg()[0]:.1f}")  # fmt: skip


def live(args: argparse.Namespace) -> None:
    here = Path(__file__).resolve().parent.parent
    rounds = []
    for _ in range(args.rounds):
        if args.before:
            rounds.append(live_round("before", str(args.before / ".venv" / "bin" / "python"), args.before.resolve(), args))
        rounds.append(live_round("after", sys.executable, here, args))
    print(live_section(args, rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, nargs="+", default=[100, 1_000, 10_000])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--before", type=Path, help="A checkout to measure as the baseline, with its own .venv")
    parser.add_argument("--live", action="store_true", help="The summary form while heartbeats stream (first --sites only)")
    parser.add_argument("--sums", action="store_true", help="The totals' SQL alone, main's and this, in one process")
    parser.add_argument("--before-revision", default="0020", help="--live: the baseline's database schema ('' for head)")
    parser.add_argument("--rate", type=float, default=100, help="--live: heartbeats per second")
    parser.add_argument("--duration", type=float, default=30, help="--live: seconds of heartbeats per round")
    parser.add_argument("--rounds", type=int, default=2, help="--live: rounds of each checkout")
    args = parser.parse_args()
    if args.live:
        live(args)
        return
    if args.sums:
        sums(args)
        return
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
