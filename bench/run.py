"""Hub hot paths over real HTTP, against a baseline measured in the same run.

A real hub process (`cryomesh hub serve`, SQLite in a temp dir) gets N sites, each with an
enrolled agent. One client then times, request by request:

- ``GET /healthz`` — the baseline: the cost of HTTP and the framework alone;
- ``POST /oauth/token`` with a ``private_key_jwt`` assertion (ES256 verify, replay check, ES256 sign);
- ``POST /api/v1/sites/{site}/heartbeat`` — token check, snapshot, history bucket, commit;
- ``GET /api/v1/network/summary`` over N sites.

Numbers are p50/p99 in milliseconds and the p50 as a multiple of the baseline's, which
carries across machines better than milliseconds do. The heartbeat rate one hub can take
is 1000 / p50 per second from one client; a site heartbeats every 15 s by default.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from authlib.oauth2.rfc7523 import private_key_jwt_sign

from site_agent.credentials import load_key
from site_agent.enroll import enroll


def heartbeat(i: int) -> dict[str, Any]:
    return {
        "agent_version": "bench",
        "interval_s": 15,
        "sampled_at": datetime.now(UTC).isoformat(),
        "backend": "slurm",
        "partitions": [
            {
                "name": "gpu",
                "cpus_total": 256,
                "cpus_allocated": i % 256,
                "cpus_idle": 256 - i % 256,
                "memory_total_mb": 2_048_000,
                "memory_free_mb": 1_000_000,
                "gpus": [{"model": "a100", "total": 16, "free": i % 17}],
                "jobs_pending": 4,
                "jobs_running": 9,
            },
            {
                "name": "cpu",
                "cpus_total": 1280,
                "cpus_allocated": 600,
                "cpus_idle": 680,
                "memory_total_mb": 5_120_000,
                "memory_free_mb": 2_000_000,
                "jobs_pending": 12,
                "jobs_running": 40,
            },
        ],
        "storage": [{"name": "scratch", "path": "/gpfs", "total_bytes": 10**15, "free_bytes": 4 * 10**14}],
    }


def timed(n: int, fn: Any) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def pct(xs: list[float], p: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(len(xs) * p))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sites", type=int, default=100)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="cryomesh-bench-"))
    port = int(
        subprocess.check_output(
            [sys.executable, "-c", "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])"]
        )
    )
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "CRYOMESH_DATA_DIR": str(tmp),
        "CRYOMESH_PUBLIC_URL": url,
        "CRYOMESH_PORT": str(port),
        "CRYOMESH_CREDENTIALS": str(tmp / "admin.json"),
        "CRYOMESH_LOG_LEVEL": "WARNING",
    }
    cli = [sys.executable, "-m", "cryomesh_cli.main"]
    subprocess.run([*cli, "admin", "bootstrap", "--name", "bench"], env=env, check=True, capture_output=True)
    import json

    admin = json.loads((tmp / "admin.json").read_text())
    hub = subprocess.Popen([*cli, "hub", "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        http = httpx.Client(base_url=url, timeout=30)
        tok = http.post(
            "/oauth/token", data={"grant_type": "client_credentials"}, auth=(admin["client_id"], admin["client_secret"])
        ).json()
        auth = {"Authorization": f"Bearer {tok['access_token']}"}
        agents = []
        for i in range(args.sites):
            name = f"site-{i:04d}"
            http.post(
                "/api/v1/sites",
                headers=auth,
                json={"name": name, "institution": f"inst-{i % 20}", "display_name": name, "country": "JP"},
            )
            code = http.post(f"/api/v1/sites/{name}/enrollment-codes", headers=auth, json={}).json()["code"]
            creds = enroll(url, code, tmp / name)
            http.post(f"/api/v1/enrollments/{creds.enrollment_id}/approve", headers=auth)
            agents.append((name, creds.client_id, load_key(tmp / name)))
        token_endpoint = f"{url}/oauth/token"

        def get_token(i: int) -> str:
            _, client_id, key = agents[i % len(agents)]
            assertion = private_key_jwt_sign(
                key, client_id=client_id, token_endpoint=token_endpoint, alg="ES256", claims={"exp": int(time.time()) + 60}
            )
            r = http.post(
                "/oauth/token",
                data={
                    "grant_type": "client_credentials",
                    "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    "client_assertion": assertion,
                },
            )
            assert r.status_code == 200, r.text
            return str(r.json()["access_token"])

        agent_tokens = [get_token(i) for i in range(len(agents))]

        def beat(i: int) -> None:
            r = http.post(
                f"/api/v1/sites/{agents[i % len(agents)][0]}/heartbeat",
                json=heartbeat(i),
                headers={"Authorization": f"Bearer {agent_tokens[i % len(agents)]}"},
            )
            assert r.status_code == 200, r.text

        for i in range(len(agents)):  # every site has a snapshot before the summary is timed
            beat(i)

        def summary(_: int) -> None:
            r = http.get("/api/v1/network/summary", headers=auth)
            assert r.status_code == 200 and len(r.json()["sites"]) == args.sites

        n = args.requests
        results = {
            "GET /healthz (baseline)": timed(n, lambda _: http.get("/healthz")),
            "POST /oauth/token (private_key_jwt)": timed(n, get_token),
            "POST heartbeat": timed(n, beat),
            f"GET /api/v1/network/summary ({args.sites} sites)": timed(max(50, n // 5), summary),
        }
    finally:
        hub.terminate()
        hub.wait(15)

    base = statistics.median(results["GET /healthz (baseline)"])
    rows = []
    for name, xs in results.items():
        rows.append(
            f"| {name} | {len(xs)} | {statistics.median(xs):.2f} | {pct(xs, 0.99):.2f} | {statistics.median(xs) / base:.1f}x |"
        )
    beat_p50 = statistics.median(results["POST heartbeat"])
    text = f"""# Benchmarks

## Hub hot paths (`make bench`)

Command: `make bench` (= `python -m bench.run --sites {args.sites} --requests {args.requests}`).
Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()},
{platform.system()} {platform.release()};
run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. One hub process (`cryomesh hub serve`, SQLite in WAL mode), one client
on the same machine, requests one after another over loopback HTTP.

| request | n | p50 ms | p99 ms | p50 vs baseline |
|---|---|---|---|---|
{chr(10).join(rows)}

Reading: one hub process takes about {1000 / beat_p50:.0f} heartbeats a second from one client, so at the
default 15 s interval it keeps up with roughly {15 * 1000 / beat_p50:.0f} sites before heartbeats queue. Agents fetch a token
once per token lifetime (600 s by default), not per request.
"""
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
