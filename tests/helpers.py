"""Builders for tests: a real hub on a loopback port, accounts, sites and enrolled agents,
all made through the hub's own API."""

from __future__ import annotations

import atexit
import http.cookiejar
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import uvicorn
from joserfc.jwk import ECKey

from hub.accounts.service import bootstrap_admin
from hub.app import create_app
from hub.db import make_engine, migrate, transaction
from hub.settings import HubSettings
from site_agent.credentials import load_key
from site_agent.enroll import enroll
from tests.services import wait_for

#: One TLS context for every HTTP client the tests make. httpx builds a context for each new
#: client, loading the CA bundle (about 20 ms of CPU) even to speak plain HTTP to loopback,
#: and the tests make thousands of clients and requests (polling hubs for states several
#: times a second): that was minutes of CPU per run of the suite.
TLS = httpx.create_ssl_context()
#: For one-off requests (``LOOPBACK.post(url, ...)`` where a test would call ``httpx.post``):
#: built once, but like ``httpx.post`` each request opens its own connection (no keep-alive:
#: a hub restarted on the same port never meets a stale one) and keeps no cookies.
LOOPBACK = httpx.Client(
    verify=TLS,
    limits=httpx.Limits(max_keepalive_connections=0),
    timeout=15,
    cookies=http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[])),
)


@dataclass
class Account:
    client_id: str
    client_secret: str
    role: str


@dataclass
class Agent:
    client_id: str
    site: str
    state_dir: Path
    enrollment_id: int

    @property
    def key(self) -> ECKey:
        return load_key(self.state_dir)


def site_body(name: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "institution": overrides.pop("institution", f"{name}-inst"),
        "display_name": f"Site {name}",
        "country": "JP",
        "location": "Tsukuba",
        "description": "test site",
        "contacts": [{"name": "Ops", "email": f"ops@{name}.example"}],
        "partitions": [
            {
                "name": "gpu",
                "node_count": 2,
                "cores_per_node": 32,
                "memory_gb_per_node": 256,
                "gpu_model": "a100",
                "gpus_per_node": 4,
            },
            {"name": "cpu", "node_count": 10, "cores_per_node": 64, "memory_gb_per_node": 512},
        ],
        "software": [{"name": "relion", "version": "5.0", "cuda_arch": "8.0"}],
        "storage": [{"name": "scratch", "kind": "posix", "path": "/data"}],
    }
    body.update(overrides)
    return body


def heartbeat_body(
    cpus_total: int = 64, cpus_idle: int = 48, gpus: tuple[str, int, int] | None = ("a100", 8, 5), **overrides: Any
) -> dict[str, Any]:
    part: dict[str, Any] = {
        "name": "gpu",
        "cpus_total": cpus_total,
        "cpus_allocated": cpus_total - cpus_idle,
        "cpus_idle": cpus_idle,
        "memory_total_mb": 512_000,
        "memory_free_mb": 256_000,
        "gpus": [{"model": gpus[0], "total": gpus[1], "free": gpus[2]}] if gpus else [],
        "jobs_pending": 3,
        "jobs_running": 2,
    }
    body: dict[str, Any] = {
        "agent_version": "test",
        "interval_s": 15,
        "sampled_at": "2026-01-01T00:00:00Z",
        "backend": "slurm",
        "partitions": [part],
        "storage": [{"name": "scratch", "path": "/data", "total_bytes": 10**12, "free_bytes": 4 * 10**11}],
    }
    body.update(overrides)
    return body


@dataclass
class Hub:
    url: str
    settings: HubSettings
    admin: Account
    _tokens: dict[str, str] = field(default_factory=dict)

    def http(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=15, verify=TLS)

    def token_for(self, account: Account, scope: str | None = None) -> str:
        key = f"{account.client_id}:{scope}"
        if key not in self._tokens:
            data = {"grant_type": "client_credentials", **({"scope": scope} if scope else {})}
            resp = LOOPBACK.post(f"{self.url}/oauth/token", data=data, auth=(account.client_id, account.client_secret))
            assert resp.status_code == 200, resp.text
            self._tokens[key] = resp.json()["access_token"]
        return self._tokens[key]

    def as_(self, account: Account) -> httpx.Client:
        return self.http(self.token_for(account))

    def as_admin(self) -> httpx.Client:
        return self.as_(self.admin)

    def create_site(self, name: str | None = None, **overrides: Any) -> dict[str, Any]:
        name = name or f"site-{uuid.uuid4().hex[:6]}"
        with self.as_admin() as c:
            resp = c.post("/api/v1/sites", json=site_body(name, **overrides))
        assert resp.status_code == 201, resp.text
        return dict(resp.json())

    def account(self, role: str, *, site: str | None = None, institution: str | None = None) -> Account:
        with self.as_admin() as c:
            resp = c.post(
                "/api/v1/accounts", json={"name": f"{role} person", "role": role, "site": site, "institution": institution}
            )
        assert resp.status_code == 201, resp.text
        body = resp.json()
        return Account(body["client_id"], body["client_secret"], role)

    def enrollment_code(self, site: str, ttl_s: int | None = None) -> str:
        with self.as_admin() as c:
            resp = c.post(f"/api/v1/sites/{site}/enrollment-codes", json={"ttl_s": ttl_s} if ttl_s else {})
        assert resp.status_code == 201, resp.text
        return str(resp.json()["code"])

    def enroll_agent(self, site: str, state_dir: Path, approve: bool = True) -> Agent:
        creds = enroll(self.url, self.enrollment_code(site), state_dir, hostname="test-host")
        if approve:
            with self.as_admin() as c:
                resp = c.post(f"/api/v1/enrollments/{creds.enrollment_id}/approve")
            assert resp.status_code == 200, resp.text
        return Agent(creds.client_id, creds.site, state_dir, creds.enrollment_id)

    def agent_token_response(self, agent: Agent, **claims: Any) -> httpx.Response:
        from authlib.oauth2.rfc7523 import private_key_jwt_sign

        assertion = private_key_jwt_sign(
            agent.key,
            client_id=agent.client_id,
            token_endpoint=self.settings.token_endpoint,
            alg="ES256",
            claims={"exp": int(time.time()) + 60, **claims},
        )
        return LOOPBACK.post(
            f"{self.url}/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": assertion.decode() if isinstance(assertion, bytes) else assertion,
            },
        )

    def agent_token(self, agent: Agent) -> str:
        resp = self.agent_token_response(agent)
        assert resp.status_code == 200, resp.text
        return str(resp.json()["access_token"])


