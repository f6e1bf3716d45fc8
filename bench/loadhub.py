"""The hub under load: a real ``cryomesh hub serve`` process, its resource use, its clean-up.

The hub runs in its own session (process group), so a Ctrl-C at the terminal reaches the
benchmark first, which then stops the hub in order; whatever happens, the group is killed
on the way out (``stop``), workers included when the hub runs several. CPU time and RSS
are read from ``/proc/<pid>/stat`` (through psutil) for the hub process and all its
children, so a multi-worker hub is counted whole. On PostgreSQL the server's CPU (the
postmaster, its live backends and those that have exited) is read the same way, so a
heartbeat's whole cost on this machine is the hub's share plus the database's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx
import psutil
from sqlalchemy.engine import make_url

from hub.settings import HubSettings
from tests.helpers import Account
from tests.services import free_port


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cryomesh_cli.main", *args]


def workers_supported() -> bool:
    """Whether this checkout's ``cryomesh hub serve`` takes ``--workers``."""
    out = subprocess.run(cli("hub", "serve", "--help"), capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    return "--workers" in out.stdout


@dataclass
class Usage:
    cpu_s: float
    rss_mb: float
    db_cpu_s: float | None = None  # PostgreSQL's server, all its processes; None on SQLite


def _postmaster(port: int) -> psutil.Process | None:
    """The PostgreSQL server listening on ``port`` on this machine (its command line names the port)."""
    for p in psutil.process_iter(["name", "cmdline"]):
        cmd = p.info["cmdline"] or []
        if p.info["name"] == "postgres" and "-p" in cmd and cmd[cmd.index("-p") + 1 : cmd.index("-p") + 2] == [str(port)]:
            return p
    return None


def postgres_cpu_s(server: psutil.Process) -> float:
    """CPU seconds of a PostgreSQL server: the postmaster, its exited children (reaped, so
    counted in its own times) and its live ones (backends, WAL writer, checkpointer)."""
    total = 0.0
    with contextlib.suppress(psutil.NoSuchProcess):
        t = server.cpu_times()
        total += t.user + t.system + t.children_user + t.children_system
        for child in server.children():
            with contextlib.suppress(psutil.NoSuchProcess):
                c = child.cpu_times()
                total += c.user + c.system
    return total


@dataclass
class LoadHub:
    """A hub process on a loopback port, restartable on the same port and database."""

    tmp: Path
    settings: HubSettings
    admin: Account
    workers: int = 1
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    peak_rss_mb: float = 0.0
    #: Serve another checkout: its interpreter, and its source tree as the working directory
    #: (``python -m`` imports from there first). By default this checkout.
    python: str = sys.executable
    src: Path | None = None
    _db_server: psutil.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        s = self.settings
        return {
            **os.environ,
            "CRYOMESH_DATABASE_URL": s.resolved_database_url,
            "CRYOMESH_DATA_DIR": str(s.data_dir),
            "CRYOMESH_PUBLIC_URL": s.issuer,
            "CRYOMESH_PORT": str(self.port),
            "CRYOMESH_TOKEN_LIFETIME_S": str(s.token_lifetime_s),
            "CRYOMESH_SWEEP_INTERVAL_S": str(s.sweep_interval_s),
            "CRYOMESH_LOG_LEVEL": "WARNING",
        }

    def start(self, timeout_s: float = 120) -> float:
        """Start the hub and wait until our admin can sign in; returns the seconds it took."""
        args = [self.python, *cli("hub", "serve", "--no-migrate")[1:]]
        if self.workers > 1:
            args += ["--workers", str(self.workers)]
        t0 = time.monotonic()
        with (self.tmp / "hub.log").open("ab") as log:
            self.proc = subprocess.Popen(
                args, env=self.env(), cwd=self.src, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        while time.monotonic() - t0 < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the hub exited with {self.proc.returncode} while starting: {self.log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200 and self.admin_token(timeout=5):
                    return time.monotonic() - t0
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the hub did not become ready in {timeout_s:.0f} s: {self.log_tail()}")

    def log_tail(self) -> str:
        """The hub log's last line (the temp dir holding it is removed at the end)."""
        lines = (self.tmp / "hub.log").read_text(errors="replace").strip().splitlines()
        return lines[-1][-300:] if lines else "(the hub wrote nothing)"

    def admin_token(self, timeout: float = 30) -> str:
        r = httpx.post(
            f"{self.url}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(self.admin.client_id, self.admin.client_secret),
            timeout=timeout,
        )
        r.raise_for_status()
        return str(r.json()["access_token"])

    def stop(self, grace_s: float = 30) -> float | None:
        """SIGTERM, then SIGKILL to the whole group after ``grace_s``; returns the seconds a
        graceful stop took, or None if the hub had to be killed."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is not None:
            return 0.0
        t0 = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace_s)
            took: float | None = time.monotonic() - t0
        except subprocess.TimeoutExpired:
            took = None
        with contextlib.suppress(ProcessLookupError):  # workers left behind, or a hub that would not stop
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return took

    def usage(self) -> Usage:
        """CPU seconds (user + system) and RSS of the hub and its children, now."""
        assert self.proc is not None
        cpu = rss = 0.0
        try:
            root = psutil.Process(self.proc.pid)
            for p in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    t = p.cpu_times()
                    cpu += t.user + t.system
                    rss += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
        mb = rss / 2**20
        self.peak_rss_mb = max(self.peak_rss_mb, mb)
        return Usage(cpu, mb, self.db_cpu_s())

    def db_cpu_s(self) -> float | None:
        """CPU seconds of the PostgreSQL server the hub uses, if it runs here; None on SQLite."""
        url = make_url(self.settings.resolved_database_url)
        if not url.get_backend_name().startswith("postgresql") or url.host not in ("127.0.0.1", "localhost"):
            return None
        if self._db_server is None or not self._db_server.is_running():
            self._db_server = _postmaster(url.port or 5432)
        return postgres_cpu_s(self._db_server) if self._db_server is not None else None

    def answers(self, path: str, within_s: float, token: str | None = None) -> float | None:
        """Seconds until ``GET path`` answered 200, or None if it did not within ``within_s``."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        t0 = time.monotonic()
        while (left := within_s - (time.monotonic() - t0)) > 0:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}{path}", headers=headers, timeout=max(0.1, left)).status_code == 200:
                    return time.monotonic() - t0
            time.sleep(0.2)
        return None


def raise_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so ``finally`` blocks stop the hub and PostgreSQL."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
