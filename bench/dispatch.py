"""Dispatch latency: from a researcher's submit to the agent holding the assignment.

A real hub process (SQLite) and ten sites whose agents long-poll it (simulated in one
asyncio process with real tokens and real HTTP). Each job is submitted on its own; the
clock stops when the site's poll returns it. Baseline: a ``/healthz`` round trip.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import UTC, datetime

import httpx
from authlib.oauth2.rfc7523 import private_key_jwt_sign

from bench.common import bench_hub
from site_agent.credentials import load_key
from site_agent.enroll import enroll


def pct(xs: list[float], p: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(len(xs) * p))]


async def run(n_sites: int = 10, n_jobs: int = 200) -> dict[str, float]:
    with bench_hub("cryomesh-dispatch-", sweep_interval_s="60") as bh:
        url, tmp, admin = bh.url, bh.tmp, bh.admin
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            tok = (
                await http.post(
                    "/oauth/token", data={"grant_type": "client_credentials"}, auth=(admin["client_id"], admin["client_secret"])
                )
            ).json()
            auth = {"Authorization": f"Bearer {tok['access_token']}"}
            acct = (
                await http.post("/api/v1/accounts", headers=auth, json={"name": "r", "role": "researcher", "institution": "kek"})
            ).json()
            rtok = (
                await http.post(
                    "/oauth/token", data={"grant_type": "client_credentials"}, auth=(acct["client_id"], acct["client_secret"])
                )
            ).json()
            rauth = {"Authorization": f"Bearer {rtok['access_token']}"}
            agent_auth = {}
            for i in range(n_sites):
                name = f"site-{i:02d}"
                await http.post(
                    "/api/v1/sites",
                    headers=auth,
                    json={
                        "name": name,
                        "institution": "x",
                        "display_name": name,
                        "country": "JP",
                        "partitions": [{"name": "p", "node_count": 100, "cores_per_node": 64, "memory_gb_per_node": 512}],
                    },
                )
                code = (await http.post(f"/api/v1/sites/{name}/enrollment-codes", headers=auth, json={})).json()["code"]
                creds = await asyncio.to_thread(enroll, url, code, tmp / name)
                await http.post(f"/api/v1/enrollments/{creds.enrollment_id}/approve", headers=auth)
                assertion = private_key_jwt_sign(
                    load_key(tmp / name),
                    client_id=creds.client_id,
                    token_endpoint=f"{url}/oauth/token",
                    alg="ES256",
                    claims={"exp": int(time.time()) + 60},
                )
                t = (
                    await http.post(
                        "/oauth/token",
                        data={
                            "grant_type": "client_credentials",
                            "client_assertion": assertion,
                            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                        },
                    )
                ).json()
                agent_auth[name] = {"Authorization": f"Bearer {t['access_token']}"}
                hb = {
                    "agent_version": "b",
                    "interval_s": 300,
                    "sampled_at": datetime.now(UTC).isoformat(),
                    "backend": "slurm",
                    "partitions": [
                        {
                            "name": "p",
                            "cpus_total": 6400,
                            "cpus_allocated": 0,
                            "cpus_idle": 6400,
                            "memory_total_mb": 10**7,
                            "memory_free_mb": 10**7,
                        }
                    ],
                }
                r = await http.post(f"/api/v1/sites/{name}/heartbeat", headers=agent_auth[name], json=hb)
                assert r.status_code == 200, r.text
            received: dict[str, float] = {}
            arrived: dict[str, asyncio.Event] = {}

            async def poller(name: str) -> None:
                async with httpx.AsyncClient(base_url=url, timeout=60, headers=agent_auth[name]) as c:
                    while True:
                        r = await c.get(f"/api/v1/sites/{name}/assignments", params={"wait": 20})
                        now = time.perf_counter()
                        for a in r.json()["assignments"]:
                            received.setdefault(a["job_id"], now)
                            arrived.setdefault(a["job_id"], asyncio.Event()).set()
                            await c.post(f"/api/v1/attempts/{a['attempt_id']}/claim")

            pollers = [asyncio.create_task(poller(n)) for n in agent_auth]
            await asyncio.sleep(1)
            base = []
            for _ in range(n_jobs):
                t0 = time.perf_counter()
                await http.get("/healthz")
                base.append((time.perf_counter() - t0) * 1000)
            latencies, submits = [], []
            body = {"name": "d", "kind": "generic.command", "command": ["true"], "resources": {"cpus": 1}}
            for _ in range(n_jobs):
                t0 = time.perf_counter()
                r = await http.post("/api/v1/jobs", headers=rauth, json=body)
                t1 = time.perf_counter()
                job_id = r.json()["id"]
                await asyncio.wait_for(arrived.setdefault(job_id, asyncio.Event()).wait(), 30)
                latencies.append((received[job_id] - t0) * 1000)
                submits.append((t1 - t0) * 1000)
            for p in pollers:
                p.cancel()
    return {
        "baseline_p50": statistics.median(base),
        "baseline_p99": pct(base, 0.99),
        "submit_p50": statistics.median(submits),
        "submit_p99": pct(submits, 0.99),
        "dispatch_p50": statistics.median(latencies),
        "dispatch_p99": pct(latencies, 0.99),
        "jobs": n_jobs,
        "sites": n_sites,
    }


if __name__ == "__main__":
    print(asyncio.run(run()))
