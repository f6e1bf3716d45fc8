"""Simulated agents over real HTTP: closed loop, open loop and a reconnect storm.

- **Closed loop**: C senders, each sending its next request as soon as the last one was
  answered, for a fixed time. Throughput is what the hub (and this client) can do at
  that concurrency.
- **Open loop**: requests at a fixed rate whatever the answers, as a network of agents on
  a timer sends them; at most ``max_in_flight`` outstanding (a request due while that
  many are outstanding is not sent, and is counted as dropped).
- **Burst**: every agent at once, each retrying like ``site_agent.daemon``'s heartbeat loop
  (exponential backoff with full jitter from ``site_agent.backoff.Backoff``, a
  ``Retry-After`` wins) until the hub has answered it 2xx.

Every request is made by one simulated agent with its own token for its own site.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import aiohttp
from authlib.oauth2.rfc7523 import private_key_jwt_sign

from bench.loadseed import SimAgent
from site_agent.backoff import Backoff
from site_agent.client import RETRYABLE_STATUS

#: method, path, headers, body (bytes) of the i-th request of a phase.
Request = tuple[str, str, dict[str, str], bytes | None]
MakeRequest = Callable[[int], Request]


def heartbeat_payload(i: int) -> dict[str, Any]:
    """A snapshot as ``site_agent``'s Slurm discovery reports it (``Agent.snapshot``): two
    partitions, site-wide totals, one storage area, no attempts held."""
    busy = i % 64
    return {
        "agent_version": "0.1.0",
        "interval_s": 15,
        "sampled_at": datetime.now(UTC).isoformat(),
        "backend": "slurm",
        "partitions": [
            {
                "name": "gpu",
                "cpus_total": 256,
                "cpus_allocated": busy,
                "cpus_idle": 256 - busy,
                "memory_total_mb": 2_048_000,
                "memory_free_mb": 1_500_000,
                "gpus": [{"model": "a100", "total": 16, "free": 16 - busy % 17}],
                "nodes_total": 4,
                "nodes_available": 4,
                "jobs_pending": i % 5,
                "jobs_running": busy % 9,
            },
            {
                "name": "cpu",
                "cpus_total": 1280,
                "cpus_allocated": 600,
                "cpus_idle": 680,
                "memory_total_mb": 5_120_000,
                "memory_free_mb": 2_000_000,
                "nodes_total": 20,
                "nodes_available": 20,
                "jobs_pending": 12,
                "jobs_running": 40,
            },
        ],
        "storage": [{"name": "scratch", "path": "/gpfs/scratch", "total_bytes": 10**15, "free_bytes": 4 * 10**14}],
        "totals": {
            "cpus_total": 1536,
            "cpus_free": 936 - busy,
            "memory_total_mb": 7_168_000,
            "memory_free_mb": 3_500_000,
            "gpus": {"a100": {"total": 16, "free": 16 - busy % 17}},
            "jobs_pending": 12 + i % 5,
        },
        "attempts": [],
    }


def heartbeat_request(a: SimAgent, token: str, i: int) -> Request:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    return "POST", f"/api/v1/sites/{a.site}/heartbeat", headers, json.dumps(heartbeat_payload(i)).encode()


def token_request(a: SimAgent, token_endpoint: str) -> Request:
    """``POST /oauth/token`` with a ``private_key_jwt`` assertion, as ``site_agent.client`` sends it."""
    assertion = private_key_jwt_sign(
        a.key, client_id=a.client_id, token_endpoint=token_endpoint, alg="ES256", claims={"exp": int(time.time()) + 60}
    )
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion.decode() if isinstance(assertion, bytes) else assertion,
    }
    return "POST", "/oauth/token", {"Content-Type": "application/x-www-form-urlencoded"}, urlencode(form).encode()


def heartbeats(agents: list[SimAgent]) -> MakeRequest:
    def make(i: int) -> Request:
        a = agents[i % len(agents)]
        return heartbeat_request(a, a.token, i)

    return make


def whoami(agents: list[SimAgent]) -> MakeRequest:
    """The authenticated no-op: ``GET /api/v1/whoami`` checks the token like every agent
    call (signature, client and site rows) and reads nothing else."""

    def make(i: int) -> Request:
        return "GET", "/api/v1/whoami", {"Authorization": f"Bearer {agents[i % len(agents)].token}"}, None

    return make


def healthz(i: int) -> Request:
    return "GET", "/healthz", {}, None


@dataclass
class Stats:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # client side: timeouts, refused connections
    dropped: int = 0  # open loop: due while max_in_flight were outstanding
    elapsed_s: float = 0.0

    def record(self, t0: float, status: int | None, error: str | None = None) -> None:
        self.latencies_ms.append((time.perf_counter() - t0) * 1000)
        if status is not None:
            self.statuses[status] += 1
        if error is not None:
            self.errors[error] += 1

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    @property
    def ok(self) -> int:
        return sum(n for s, n in self.statuses.items() if 200 <= s < 300)

    def pct(self, p: float) -> float:
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")

    def summary(self) -> dict[str, Any]:
        return {
            "requests": len(self.latencies_ms),
            "ok": self.ok,
            "req_per_s": self.ok / self.elapsed_s if self.elapsed_s else 0.0,
            "p50_ms": self.pct(0.50),
            "p99_ms": self.pct(0.99),
            "max_ms": max(self.latencies_ms, default=float("nan")),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "client_errors": dict(self.errors),
            "dropped": self.dropped,
            "elapsed_s": self.elapsed_s,
        }


@dataclass(frozen=True)
class Answer:
    """What the bench keeps of a response (the body read in full)."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    def json(self) -> Any:
        return json.loads(self.content)


