"""What a submission runs at 1,000 and 10,000 sites: each SQL statement's time per submission,
and the submission's wall and CPU time, in one process (no HTTP).

A SQLite database seeded with N sites (``bench.broker.seed``), the process's kept site views
(``SiteViewCache``, as a hub keeps them) warmed by one submission, then ``jobs.service.submit``
of a one-CPU job ``--rounds`` times, each its own transaction. With ``--before DIR`` the same
runs, in the same run, use the checkout in DIR with its own virtual environment. With
``--received-at-index`` the database also gets the index on ``capacity_latest.received_at``
that migration 0021 of branch live-summary adds (not yet on this branch), to show a
submission once both are merged.

    python -m bench.submit_sql --sites 1000 10000 --before /work/main
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def measure(n_sites: int, rounds: int, index: bool = False) -> dict[str, Any]:
    from sqlalchemy import event

    from bench.broker import seed
    from hub.auth.principal import Principal
    from hub.broker.cache import SiteViewCache
    from hub.db import make_engine, transaction
    from hub.jobs.service import submit
    from shared.schemas.auth import Role
    from shared.schemas.jobs import JobSpec

    tmp = Path(tempfile.mkdtemp(prefix="cryomesh-submit-sql-"))
    url = f"sqlite:///{tmp / 'hub.db'}"
    seed(url, 0, n_sites, heard_at=datetime.now(UTC))
    engine = make_engine(url)
    if index:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE INDEX ix_capacity_latest_received_at ON capacity_latest (received_at)")
    sql: dict[str, list[float]] = defaultdict(list)
    started: list[float] = []
    counting = [False]

    @event.listens_for(engine, "before_cursor_execute")
    def _before(*_: Any) -> None:
        started.append(time.perf_counter())

    @event.listens_for(engine, "after_cursor_execute")
    def _after(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        t = started.pop()
        if counting[0]:
            sql[" ".join(statement.split())[:100]].append((time.perf_counter() - t) * 1000)

    cache = SiteViewCache(3600)
    who = Principal(subject="r", role=Role.RESEARCHER, issuer="bench", client_id="r", institution="inst-1")
    spec = JobSpec.model_validate({"name": "bench", "kind": "generic.command", "command": ["true"], "resources": {"cpus": 1}})
    wall, cpu = [], []
    for r in range(rounds + 1):  # the first loads the views and is not counted
        counting[0] = r > 0
        t0, c0 = time.perf_counter(), time.process_time()
        with transaction(engine) as s:
            submit(s, who, spec, None, cache)
        if r:
            wall.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
    engine.dispose()
    per = {k: sum(v) / rounds for k, v in sql.items()}
    return {"wall": statistics.median(wall), "cpu": statistics.median(cpu), "sql": per}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--before", type=Path, help="a checkout to measure as the baseline, with its own .venv")
    parser.add_argument("--received-at-index", action="store_true", help="add the index of live-summary's 0021")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child run: print one measurement as JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.rounds, args.received_at_index)))
        return
    runs = {"before": args.before, "after": None} if args.before else {"after": None}
    here = Path(__file__).resolve().parents[1]
    for n in args.sites:
        for name, checkout in runs.items():
            root = checkout or here
            python = str(root / ".venv" / "bin" / "python") if checkout else sys.executable
            env = {**os.environ, "PYTHONPATH": str(root)}
            cmd = [python, str(Path(__file__).resolve()), "--one", str(n), "--rounds", str(args.rounds)]
            cmd += ["--received-at-index"] if args.received_at_index else []
            out = json.loads(subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True, text=True).stdout)
            print(f"\n{n:,} sites, {name}: submit p50 {out['wall']:.1f} ms wall, {out['cpu']:.1f} ms CPU; SQL per submission:")
            for statement, ms in sorted(out["sql"].items(), key=lambda kv: -kv[1]):
                print(f"  {ms:7.2f} ms  {statement}")
            print(f"  {sum(out['sql'].values()):7.2f} ms  in all", flush=True)


if __name__ == "__main__":
    main()
