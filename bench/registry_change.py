"""One registry change at 10,000 sites: what the kept site views (hub/broker/cache.py) cost.

A SQLite database seeded with N active, online sites (the broker benchmark's simulated
sites). One ``SiteViewCache`` is loaded and its search board built; then, ``--repeats``
times, one site is edited (its institution, with ``updated_at`` bumped as the API does) and
the next submission's refresh and board are timed two ways, alternately, on the same
database in the same process:

- *full*: every view read again and a new board (``SiteViewCache.reload``, what every
  registry change did before);
- *edit*: the views of the sites the change touched read again and put on the kept board
  (``SiteViewCache.views`` as submissions now call it).

    python -m bench.registry_change --sites 10000 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import update
from sqlmodel import col

from bench.broker import NOW, seed
from hub.broker.cache import SiteViewCache
from hub.db import make_engine, transaction
from hub.sites.models import Site
from hub.types import utcnow


def measure(n_sites: int, repeats: int) -> dict[str, list[float]]:
    tmp = Path(tempfile.mkdtemp(prefix="cryomesh-registry-"))
    url = f"sqlite:///{tmp / 'hub.db'}"
    seed(url, 0, n_sites)
    engine = make_engine(url)
    cache = SiteViewCache(max_age_s=86_400)
    out: dict[str, list[float]] = {"full": [], "edit": [], "full_cpu": [], "edit_cpu": []}
    try:
        with transaction(engine) as s, cache.views(s, NOW):
            cache.board(NOW)
        for k in range(2 * repeats):
            how = "full" if k % 2 == 0 else "edit"
            with transaction(engine) as s:
                edited = col(Site.name) == f"site-{k:04d}"
                s.execute(update(Site).where(edited).values(institution=f"moved-{k}", updated_at=utcnow() + timedelta(seconds=k)))
            with transaction(engine) as s:
                t0, c0 = time.perf_counter(), time.process_time()
                if how == "full":
                    cache.reload(s, NOW)
                with cache.views(s, NOW):
                    cache.board(NOW)
                out[how].append(time.perf_counter() - t0)
                out[f"{how}_cpu"].append(time.process_time() - c0)
        assert cache.edits == repeats, "each edit was applied without a full reload"
    finally:
        engine.dispose()
    return out


def section(n_sites: int, out: dict[str, list[float]], load: str) -> str:
    full, edit = statistics.median(out["full"]), statistics.median(out["edit"])
    return (
        f"| one registry change at {n_sites:,} sites (refresh + board, median of {len(out['full'])}) | "
        f"{full * 1000:,.0f} ms wall, {statistics.median(out['full_cpu']) * 1000:,.0f} ms CPU | "
        f"{edit * 1000:,.1f} ms wall, {statistics.median(out['edit_cpu']) * 1000:,.1f} ms CPU | {full / edit:.0f}x |\n"
        f"\n(load average at the start: {load})\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    out = measure(args.sites, args.repeats)
    print("| | full reload (before) | only the sites touched (after) | ratio |\n|---|---|---|---|")
    print(section(args.sites, out, load))


if __name__ == "__main__":
    main()
