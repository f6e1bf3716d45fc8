"""GA4GH TES listing cost against the job listing it is built on, in the same run.

A real hub process (SQLite) with one site and N tasks submitted through TES (they stay
queued: no agent). One client times, request by request, 50 items a page:

- ``GET /api/v1/jobs?limit=50`` — the baseline: the same jobs through the cryomesh API;
- ``GET /ga4gh/tes/v1/tasks`` in the MINIMAL, BASIC and FULL views;
- the MINIMAL view filtered by a tag (``tag_key``/``tag_value``).

p50/p99 in milliseconds and the p50 as a multiple of the baseline's.

    .venv/bin/python -m bench.ga4gh --tasks 500 --rounds 100
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import httpx

from bench.common import bench_hub


def _time(client: httpx.Client, path: str, params: dict[str, str | int], rounds: int) -> tuple[float, float]:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        r = client.get(path, params=params)
        samples.append((time.perf_counter() - start) * 1000)
        assert r.status_code == 200, r.text
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    with bench_hub("cryomesh-bench-ga4gh-") as hub:
        token = httpx.post(
            f"{hub.url}/oauth/token", data={"grant_type": "client_credentials"},
            auth=(hub.admin["client_id"], hub.admin["client_secret"]),
        ).json()["access_token"]  # fmt: skip
        with httpx.Client(base_url=hub.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as admin:
            site = {"name": "bench", "institution": "kek", "display_name": "bench", "country": "JP",
                    "partitions": [{"name": "cpu", "node_count": 4, "cores_per_node": 64, "memory_gb_per_node": 256}],
                    "software": [{"name": "image:python:3.11-slim", "version": "host"}]}  # fmt: skip
            assert admin.post("/api/v1/sites", json=site).status_code == 201
            person = admin.post("/api/v1/accounts", json={"name": "r", "role": "researcher", "institution": "kek"}).json()
        token = httpx.post(
            f"{hub.url}/oauth/token", data={"grant_type": "client_credentials"},
            auth=(person["client_id"], person["client_secret"]),
        ).json()["access_token"]  # fmt: skip
        with httpx.Client(base_url=hub.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
            for i in range(args.tasks):
                task = {
                    "name": f"task-{i}", "tags": {"batch": str(i % 10)},
                    "inputs": [{"path": "/data/in.txt", "content": "x" * 100}],
                    "executors": [{"image": "python:3.11-slim", "command": ["cat", "/data/in.txt"]}],
                }  # fmt: skip
                r = c.post("/ga4gh/tes/v1/tasks", json=task)
                assert r.status_code == 200, r.text
            cases = [
                ("jobs API (baseline)", "/api/v1/jobs", {"limit": 50}),
                ("TES MINIMAL", "/ga4gh/tes/v1/tasks", {"page_size": 50, "view": "MINIMAL"}),
                ("TES BASIC", "/ga4gh/tes/v1/tasks", {"page_size": 50, "view": "BASIC"}),
                ("TES FULL", "/ga4gh/tes/v1/tasks", {"page_size": 50, "view": "FULL"}),
                ("TES MINIMAL, tag filter", "/ga4gh/tes/v1/tasks", {"page_size": 50, "tag_key": "batch", "tag_value": "3"}),
            ]
            results = [(name, *_time(c, path, params, args.rounds)) for name, path, params in cases]
    base = results[0][1]
    print(f"machine: {platform.machine()} {platform.system()} {platform.release()}, python {platform.python_version()}")
    print(f"{args.tasks} tasks, {args.rounds} rounds, 50 per page")
    print("| request | p50 ms | p99 ms | p50 / baseline |")
    print("|---|---|---|---|")
    for name, p50, p99 in results:
        print(f"| {name} | {p50:.1f} | {p99:.1f} | {p50 / base:.2f} |")


if __name__ == "__main__":
    main()
