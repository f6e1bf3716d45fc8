"""The hub and agents as real processes, for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from site_agent.enroll import enroll
from tests import ga4gh_schemas
from tests.helpers import LOOPBACK, Account, Hub, bootstrap, hub_settings
from tests.services import free_port, wait_for


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cryomesh_cli.main", *args]


class _PortTaken(RuntimeError):
    """The hub process exited while starting (most often: its port was taken meanwhile)."""


class HubProcess:
    """`cryomesh hub serve` in its own process, restartable on the same port and database."""

    def __init__(
        self,
        tmp: Path,
        db_url: str | None = None,
        admin: Account | None = None,
        sweep_s: float = 0.5,
        args: tuple[str, ...] = (),
        **settings: Any,
    ) -> None:
        # sweep_s: as the in-process hubs' (tests.helpers.hub_settings). A hub process sweeping every
        # 0.2 s spends 7 % of a core idle with one agent, 3 % at 1 s; tests whose states
        # wait on the sweep (unreachable sites) ask for a shorter one.
        self.args = args  # more options of `hub serve` (--workers N)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        s = hub_settings(db_url or f"sqlite:///{tmp / 'hub.db'}", tmp / "data", self.port, sweep_interval_s=sweep_s, **settings)
        self.settings = s
        self.admin: Account = admin or bootstrap(s)
        self.env = {
            **os.environ,
            "CRYOMESH_DATABASE_URL": s.resolved_database_url,
            "CRYOMESH_PUBLIC_URL": self.url,
            "CRYOMESH_PORT": str(self.port),
            "CRYOMESH_SWEEP_INTERVAL_S": str(sweep_s),
            "CRYOMESH_TOKEN_LIFETIME_S": str(s.token_lifetime_s),
            **{f"CRYOMESH_{k.upper()}": str(v) for k, v in settings.items()},
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self._token: str | None = None
        self._tokens: dict[str, tuple[str, float]] = {}
        self._started = False

    def start(self) -> None:
        # Ports come from free_port(), so another test process may take ours between the pick
        # and the bind. The hub then exits at once; on a first start, pick another port.
        for attempt in range(3):
            try:
                self._start()
                break
            except _PortTaken:
                if self._started or attempt == 2:
                    raise
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}"
                self.env.update(CRYOMESH_PUBLIC_URL=self.url, CRYOMESH_PORT=str(self.port))
        self._started = True

    def _start(self) -> None:
        with (self.tmp / "hub.log").open("ab") as log:
            self.proc = subprocess.Popen(cli("hub", "serve", *self.args), env=self.env, stdout=log, stderr=subprocess.STDOUT)

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise _PortTaken(f"the hub process exited with {self.proc.returncode}; see {self.tmp / 'hub.log'}")
            try:
                if LOOPBACK.get(f"{self.url}/readyz", timeout=1).status_code != 200:
                    return False
                # Ours, not another test's hub on a port we were also given: our admin can sign in.
                r = LOOPBACK.post(
                    f"{self.url}/oauth/token",
                    data={"grant_type": "client_credentials"},
                    auth=(self.admin.client_id, self.admin.client_secret),
                    timeout=5,
                )
            except httpx.TransportError:
                return False
            return r.status_code == 200 and self.proc.poll() is None

        # Generous: a hub starting beside other work on a busy machine takes its time (at load
        # 19 on 2 cores, several took more than 90 s to answer; they need about 2.5 CPU s).
        try:
            wait_for(ready, 180, "the hub process")
        except BaseException:
            self.proc.kill()  # never leave a hub behind that did not start
            self.proc.wait()
            raise

    def __enter__(self) -> HubProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def helpers(self) -> Hub:
        """The test helpers of an in-process hub (enrol an agent, get its token…), aimed at this one."""
        return Hub(self.url, self.settings.model_copy(update={"public_url": self.url, "port": self.port}), self.admin)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)  # a graceful stop takes seconds; on a busy machine, longer
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def token(self, account: Account) -> str:
        """A token for ``account``, reused for half its lifetime (tests poll the hub several
        times a second; a token each time is work for the hub that no test is about)."""
        cached = self._tokens.get(account.client_id)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        r = self._request(
            "POST", "/oauth/token", data={"grant_type": "client_credentials"}, auth=(account.client_id, account.client_secret)
        )
        assert r.status_code == 200, r.text
        body = r.json()
        token = str(body["access_token"])
        self._tokens[account.client_id] = (token, time.monotonic() + float(body.get("expires_in", 10)) / 2)
        return token

    def _request(self, method: str, path: str, retry_503: bool = True, **kw: Any) -> httpx.Response:
        """One request; answered 503 (the database or the hub busy, nothing done: a busy
        machine), it is sent again after the Retry-After the hub asks for, as agents do."""
        deadline = time.monotonic() + 120
        while True:
            r = LOOPBACK.request(method, f"{self.url}{path}", timeout=30, **kw)
            if r.status_code != 503 or not retry_503 or time.monotonic() > deadline:
                return r
            time.sleep(float(r.headers.get("Retry-After", 1)))

    def call(self, method: str, path: str, account: Account | None = None, expect: int | None = None, **kw: Any) -> Any:
        if account is None and self._token is None:  # tests reset it to start afresh (e.g. after a restart)
            self._tokens.pop(self.admin.client_id, None)
        token = self.token(account or self.admin)
        if account is None:
            self._token = token
        retry = expect != 503
        r = self._request(method, path, retry, headers={"Authorization": f"Bearer {token}"}, **kw)
        if r.status_code == 401 and account is None:  # the cached admin token expired (short lifetimes, a slow machine)
            self._token = token = self.token(self.admin)
            r = self._request(method, path, retry, headers={"Authorization": f"Bearer {token}"}, **kw)
        if expect is not None:
            assert r.status_code == expect, r.text
        else:
            assert r.status_code < 400, r.text
        return r.json()

    def api(self, method: str, path: str, **kw: Any) -> Any:
        return self.call(method, path, **kw)

    def site(self, name: str) -> dict[str, Any]:
        return dict(self.api("GET", f"/api/v1/sites/{name}"))

    def account(self, role: str, **kw: Any) -> Account:
        body = self.api("POST", "/api/v1/accounts", json={"name": role, "role": role, **kw})
        return Account(body["client_id"], body["client_secret"], role)


@pytest.fixture
def hub_process(tmp_path: Path) -> Iterator[HubProcess]:
    """A hub process on SQLite under the test's temp dir, stopped after the test. Modules whose
    tests call it ``hub`` import it and bind it so: ``hub = hub_process``."""
    with HubProcess(tmp_path / "hub") as h:
        yield h


class AgentProcess:
    def __init__(self, hub: HubProcess, site: str, tmp: Path, discovery: str = 'backend = "local"', extra: str = "",
                 heartbeat_s: float = 1.0, dirname: str | None = None) -> None:  # fmt: skip
        self.dir = tmp / (dirname or site)
        self.dir.mkdir(parents=True)
        self.config = self.dir / "site.toml"
        if "[executor]" not in extra:  # notice a job's end within 0.2 s, not the default 1 s
            extra += "\n[executor]\npoll_interval_s = 0.2\n"
        self.config.write_text(
            f'[agent]\nhub_url = "{hub.url}"\nstate_dir = "{self.dir / "state"}"\n'
            f"heartbeat_interval_s = {heartbeat_s}\nmax_backoff_s = 1\n\n[discovery]\n{discovery}\n{extra}\n"
        )
        self.log = self.dir / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def enroll(self, hub: HubProcess, code: str, cli_command: bool = True) -> None:
        """Enroll with `cryomesh agent enroll`, or (``cli_command=False``) with the function it
        calls, in this process: the same requests, without a CLI process's second of CPU."""
        if not cli_command:
            enroll(hub.url, code, self.dir / "state")
            return
        out = subprocess.run(cli("agent", "enroll", "--hub", hub.url, "--code", code, "--config", str(self.config)),
                             env=hub.env, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr

    def start(self, env: dict[str, str]) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                cli("agent", "run", "--config", str(self.config)), env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]

    def messages(self) -> list[str]:
        return [str(line.get("message")) for line in self.log_lines()]


