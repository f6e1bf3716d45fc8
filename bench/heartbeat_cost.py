"""A heartbeat's own database work, without HTTP or the token check (issue 10).

What the heartbeat handler does once the caller is known: find the site, store the
snapshot and the sign of life, renew the leases the agent names, fold the sample into the
history. Timed one transaction per heartbeat over ``--sites`` sites (SQLite file or
PostgreSQL), against a baseline measured in the same run: a transaction that only reads
the site (the least any call an agent makes does). The history buffer's flushes are timed
too and spread over the heartbeats they carried.

    .venv/bin/python -m bench.heartbeat_cost --sites 1000 --heartbeats 5000
    .venv/bin/python -m bench.heartbeat_cost --db postgresql+psycopg://user@host/db
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sqlmodel import Session, select

from bench.loadgen import heartbeat_payload
from hub.capacity.history_buffer import HistoryBuffer
from hub.capacity.service import record_heartbeat
from hub.db import make_engine, migrate, transaction
from hub.jobs.service import renew_leases
from hub.settings import HubSettings
from hub.sites.models import Site
from hub.sites.queries import get_site_by_name
from shared.schemas.capacity import Heartbeat


def _seed(url: str, n: int) -> list[str]:
    engine = make_engine(url)
    names = [f"site-{i:05d}" for i in range(n)]
    with transaction(engine) as s:
        s.add_all(Site(name=name, institution="kek", display_name=name, country="JP", status="active") for name in names)
    engine.dispose()
    return names


def run(url: str, sites: int, heartbeats: int) -> dict[str, float]:
    migrate(url)
    names = _seed(url, sites)
    settings = HubSettings(database_url=url)
    engine = make_engine(url)
    history = HistoryBuffer(engine, settings.history_bucket_s, settings.history_flush_s, settings.history_flush_rows)
    with transaction(engine) as s:
        ids = {site.name: site.id for site in s.exec(select(Site)) if site.id is not None}
    payloads = [Heartbeat.model_validate(heartbeat_payload(i)) for i in range(sites)]
    base, beat, flushes = [], [], 0.0

    def read_only(s: Session, name: str) -> None:
        get_site_by_name(s, name)

    def heartbeat(s: Session, site_id: int, name: str, hb: Heartbeat) -> None:
        record_heartbeat(s, site_id, name, hb, settings, history)  # the handler knows the id from the token
        renew_leases(s, site_id, hb.attempts, hb.interval_s * settings.missed_heartbeats)

    try:
        for i in range(heartbeats):
            name, hb = names[i % sites], payloads[i % sites]
            t0 = time.perf_counter()
            with transaction(engine) as s:
                read_only(s, name)
            t1 = time.perf_counter()
            with transaction(engine) as s:
                heartbeat(s, ids[name], name, hb)
            t2 = time.perf_counter()
            base.append(t1 - t0)
            beat.append(t2 - t1)
            if history.pending() >= settings.history_flush_rows:
                flushes += _timed(history.flush)
        flushes += _timed(history.flush)
    finally:
        engine.dispose()
    per_flush = flushes / heartbeats
    return {
        "baseline_ms": statistics.median(base) * 1000,
        "heartbeat_ms": statistics.median(beat) * 1000,
        "flush_ms_per_heartbeat": per_flush * 1000,
        "ratio": (statistics.median(beat) + per_flush) / statistics.median(base),
    }


def _timed(f: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=1000)
    parser.add_argument("--heartbeats", type=int, default=5000)
    parser.add_argument("--db", default=None, help="a database URL (default: SQLite in a temp dir); it must be empty")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cryomesh-hbcost-") as tmp:
        url = args.db or f"sqlite:///{Path(tmp) / 'hub.db'}"
        r = run(url, args.sites, args.heartbeats)
    print(
        f"{args.heartbeats} heartbeats over {args.sites} sites: baseline (read the site) p50 {r['baseline_ms']:.3f} ms; "
        f"heartbeat p50 {r['heartbeat_ms']:.3f} ms + history flushes {r['flush_ms_per_heartbeat']:.3f} ms each; "
        f"{r['ratio']:.2f}x the baseline"
    )


if __name__ == "__main__":
    main()
