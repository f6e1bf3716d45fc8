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
import os
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
    load_before = os.getloadavg()[0]
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
        "load": [round(load_before, 1), round(os.getloadavg()[0], 1)],  # 1-minute load average, start and end
    }
    if args.whoami:
        w = wstats.summary()
        out["whoami_per_s"] = w["req_per_s"]
        out["whoami_cpu_ms"] = (w1.cpu_s - w0.cpu_s) * 1000 / w["ok"]
        out["ratio"] = out["hub_cpu_ms"] / out["whoami_cpu_ms"]  # a heartbeat's hub CPU in no-ops
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
    parser.add_argument("--markdown", action="store_true", help="print the rounds as a Markdown table at the end")
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
        ratios = [r["ratio"] for r in mine if "ratio" in r]
        ratio = f"; heartbeat / whoami {statistics.median(ratios):.2f}x" if ratios else ""
        print(f"# {label}: median hub CPU {hub:.3f} ms per heartbeat{db}{no_op}{ratio} ({len(mine)} rounds)")
    if args.markdown:
        print(markdown(results))
    return results


COLUMNS = (
    "round", "code", "load (start, end)", "heartbeats/s", "hub CPU ms / heartbeat", "PostgreSQL CPU ms / heartbeat",
    "whoami/s", "hub CPU ms / whoami", "heartbeat / whoami",
)  # fmt: skip


def markdown(results: list[dict[str, Any]]) -> str:
    """The rounds as a table, in the order run, then each code's medians."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]

    def row(*values: str) -> None:
        lines.append("| " + " | ".join(values) + " |")

    def ms(value: float | None) -> str:
        return "" if value is None else f"{value:.2f}"

    for i, r in enumerate(results):
        load = ", ".join(str(x) for x in r["load"])
        row(str(i // 2 + 1), r["code"], load, f"{r['req_per_s']:.0f}", ms(r["hub_cpu_ms"]), ms(r["db_cpu_ms"]),
            f"{r.get('whoami_per_s', 0):.0f}", ms(r.get("whoami_cpu_ms")), ms(r.get("ratio")) + "x")  # fmt: skip
    for label in ("before", "after"):
        mine = [r for r in results if r["code"] == label]

        def median(key: str, rounds: list[dict[str, Any]] = mine) -> float | None:
            values = [r[key] for r in rounds if r.get(key) is not None]
            return statistics.median(values) if values else None

        row("median", label, "", "", ms(median("hub_cpu_ms")), ms(median("db_cpu_ms")), "", ms(median("whoami_cpu_ms")),
            f"**{ms(median('ratio'))}x**")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
