"""Hub processes on PostgreSQL, each held to the same slice of a CPU: does N give N times one?

The issue asks that four hub processes on PostgreSQL answer at least three times the
heartbeats of one. Measured plainly, that needs a core for each hub process plus PostgreSQL's
and the load client's; on a 2-core machine one process and the client already fill both
(docs/benchmarks.md). So this holds every hub process to the same CPU quota (its own cgroup,
``cpu.cfs_quota_us``: ``--quota`` of one core) and leaves PostgreSQL and the client free: each
hub process then stands for a process on a core of its own, only slower, and what is left to
show is that nothing shared (the database, its locks, the sweep runner, LISTEN/NOTIFY) keeps N
processes from N times the work.

For each ``--workers`` N: a durable PostgreSQL seeded with ``--sites`` sites, N ``cryomesh hub
serve`` processes on ports of their own sharing its database and public URL (hub hosts behind
a reverse proxy; ``hub serve --workers N`` shares one socket, and the kernel hands its
connections to whichever process accepts first, so a process held back by its quota got
fewer), each in its own cgroup, the agents split evenly between them, a warm-up heartbeat per
agent, then ``--senders`` closed-loop heartbeat senders per process (N x ``--senders`` in all:
each process as busy as the one alone) for ``--duration`` seconds. Reported: 2xx/s, p50/p99,
statuses, hub CPU per heartbeat, and the ratio to one process. Needs root and the cgroup v1
cpu controller at /sys/fs/cgroup/cpu.

    .venv/bin/python -m bench.process_scaling --workers 1 2 4 --quota 0.15 --senders 32
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import loadgen
from bench.heartbeat_load import TOKEN_LIFETIME_S, database
from bench.loadhub import LoadHub
from bench.loadseed import seed
from tests.helpers import hub_settings
from tests.services import free_port

CGROUP_CPU = Path("/sys/fs/cgroup/cpu")
PERIOD_US = 100_000


@contextmanager
def quota_each(pids: list[int], share: float) -> Iterator[list[Path]]:
    """Each of ``pids`` in a cgroup of its own, allowed ``share`` of one CPU; removed after."""
    groups: list[Path] = []
    try:
        for pid in pids:
            g = CGROUP_CPU / f"cryomesh-bench-{os.getpid()}-{pid}"
            g.mkdir()
            groups.append(g)
            (g / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (g / "cpu.cfs_quota_us").write_text(str(int(PERIOD_US * share)))
            (g / "cgroup.procs").write_text(str(pid))
        yield groups
    finally:
        for g in groups:
            with contextlib.suppress(OSError):  # move what is left back to the root group first
                for pid in (g / "cgroup.procs").read_text().split():
                    (CGROUP_CPU / "cgroup.procs").write_text(pid)
            with contextlib.suppress(OSError):
                g.rmdir()


def run_one(processes: int, sites: int, senders: int, duration: float, share: float) -> dict[str, Any]:
    """``processes`` hub processes (``hub serve``, one worker each, on ports of their own, as
    hub hosts behind a reverse proxy: one public URL, one database), the agents split evenly
    between them by the client, as a proxy balancing connections would."""
    tmp = Path(tempfile.mkdtemp(prefix="cryomesh-scaling-"))
    try:
        with database("postgres", tmp, f"scaling_{processes}") as url:
            settings = hub_settings(url, tmp / "data", free_port(), token_lifetime_s=TOKEN_LIFETIME_S, sweep_interval_s=5)
            seeded = seed(settings, sites, TOKEN_LIFETIME_S)
            hubs = []
            for i in range(processes):
                (tmp / f"hub{i}").mkdir()
                hubs.append(LoadHub(tmp / f"hub{i}", settings, seeded.admin, 1, free_port()))
            try:
                for hub in hubs:
                    hub.start()
                assert all(h.proc is not None for h in hubs)
                with quota_each([h.proc.pid for h in hubs if h.proc is not None], share):
                    agents = seeded.agents
                    parts = [agents[i::processes] for i in range(processes)]

                    async def loops(count: bool) -> list[loadgen.Stats]:
                        return await asyncio.gather(*(
                            loadgen.closed_loop(h.url, loadgen.heartbeats(part), 16 if count else senders,
                                                600 if count else duration, 30, count=len(part) if count else None)
                            for h, part in zip(hubs, parts, strict=True)
                        ))  # fmt: skip

                    asyncio.run(loops(count=True))  # warm-up: every agent once
                    before = sum(h.usage().cpu_s for h in hubs)
                    runs = asyncio.run(loops(count=False))
                    cpu = sum(h.usage().cpu_s for h in hubs) - before
            finally:
                for hub in hubs:
                    hub.stop()
        stats = loadgen.Stats()
        for r in runs:
            stats.latencies_ms += r.latencies_ms
            stats.statuses.update(r.statuses)
            stats.errors.update(r.errors)
        stats.elapsed_s = max(r.elapsed_s for r in runs)
        s = stats.summary()
        return {
            "workers": processes,
            **s,
            "hub_cpu_ms_per_req": 1000 * cpu / max(1, s["ok"]),
            "hub_cpu_cores": cpu / s["elapsed_s"],
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    one = next((r["req_per_s"] for r in rows if r["workers"] == 1), None)
    out = [
        f"Command: `python -m bench.process_scaling --workers {' '.join(map(str, args.workers))} --quota {args.quota} "
        f"--sites {args.sites} --senders {args.senders} --duration {args.duration:g}`; each hub process held to "
        f"{args.quota:g} of a CPU, {args.senders} senders per process.",
        "",
        "| hub processes | heartbeats/s | x one process | p50 ms | p99 ms | statuses | hub CPU ms / heartbeat "
        "| hub CPU used (cores) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = f"{r['req_per_s'] / one:.2f}x" if one else "—"
        statuses = ", ".join(f"{k}: {v}" for k, v in r["statuses"].items())
        out.append(
            f"| {r['workers']} | {r['req_per_s']:,.0f} | {ratio} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {statuses} | "
            f"{r['hub_cpu_ms_per_req']:.2f} | {r['hub_cpu_cores']:.2f} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--quota", type=float, default=0.15, help="share of one CPU each hub process may use")
    ap.add_argument("--sites", type=int, default=1000)
    ap.add_argument("--senders", type=int, default=32, help="closed-loop senders per hub process")
    ap.add_argument("--duration", type=float, default=15)
    args = ap.parse_args(argv)
    if not os.access(CGROUP_CPU, os.W_OK):
        raise SystemExit(f"{CGROUP_CPU} is not writable: this bench needs root and the cgroup v1 cpu controller")
    rows = []
    for w in args.workers:
        rows.append(run_one(w, args.sites, args.senders, args.duration, args.quota))
        print({k: rows[-1][k] for k in ("workers", "req_per_s", "p99_ms", "hub_cpu_ms_per_req", "hub_cpu_cores")}, flush=True)
    print(table(rows, args))
    return rows


if __name__ == "__main__":
    main()
