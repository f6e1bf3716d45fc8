"""Heartbeat load test (issue 10): a real hub process, N simulated agents over real HTTP.

For each database (``--db sqlite|postgres``), worker count (``--workers``) and network
size (``--sites``), the bench seeds N enrolled, approved sites, each with its own agent
credential and token (``bench/loadseed.py``), starts ``cryomesh hub serve`` and measures:

1. warm-up: every agent heartbeats once (so every site has a snapshot);
2. views: ``GET /api/v1/network/summary`` and ``/api/v1/dashboard/overview`` as network
   admin (p50, bytes) over N sites;
3. closed loop at each ``--senders`` C, ``--duration`` seconds each, in this order:
   ``GET /healthz`` (the baseline: HTTP and framework alone), ``GET /api/v1/whoami`` with
   an agent's token (the authenticated no-op: the cheapest authenticated GET an agent may
   call; token check only), and the heartbeat. After each phase the hub must answer
   ``/healthz`` and an agent's ``/api/v1/whoami`` within ``--recover`` s, or it is restarted
   and the phase is marked so;
4. open loop (``--open-loop``): N/15 heartbeats a second (every site at the default 15 s
   interval) for ``--open-duration`` seconds, at most ``--max-in-flight`` outstanding;
5. burst (``--burst``): the hub is restarted and all N agents heartbeat at once, retrying
   as the agent does; time until every agent had a 2xx, then ``/healthz`` and an agent's
   ``/api/v1/whoami`` (recovery).

Reported per phase: req/s (2xx only), p50/p99/max latency, status codes, client errors
(timeouts, refused connections), hub CPU ms per request and RSS (peak and after). The
client runs on the same machine as the hub, so it competes with it for CPU: compare the
ratios to the baselines of the same run, not milliseconds across machines.

    .venv/bin/python -m bench.heartbeat_load --quick            # about two minutes
    .venv/bin/python -m bench.heartbeat_load --sites 1000 10000 --senders 16 64 256 \
        --open-loop --burst --db sqlite postgres --workers 1 4

Ctrl-C or SIGTERM stops the hub (and PostgreSQL) before exiting.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bench import loadgen
from bench.loadhub import LoadHub, raise_on_sigterm, workers_supported
from bench.loadreport import section
from bench.loadseed import SimAgent, seed
from tests.helpers import hub_settings
from tests.services import free_port, postgres_server

#: A token must outlive the whole run (the default 600 s would expire mid-run at 10,000 sites).
TOKEN_LIFETIME_S = 6 * 3600


@contextmanager
def database(kind: str, tmp: Path, name: str, durable: bool = True) -> Iterator[str]:
    """A fresh database; PostgreSQL with its durable defaults (fsync, synchronous_commit)
    unless ``durable`` is False (the tests' throw-away settings)."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'hub.db'}"
        return
    with postgres_server(durable=durable) as pg:
        pg.admin(f"CREATE DATABASE {name}")
        yield pg.url(name)


def phase(hub: LoadHub, name: str, coro: Any, recover_s: float, token: str) -> dict[str, Any]:
    """Run one load phase; hub CPU per request and RSS around it; then the hub must answer
    ``/healthz`` and an agent's ``/api/v1/whoami`` (with ``token``) within ``recover_s``
    each, or it is restarted."""
    before = hub.usage()
    client_cpu = time.process_time()
    hub.peak_rss_mb = before.rss_mb
    stop = False

    async def sample() -> None:
        while not stop:
            hub.usage()
            await asyncio.sleep(0.25)

    async def run() -> Any:
        nonlocal stop
        sampler = asyncio.create_task(sample())
        try:
            return await coro
        finally:
            stop = True
            await sampler

    result = asyncio.run(run())
    after = hub.usage()
    stats = result.stats if isinstance(result, loadgen.BurstResult) else result
    out = {"phase": name, **stats.summary()}
    out["client_cpu_share"] = (time.process_time() - client_cpu) / stats.elapsed_s if stats.elapsed_s else None
    out["hub_cpu_ms_per_req"] = (after.cpu_s - before.cpu_s) * 1000 / stats.answered if stats.answered else None
    if after.db_cpu_s is not None and before.db_cpu_s is not None and stats.answered:
        out["db_cpu_ms_per_req"] = (after.db_cpu_s - before.db_cpu_s) * 1000 / stats.answered
    out["hub_rss_peak_mb"] = hub.peak_rss_mb
    out["hub_rss_after_mb"] = after.rss_mb
    if isinstance(result, loadgen.BurstResult):
        out.update(
            agents=len(result.answered_s) + result.refused + result.unanswered,
            all_answered_s=result.answered_s[-1] if not result.unanswered and not result.refused else None,
            answered_p50_s=result.answered_s[len(result.answered_s) // 2] if result.answered_s else None,
            refused=result.refused,
            unanswered=result.unanswered,
        )
    # Recovered: the process answers, and so does a request that needs the database.
    out["healthz_after_s"] = hub.answers("/healthz", recover_s)
    out["whoami_after_s"] = hub.answers("/api/v1/whoami", recover_s, token) if out["healthz_after_s"] is not None else None
    if out["whoami_after_s"] is None:  # the hub did not recover by itself: restart it so the next phase measures something
        out["hub_restarted"] = True
        out["hub_stop_s"] = hub.stop(grace_s=recover_s)
        hub.start()
    print(json.dumps(out), flush=True)
    return out


def measure(args: argparse.Namespace, hub: LoadHub, agents: list[SimAgent], result: dict[str, Any]) -> None:
    phases: list[dict[str, Any]] = result["phases"]
    url, t, recover, token = hub.url, args.timeout, args.recover, agents[0].token
    warm = loadgen.closed_loop(url, loadgen.heartbeats(agents), 16, 600, t, count=len(agents))
    phases.append({**phase(hub, "warm-up (each agent once)", warm, recover, token), "senders": 16})
    admin_token = hub.admin_token()
    result["views"] = {
        path: asyncio.run(loadgen.timed_get(url, path, admin_token, args.view_requests, t))
        for path in ("/api/v1/network/summary", "/api/v1/dashboard/overview")
    }
    print(json.dumps(result["views"]), flush=True)
    kinds = (("healthz", loadgen.healthz), ("whoami", loadgen.whoami(agents)), ("heartbeat", loadgen.heartbeats(agents)))
    for c in args.senders:
        for name, make in kinds:
            phases.append({**phase(hub, name, loadgen.closed_loop(url, make, c, args.duration, t), recover, token), "senders": c})
    if args.open_loop:
        rate = args.open_rate or len(agents) / 15
        run = loadgen.open_loop(url, loadgen.heartbeats(agents), rate, args.open_duration, args.max_in_flight, t)
        phases.append(
            {**phase(hub, "open-loop heartbeat", run, recover, token), "rate": rate, "max_in_flight": args.max_in_flight}
        )
    if args.burst:
        result["stop_before_burst_s"] = hub.stop()
        hub.start()
        token_endpoint = hub.settings.token_endpoint if args.burst_new_tokens else None
        connections = min(len(agents), args.burst_connections)
        storm = loadgen.burst(url, agents, connections, args.burst_deadline, t, args.backoff_cap, token_endpoint)
        name = "burst (new tokens first)" if token_endpoint else "burst"
        phases.append({**phase(hub, name, storm, max(recover, 30), token), "connections": connections})


def run_network(args: argparse.Namespace, db: str, workers: int, n: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"cryomesh-load-{db}-{n}-"))
    try:
        with database(db, tmp, f"load_{n}_{workers}", durable=not args.pg_no_fsync) as url:
            port = free_port()
            settings = hub_settings(url, tmp / "data", port, token_lifetime_s=TOKEN_LIFETIME_S, sweep_interval_s=5)
            seeded = seed(settings, n, TOKEN_LIFETIME_S)
            print(f"# {db}, {workers} worker(s), {n} sites: seeded in {seeded.seed_s:.1f} s, "
                  f"tokens in {seeded.token_s:.1f} s", flush=True)  # fmt: skip
            hub = LoadHub(tmp, settings, seeded.admin, workers, port)
            result: dict[str, Any] = {"db": db, "workers": workers, "sites": n, "seed_s": seeded.seed_s, "phases": []}
            if db == "postgres":
                result["pg_fsync"] = not args.pg_no_fsync
            try:
                result["start_s"] = hub.start()
                measure(args, hub, seeded.agents, result)
            finally:
                result["stop_s"] = hub.stop()
            return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


#: What ``make bench`` runs (``--hub-load quick|full``).
QUICK = ["--quick"]
FULL = ["--sites", "1000", "10000", "--senders", "16", "64", "256", "--open-loop", "--burst", "--db", "sqlite", "postgres",
        "--workers", "1", "4"]  # fmt: skip


def docs_section(argv: list[str]) -> str:
    """Run the load test with ``argv`` and return its section of docs/benchmarks.md."""
    return section(main(argv), "python -m bench.heartbeat_load " + " ".join(argv))


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick", action="store_true", help="1,000 sites, 16 and 64 senders, 5 s phases, short open loop and burst"
    )
    parser.add_argument("--sites", type=int, nargs="+", default=[1000])
    parser.add_argument("--senders", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--duration", type=float, default=20, help="seconds per closed-loop phase")
    parser.add_argument("--timeout", type=float, default=30, help="client timeout per request, seconds")
    parser.add_argument("--db", nargs="+", choices=["sqlite", "postgres"], default=["sqlite"])
    parser.add_argument(
        "--pg-no-fsync",
        action="store_true",
        help="PostgreSQL with fsync and synchronous_commit off, as the tests run it (default: PostgreSQL's durable defaults)",
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1], help="hub processes (`hub serve --workers N`)")
    parser.add_argument("--open-loop", action="store_true", help="a fixed-rate run: every site at the default 15 s interval")
    parser.add_argument("--open-rate", type=float, help="requests per second of the open loop (default: sites / 15)")
    parser.add_argument("--open-duration", type=float, default=120)
    parser.add_argument("--max-in-flight", type=int, default=50)
    parser.add_argument("--burst", action="store_true", help="all agents at once right after a hub restart")
    parser.add_argument("--burst-deadline", type=float, default=300, help="give up on agents not answered by then, seconds")
    parser.add_argument("--burst-connections", type=int, default=1000, help="client connections the burst may open")
    parser.add_argument("--backoff-cap", type=float, default=60, help="longest retry wait (the agent's max_backoff_s)")
    parser.add_argument(
        "--burst-new-tokens",
        action="store_true",
        help="in the burst, each agent first fetches a new token (private_key_jwt), as a restarted agent does",
    )
    parser.add_argument("--recover", type=float, default=30, help="after each phase, wait this long for /healthz, seconds")
    parser.add_argument("--view-requests", type=int, default=20)
    parser.add_argument("--json", type=Path, help="write every result here")
    parser.add_argument("--report", type=Path, help="only print the Markdown section for results saved with --json")
    args = parser.parse_args(argv)
    if args.report:
        print(section(json.loads(args.report.read_text()), f"python -m bench.heartbeat_load (results in {args.report})"))
        return []
    if args.quick:
        args.sites, args.senders, args.duration, args.timeout = [1000], [16, 64], 5.0, 10.0
        args.open_loop, args.open_duration, args.burst, args.burst_deadline = True, 15.0, True, 60.0
        args.view_requests, args.recover = 5, 10.0
    raise_on_sigterm()
    results = []
    for db in args.db:
        for workers in args.workers:
            if workers > 1 and not workers_supported():
                print(f"# skipped {db} with {workers} workers: this hub's `cryomesh hub serve` has no --workers option")
                continue
            for n in args.sites:
                try:
                    results.append(run_network(args, db, workers, n))
                except pytest.skip.Exception as exc:
                    print(f"# skipped {db}: {exc.msg}")
                except RuntimeError as exc:  # the hub would not start (e.g. several workers on SQLite)
                    print(f"# {db}, {workers} worker(s), {n} sites: {exc}")
                    results.append({"db": db, "workers": workers, "sites": n, "error": str(exc)})
                if args.json:
                    args.json.write_text(json.dumps(results, indent=1))
    if argv is None:  # from the command line; bench.run prints the section itself
        print(section(results, "python -m bench.heartbeat_load " + " ".join(sys.argv[1:])))
    return results


if __name__ == "__main__":
    # ``kill -USR1`` prints every thread's stack: how a run that will not stop is diagnosed.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    main()
