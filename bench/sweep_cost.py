"""The sweep's reachability pass over a large network (issue 10).

``mark_unreachable`` over ``--sites`` online sites (SQLite in a temp dir), of which
``--stale`` missed their beats; timed 20 times, each rolled back so every run finds the
same sites.

    .venv/bin/python -m bench.sweep_cost --sites 10000 --stale 10
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from sqlmodel import Session

from hub.capacity.service import mark_unreachable
from hub.db import make_engine, migrate, transaction
from hub.settings import HubSettings
from hub.sites.models import Site
from hub.types import utcnow


def run(url: str, sites: int, stale: int, runs: int = 20) -> tuple[float, float, int]:
    """Returns the median and the longest pass in ms, and how many sites it marked."""
    migrate(url)
    engine = make_engine(url)
    now = utcnow()
    try:
        with transaction(engine) as s:
            for i in range(sites):
                last = now - timedelta(seconds=100 if i < stale else 1)
                s.add(
                    Site(name=f"s{i:05d}", institution="kek", display_name="x", country="JP", status="active",
                         reachability="online", last_heartbeat_at=last, heartbeat_interval_s=15,
                         reachable_until=last + timedelta(seconds=45))
                )  # fmt: skip
        settings = HubSettings(database_url=url)
        times, marked = [], 0
        for _ in range(runs):
            with Session(engine) as s:
                t0 = time.perf_counter()
                marked = len(mark_unreachable(s, settings, now=now))
                times.append(time.perf_counter() - t0)
                s.rollback()
    finally:
        engine.dispose()
    return statistics.median(times) * 1000, max(times) * 1000, marked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=10_000)
    parser.add_argument("--stale", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cryomesh-sweepcost-") as tmp:
        p50, worst, marked = run(f"sqlite:///{Path(tmp) / 'hub.db'}", args.sites, args.stale)
    print(
        f"mark_unreachable over {args.sites} online sites ({args.stale} stale): "
        f"p50 {p50:.1f} ms, max {worst:.1f} ms; marked {marked}"
    )


if __name__ == "__main__":
    main()