def waiting_polls(url: str) -> float:
    """How many agents' polls for work the hub process at ``url`` holds waiting (its metric)."""
    match = re.search(r"^cryomesh_hub_long_polls_waiting (\S+)$", LOOPBACK.get(f"{url}/metrics").text, re.M)
    return float(match.group(1)) if match else -1


def hub_settings(db_url: str, data_dir: Path, port: int, **overrides: Any) -> HubSettings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": db_url,
        "public_url": f"http://127.0.0.1:{port}",
        "port": port,
        "sweep_interval_s": 0.5,
        "log_json": False,
    }
    values.update(overrides)
    return HubSettings(**values)


_SQLITE_TEMPLATE: list[Path] = []


def sqlite_template() -> Path:
    """A SQLite database migrated to head, made once per test process: copying it takes
    milliseconds where running the migrations takes seconds. tests/hub/test_migrations.py
    runs them from an empty database on both engines."""
    if not _SQLITE_TEMPLATE:
        d = Path(tempfile.mkdtemp(prefix="cryomesh-sqlite-template-"))
        atexit.register(shutil.rmtree, d, True)
        path = d / "template.db"
        migrate(f"sqlite:///{path}")
        with sqlite3.connect(path) as conn:  # one self-contained file: no -wal beside it
            conn.execute("PRAGMA journal_mode=DELETE")
        conn.close()
        _SQLITE_TEMPLATE.append(path)
    return _SQLITE_TEMPLATE[0]


def prepare_database(url: str) -> None:
    """Bring the database at ``url`` to head: a new SQLite file starts as a copy of the
    migrated template; then ``migrate`` checks it is at head (a no-op that takes ms)."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(sqlite_template(), path)
    migrate(url)


def bootstrap(settings: HubSettings) -> Account:
    prepare_database(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    try:
        with transaction(engine) as s:
            creds = bootstrap_admin(s, "root admin")
    finally:
        engine.dispose()
    return Account(creds.client_id, creds.client_secret, "network_admin")


@contextmanager
def running_hub(db_url: str, data_dir: Path, admin: Account | None = None, **overrides: Any) -> Iterator[Hub]:
    """The real hub app served by uvicorn on a loopback port, in a thread of this process.
    With ``admin``, a further hub on a database another one has set up (that one's admin).

    The port is bound here before the hub is built and handed to uvicorn, so no other test
    process can take it in between (``free_port()`` then binding later could collide under
    pytest-xdist: "address already in use")."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    try:
        settings = hub_settings(db_url, data_dir, port, **overrides)
        admin = admin or bootstrap(settings)
        server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    except BaseException:
        sock.close()
        raise
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started or not thread.is_alive(), 60, "the hub to start")
    if not server.started:
        sock.close()
        raise RuntimeError(f"the hub on port {port} did not start (see the log above)")
    try:
        yield Hub(f"http://127.0.0.1:{port}", settings, admin)  # the issuer, unless public_url says otherwise
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()


@contextmanager
def busy_cpus(per_cpu: int = 4, load_at_least: float | None = None, timeout: float = 120) -> Iterator[list[int]]:
    """Real programs keeping every CPU busy: ``per_cpu`` busy loops per CPU, at nice 19 so
    the hub and agents under test still get their turn. With ``load_at_least``, waits until
    the one-minute load average shows it (it follows real load with a lag of about a minute).
    Yields the burners' pids, once each has run."""
    cpus = os.cpu_count() or 1
    burners = [subprocess.Popen(["nice", "-n", "19", sys.executable, "-c", "while True: pass"]) for _ in range(per_cpu * cpus)]
    try:

        def burning() -> bool:
            return all(sum(psutil.Process(b.pid).cpu_times()[:2]) > 0.05 for b in burners)

        wait_for(burning, timeout, "the busy loops to run")
        if load_at_least is not None:
            target = load_at_least
            wait_for(lambda: os.getloadavg()[0] >= target, timeout, f"the load average to reach {target}", interval=0.5)
        yield [b.pid for b in burners]
    finally:
        for b in burners:
            b.kill()
        for b in burners:
            b.wait()