def _client(url: str, connections: int, timeout_s: float) -> aiohttp.ClientSession:
    """aiohttp, not httpx: with httpx the client itself took a whole CPU at a few hundred
    requests a second, and it shares this machine with the hub it measures (at 64 senders it
    was the bottleneck: /healthz, which costs the hub 0.3 ms, stopped at ~420/s)."""
    # No wait for a connection is counted: waiting for one of our own is not the hub's fault.
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections, force_close=False)
    return aiohttp.ClientSession(
        base_url=url, connector=connector, timeout=aiohttp.ClientTimeout(total=None, sock_read=timeout_s, sock_connect=timeout_s)
    )


async def _send(http: aiohttp.ClientSession, req: Request, stats: Stats) -> Answer | None:
    method, path, headers, body = req
    t0 = time.perf_counter()
    try:
        async with http.request(method, path, headers=headers, data=body) as r:
            answer = Answer(r.status, r.headers, await r.read())
    except (aiohttp.ClientError, TimeoutError) as exc:
        stats.record(t0, None, type(exc).__name__)
        return None
    stats.record(t0, answer.status_code)
    return answer


async def closed_loop(
    url: str, make: MakeRequest, senders: int, duration_s: float, timeout_s: float, count: int | None = None
) -> Stats:
    """``senders`` at once for ``duration_s``, or until ``count`` requests were sent."""
    stats = Stats()
    counter = itertools.count()
    async with _client(url, senders, timeout_s) as http:
        t0 = time.perf_counter()
        deadline = t0 + duration_s

        async def sender() -> None:
            while time.perf_counter() < deadline:
                i = next(counter)
                if count is not None and i >= count:
                    return
                await _send(http, make(i), stats)

        await asyncio.gather(*(sender() for _ in range(senders)))
        stats.elapsed_s = time.perf_counter() - t0
    return stats


async def open_loop(url: str, make: MakeRequest, rate: float, duration_s: float, max_in_flight: int, timeout_s: float) -> Stats:
    stats = Stats()
    in_flight: set[asyncio.Task[Any]] = set()
    async with _client(url, max_in_flight, timeout_s) as http:
        t0 = time.perf_counter()
        for i in range(int(rate * duration_s)):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(in_flight) >= max_in_flight:
                stats.dropped += 1
                continue
            task = asyncio.create_task(_send(http, make(i), stats))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        if in_flight:
            await asyncio.wait(set(in_flight))
        stats.elapsed_s = time.perf_counter() - t0
    return stats


@dataclass
class BurstResult:
    stats: Stats
    answered_s: list[float]  # per agent: seconds from the start until its first 2xx
    refused: int  # agents that got a 4xx they cannot fix (the agent would stop)
    unanswered: int  # agents still without a 2xx at the deadline
    elapsed_s: float


async def burst(
    url: str,
    agents: list[SimAgent],
    connections: int,
    deadline_s: float,
    timeout_s: float,
    backoff_cap_s: float,
    token_endpoint: str | None = None,
) -> BurstResult:
    """Every agent at once until each has had a 2xx heartbeat answer; with ``token_endpoint``,
    each first fetches a new token by ``private_key_jwt`` (an agent process that restarted)."""
    stats = Stats()
    answered: list[float] = []
    refused = 0
    async with _client(url, connections, timeout_s) as http:
        t0 = time.perf_counter()

        slots = asyncio.Semaphore(connections)  # waiting for one of our connections is not part of a request's latency

        async def until_answered(make: Callable[[], Request], backoff: Backoff) -> Answer | None:
            """Retry as the agent does until an answer it does not retry (returned) or the deadline (None)."""
            while True:
                async with slots:
                    if time.perf_counter() - t0 >= deadline_s:
                        return None
                    r = await _send(http, make(), stats)
                if r is not None and r.status_code not in RETRYABLE_STATUS:
                    return r
                left = deadline_s - (time.perf_counter() - t0)
                await asyncio.sleep(max(0.0, min(backoff.next_delay(_retry_after(r)), left)))

        async def agent(i: int) -> None:
            nonlocal refused
            a, token = agents[i], agents[i].token
            backoff = Backoff(base=1.0, cap=backoff_cap_s)  # as site_agent.daemon: base min(1 s, interval)
            if token_endpoint:
                r = await until_answered(lambda: token_request(a, token_endpoint), backoff)
                if r is None or not r.is_success:
                    refused += r is not None
                    return
                token = str(r.json()["access_token"])
                backoff.reset()
            r = await until_answered(lambda: heartbeat_request(a, token, i), backoff)
            if r is not None and r.is_success:
                answered.append(time.perf_counter() - t0)
            elif r is not None:
                refused += 1

        await asyncio.gather(*(agent(i) for i in range(len(agents))))
        elapsed = time.perf_counter() - t0
    stats.elapsed_s = elapsed
    return BurstResult(stats, sorted(answered), refused, len(agents) - len(answered) - refused, elapsed)


def _retry_after(r: Answer | None) -> float | None:
    try:
        return float(r.headers["Retry-After"]) if r is not None and "Retry-After" in r.headers else None
    except ValueError:
        return None


async def timed_get(url: str, path: str, token: str, n: int, timeout_s: float) -> dict[str, float]:
    """``n`` sequential GETs: p50 and the body's size."""
    stats, size = Stats(), 0
    async with _client(url, 1, timeout_s) as http:
        for _ in range(n):
            r = await _send(http, ("GET", path, {"Authorization": f"Bearer {token}"}, None), stats)
            if r is not None and r.is_success:
                size = len(r.content)
    return {"p50_ms": stats.pct(0.5), "p99_ms": stats.pct(0.99), "bytes": size, "ok": stats.ok, "n": n}
