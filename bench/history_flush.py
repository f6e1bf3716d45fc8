"""Writing the folded capacity history on PostgreSQL: one statement against the portable path.

A durable PostgreSQL (its defaults, fsync on) with ``--sites`` enrolled sites; each round folds
one heartbeat per site (two GPU models on every other site) into the current bucket and writes
it with ``write_folds`` (PostgreSQL's one statement) and with ``write_folds_portable`` (the
statements SQLite runs: a multi-row upsert, then a read and an UPDATE per row for the GPU
counts), alternating which goes first. Reported: the hub process's CPU and the wall time per
flush, medians over ``--rounds``. The flush runs in a background thread of the hub, so its CPU
is taken from the event loop answering heartbeats (the GIL).

    .venv/bin/python -m bench.history_flush --sites 5000 --rounds 6
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlmodel import Session

from bench.loadseed import seed
from hub.capacity.history_buffer import Fold, Key, bucket_start, write_folds, write_folds_portable
from hub.db import make_engine, transaction
from hub.settings import HubSettings
from shared.schemas.capacity import CapacityTotals, GpuCount
from tests.services import postgres_server

Writer = Callable[[Session, dict[Key, Fold]], int]


def folds(site_ids: list[int], start: datetime, k: int) -> dict[Key, Fold]:
    out: dict[Key, Fold] = {}
    for n, site_id in enumerate(site_ids):
        gpus = {"a100": GpuCount(total=16, free=(n + k) % 17)}
        if n % 2:
            gpus["h100"] = GpuCount(total=8, free=k % 9)
        f = Fold()
        f.add(CapacityTotals(cpus_total=512, cpus_free=(n * 7 + k) % 513, gpus=gpus))
        out[(site_id, start)] = f
    return out


def run(sites: int, rounds: int) -> dict[str, dict[str, float]]:
    times: dict[str, list[tuple[float, float]]] = {"one statement": [], "portable": []}
    writers: dict[str, Writer] = {"one statement": write_folds, "portable": write_folds_portable}
    with postgres_server(durable=True) as pg:
        url = pg.url()
        seed(HubSettings(database_url=url), sites, 600)
        engine = make_engine(url)
        try:
            with transaction(engine) as s:
                site_ids = [r[0] for r in s.execute(text("SELECT id FROM sites ORDER BY id"))]
            start = bucket_start(datetime.now(UTC), 300)
            for r in range(rounds):
                order = list(writers) if r % 2 == 0 else list(reversed(writers))
                for name in order:
                    # Each path writes its own bucket, so both upsert rows that exist (after round 0).
                    bucket = start - timedelta(seconds=300 * (1 + list(writers).index(name)))
                    batch = folds(site_ids, bucket, r)
                    cpu, wall = time.process_time(), time.perf_counter()
                    with transaction(engine) as s:
                        written = writers[name](s, batch)
                    times[name].append((time.process_time() - cpu, time.perf_counter() - wall))
                    assert written == len(site_ids), (name, written)
        finally:
            engine.dispose()
    return {
        name: {
            "cpu_ms": statistics.median(c for c, _ in ts[1:]) * 1000,
            "wall_ms": statistics.median(w for _, w in ts[1:]) * 1000,
        }
        for name, ts in times.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()
    out = run(args.sites, args.rounds)
    print(f"{args.sites} rows per flush, medians over rounds 2-{args.rounds} (round 1 inserts):")
    print("| path | hub CPU ms | wall ms |\n|---|---|---|")
    for name, m in out.items():
        print(f"| {name} | {m['cpu_ms']:.0f} | {m['wall_ms']:.0f} |")
    one, port = out["one statement"], out["portable"]
    print(f"\nportable / one statement: CPU {port['cpu_ms'] / one['cpu_ms']:.1f}x, wall {port['wall_ms'] / one['wall_ms']:.1f}x")


if __name__ == "__main__":
    main()