def register_site(hub: HubProcess, name: str, **site: Any) -> None:
    body = {"name": name, "institution": site.pop("institution", "kek"), "display_name": name, "country": "JP"}
    body.update(site)
    hub.api("POST", "/api/v1/sites", json=body)


def enrolled_agent(
    hub: HubProcess,
    tmp: Path,
    name: str,
    discovery: str = 'backend = "local"',
    extra: str = "",
    register: bool = True,
    heartbeat_s: float = 1.0,
    dirname: str | None = None,
    cli_enroll: bool = False,
    **site: Any,
) -> AgentProcess:
    """An agent enrolled for site ``name`` and approved, not started. ``cli_enroll``: through
    `cryomesh agent enroll` (tests/test_agent_process.py and tests/cli test that command;
    elsewhere the agent enrolls through the function the command calls)."""
    if register:
        register_site(hub, name, **site)
    code = hub.api("POST", f"/api/v1/sites/{name}/enrollment-codes", json={})["code"]
    agent = AgentProcess(hub, name, tmp, discovery, extra, heartbeat_s, dirname)
    agent.enroll(hub, code, cli_command=cli_enroll)
    for e in hub.api("GET", "/api/v1/enrollments", params={"status": "pending"}):
        hub.api("POST", f"/api/v1/enrollments/{e['id']}/approve")
    return agent


def online_agent(hub: HubProcess, tmp: Path, name: str, env: dict[str, str] | None = None, **kw: Any) -> AgentProcess:
    """An agent enrolled for site ``name`` (``enrolled_agent``'s other arguments), started
    with ``env`` (default: the hub's), returned once the hub has seen it online."""
    agent = enrolled_agent(hub, tmp, name, **kw)
    agent.start(env or hub.env)
    try:
        wait_for(lambda: hub.site(name)["reachability"] == "online", 60, f"{name} to come online")
    except BaseException:
        agent.stop()
        raise
    return agent


def full_task(hub: HubProcess, token: str, task_id: str) -> dict[str, object]:
    """A TES task in the FULL view, validated against TES 1.1."""
    r = LOOPBACK.get(
        f"{hub.url}/ga4gh/tes/v1/tasks/{task_id}", params={"view": "FULL"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 200, r.text
    ga4gh_schemas.tes_task(r.json(), "FULL")
    return dict(r.json())
