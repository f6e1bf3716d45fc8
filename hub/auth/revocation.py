"""Tokens already issued that must be refused: the auth version and the principal cache.

A verified caller (its token's signature, its client, site and sign-in read from the
database) is kept in a per-process cache keyed by the whole token, so later requests with
the same token cost a dictionary look-up instead of a signature check and three reads.
What keeps that safe is one counter, ``auth_version``: every change that can refuse a token
already issued raises it in the same transaction as the change (``hub/auth/version.py``
watches the ORM flush; a bulk UPDATE of a watched column must call ``raise_version``):

- a client (agent, person, service) disabled, or its role, site or institution changed;
- a site suspended, renamed or moved to another institution (or deleted);
- a person's sign-in ended or cut short.

A cached caller counts only while the process has seen no higher version than the one it
was read under. The process that made the change sees it when it commits, so the refusal is
immediate there. Every other process hears of it in two ways:

- pushed: on PostgreSQL the change's transaction sends the new version with ``NOTIFY``,
  delivered at its commit to every hub process listening (``hub.jobs.pg_wakeups`` calls
  ``advance``), so the refusal is immediate on every process, a few milliseconds later;
- polled, as a safety net: each process re-reads the counter at most ``auth_recheck_s``
  (1 s) apart, which covers a listening connection that is down (a notification sent
  meanwhile is lost; on reconnecting the bridge calls ``reread_soon``) and hub processes on
  SQLite, where there is nothing to listen to.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

import anyio.to_thread
from sqlalchemy.engine import Engine

from hub.auth.principal import Principal
from hub.auth.version import on_raise, read_version
from hub.db import transaction

#: Cached callers per process (10,000 sites hold about 20,000 tokens: each agent's current
#: one and its previous one until it expires); past it, stale entries are dropped.
MAX_ENTRIES = 50_000


@dataclass(frozen=True)
class _Entry:
    principal: Principal
    version: int
    expires_at: float  # epoch seconds: the token's exp (with leeway), or its sign-in's end


class PrincipalCache:
    """Callers verified in this process, valid until the auth version moves past theirs."""

    def __init__(self, engine: Engine, recheck_s: float = 1.0) -> None:
        self._engine = engine
        self._recheck_s = recheck_s  # longest this process goes without re-reading the version
        self._lock = threading.Lock()  # guards ``version`` only; never held across a read
        self.version = -1
        self._checked_at = float("-inf")
        self._recheck: asyncio.Future[None] | None = None
        self._limiter = anyio.CapacityLimiter(1)  # not the request threads': never queued behind them
        self._entries: dict[str, _Entry] = {}
        on_raise(engine, self.advance)

    def advance(self, version: int) -> None:
        """The auth version is at least ``version`` (thread-safe)."""
        with self._lock:
            if version > self.version:
                self.version = version

    def reread_soon(self) -> None:
        """Re-read the version before the next request uses the cache (thread-safe): versions
        announced while nobody was listening were lost."""
        self._checked_at = float("-inf")

    def _read(self) -> None:
        with transaction(self._engine, write=False) as session:
            version = read_version(session)
        self.advance(version)

    async def recheck(self) -> None:
        """Re-read the auth version if the last read is over ``recheck_s`` old; concurrent
        callers wait for the same read."""
        if time.monotonic() - self._checked_at <= self._recheck_s:
            return
        if self._recheck is None:
            self._recheck = asyncio.ensure_future(self._reread())
        await asyncio.shield(self._recheck)

    async def _reread(self) -> None:
        started = time.monotonic()
        try:
            await anyio.to_thread.run_sync(self._read, limiter=self._limiter)
            self._checked_at = started
        finally:
            self._recheck = None

    def get(self, token: str) -> Principal | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        if entry.version < self.version or entry.expires_at <= time.time():
            self._entries.pop(token, None)
            return None
        return entry.principal

    def put(self, token: str, principal: Principal, version: int, expires_at: float) -> None:
        self.advance(version)
        if len(self._entries) >= MAX_ENTRIES:  # drop what no longer counts; if that is not enough, all
            now = time.time()
            kept = {t: e for t, e in self._entries.items() if e.version >= self.version and e.expires_at > now}
            self._entries = kept if len(kept) < MAX_ENTRIES // 2 else {}
        self._entries[token] = _Entry(principal, version, expires_at)
