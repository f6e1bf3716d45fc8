"""Hub CPU per heartbeat, this checkout against another, interleaved in one run.

On a shared machine throughput moves with everyone else's load, but the CPU a hub process
spends per answered heartbeat (and, on PostgreSQL, the CPU the database server spends) moves
much less. So this runs the same closed loop against a hub served from ``--before`` (another
checkout, with its own interpreter so its own dependencies) and from this checkout, in turns
(before, after, before, after, …), each on a freshly seeded database of ``--sites`` sites,
and reports each round's hub and database CPU per heartbeat and the medians.

    .venv/bin/python -m bench.heartbeat_ab --before /tmp/main-src --before-python /work/main/.venv/bin/python \\
        --db postgres --sites 1000 --senders 64 --duration 15 --rounds 2

The database is seeded and migrated by this checkout, so both must share the schema.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import loadgen
from bench.heartbeat_load import TOKEN_LIFETIME_S, database
from bench.loadhub import LoadHub, raise_on_sigterm
from bench.loadseed import seed
from tests.helpers import hub_settings
from tests.services import free_port


def one_round(args: argparse.Namespace, label: str, python: str, src: Path) -> dict[str, Any]:
    """Seed, serve with ``python`` from ``src``, warm every agent up, then measure the closed loop."""
    tmp = Path(tempfile.mkdtemp(prefix=f"cryomesh-ab-{label}-"))
    try:
        with database(args.db, tmp, "ab", durable=not args.pg_no_fsync) as url:
            port = free_port()
            settings = hub_settings(url, tmp / "data", port, token_lifetime_s=TOKEN_LIFETIME_S, sweep_interval_s=5)
            seeded = seed(settings, args.sites, TOKEN_LIFETIME_S)
            if label == "before" and args.before_revision:  # the baseline's own schema (its indexes cost writes too)
                from alembic import command

                from hub.db import alembic_config

                command.downgrade(alembic_config(url), args.before_revision)
            hub = LoadHub(tmp, settings, seeded.admin, 1, port, python=python, src=src)
            hub.start()
            try:
                make = loadgen.heartbeats(seeded.agents)
                asyncio.run(loadgen.closed_loop(hub.url, make, 16, 600, 30, count=args.sites))
                before = hub.usage()
                stats = asyncio.run(loadgen.closed_loop(hub.url, make, args.senders, args.duration, 30))
                after = hub.usage()
                if args.whoami:  # the authenticated no-op, same senders and duration
                    w0 = hub.usage()
                    no_op = loadgen.whoami(seeded.agents)
                    wstats = asyncio.run(loadgen.closed_loop(hub.url, no_op, args.senders, args.duration, 30))
                    w1 = hub.usage()
            finally:
                hub.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    s = stats.summary()
    db_ms = (
        (after.db_cpu_s - before.db_cpu_s) * 1000 / s["ok"]
        if after.db_cpu_s is not None and before.db_cpu_s is not None
        else None
    )
    out = {
        "code": label,
        "req_per_s": s["req_per_s"],
        "p99_ms": s["p99_ms"],
        "statuses": s["statuses"],
        "hub_cpu_ms": (after.cpu_s - before.cpu_s) * 1000 / s["ok"],
        "db_cpu_ms": db_ms,
    }
    if args.whoami:
        w = wstats.summary()
        out["whoami_per_s"] = w["req_per_s"]
        out["whoami_cpu_ms"] = (w1.cpu_s - w0.cpu_s) * 1000 / w["ok"]
    print(json.dumps(out), flush=True)
    return out


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="the other checkout (its source tree)")
    parser.add_argument("--before-python", default=sys.executable, help="the interpreter to serve it with")
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--pg-no-fsync", action="store_true")
    parser.add_argument("--sites", type=int, default=1000)
    parser.add_argument("--senders", type=int, default=64)
    parser.add_argument("--duration", type=float, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--before-revision", help="take the baseline's database down to this migration (its schema)")
    parser.add_argument("--whoami", action="store_true", help="then as long a run of GET /api/v1/whoami (no-op)")
    args = parser.parse_args(argv)
    raise_on_sigterm()
    here = Path(__file__).resolve().parent.parent
    results = []
    for _ in range(args.rounds):
        results.append(one_round(args, "before", args.before_python, args.before.resolve()))
        results.append(one_round(args, "after", sys.executable, here))
    for label in ("before", "after"):
        mine = [r for r in results if r["code"] == label]
        hub = statistics.median(r["hub_cpu_ms"] for r in mine)
        dbs = [r["db_cpu_ms"] for r in mine if r["db_cpu_ms"] is not None]
        db = f", database {statistics.median(dbs):.3f} ms" if dbs else ""
        who = [r["whoami_cpu_ms"] for r in mine if "whoami_cpu_ms" in r]
        no_op = f"; whoami {statistics.median(who):.3f} ms" if who else ""
        print(f"# {label}: median hub CPU {hub:.3f} ms per heartbeat{db}{no_op} ({len(mine)} rounds)")
    return results


if __name__ == "__main__":
    main()
