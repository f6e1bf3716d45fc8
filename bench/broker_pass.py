"""One broker pass through the database, this checkout against another, in the same run.

A SQLite database is seeded once with 1,000 simulated sites and 10,000 queued jobs of six
shapes (bench/broker.py's); each run copies it and places the whole queue with one
``place_queued`` pass in one transaction, commit included, in a fresh process. Runs of
the two checkouts alternate, so a shared machine slows both alike; the table gives the
median wall time and the median CPU time of the pass, and the rows it wrote (the same on
both sides: every job placed, one attempt and one decision each).

    python -m bench.broker_pass --before /work/main --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def one_pass(path: str) -> dict[str, float]:
    """Wall and CPU seconds of one pass over the database at ``path``, and the rows it wrote."""
    from sqlalchemy import text

    from bench.broker import NOW
    from hub.broker.service import place_queued
    from hub.db import make_engine, transaction

    engine = make_engine(f"sqlite:///{path}")
    wall, cpu = time.perf_counter(), time.process_time()
    with transaction(engine) as s:
        placed = place_queued(s, None, NOW)
    out = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu, "placed": placed}
    with engine.connect() as conn:
        out["attempts"] = conn.execute(text("SELECT count(*) FROM attempts")).scalar_one()
        out["placements"] = conn.execute(text("SELECT count(*) FROM placements")).scalar_one()
    engine.dispose()
    return out


def run_in(checkout: Path, seeded: Path, tmp: Path) -> dict[str, float]:
    """One pass in a fresh process with ``checkout``'s code and environment, on a copy of ``seeded``."""
    db = tmp / "run.db"
    shutil.copy(seeded, db)
    env = {**os.environ, "PYTHONPATH": str(checkout), "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run([str(checkout / ".venv" / "bin" / "python"), __file__, "--worker", str(db)],
                         env=env, cwd=checkout, capture_output=True, text=True, check=True)  # fmt: skip
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    return dict(json.loads(out.stdout.splitlines()[-1]))


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        print(json.dumps(one_pass(sys.argv[2])))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, help="a checkout to measure as the baseline, with its own .venv")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--sites", type=int, default=1_000)
    args = parser.parse_args()
    from bench.broker import seed

    tmp = Path(tempfile.mkdtemp(prefix="cryomesh-pass-"))
    try:
        seeded = tmp / "seeded.db"
        seed(f"sqlite:///{seeded}", args.jobs, args.sites)
        sides = {"before": args.before, "after": ROOT} if args.before else {"after": ROOT}
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
        for _ in range(args.repeats):
            for name, checkout in sides.items():
                runs[name].append(run_in(checkout, seeded, tmp))
                print(name, runs[name][-1], file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("| code | wall s (median, min) | CPU s (median, min) | placed | attempts | decisions |\n|---|---|---|---|---|---|")
    for name, rs in runs.items():
        wall, cpu = [r["wall_s"] for r in rs], [r["cpu_s"] for r in rs]
        print(f"| {name} | {statistics.median(wall):.2f}, {min(wall):.2f} | {statistics.median(cpu):.2f}, {min(cpu):.2f} | "
              f"{rs[0]['placed']:,} | {rs[0]['attempts']:,} | {rs[0]['placements']:,} |")  # fmt: skip
    if args.before:
        ratio = statistics.median(r["cpu_s"] for r in runs["before"]) / statistics.median(r["cpu_s"] for r in runs["after"])
        print(f"\nbefore / after, median CPU: {ratio:.2f}x")


if __name__ == "__main__":
    main()
