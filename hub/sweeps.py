"""Periodic upkeep, run by APScheduler inside the hub.

With several hub processes on one PostgreSQL database (``hub serve --workers N``, or several
hosts), exactly one of them sweeps: the **sweep runner**, the process whose own connection
holds a session-level advisory lock (``SweepRunner``). The others try to take it at each
tick, so when the runner stops (its connection closes, releasing the lock) another one
takes over within a tick. Each sweep also takes a transaction-level advisory lock, so two
sweeps never overlap even while a lost connection is being noticed.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from datetime import timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlmodel import Session

from hub.auth import keys as signing_keys
from hub.auth.server import prune_used_assertions
from hub.broker.service import place_queued
from hub.capacity.service import mark_unreachable, prune_history
from hub.datasets.shares import expire_shares
from hub.datasets.uploads import expire as expire_uploads
from hub.db import transaction
from hub.jobs.notify import Notifier
from hub.jobs.service import expire
from hub.jobs.staging import advance
from hub.settings import HubSettings
from hub.transfers.service import stalled

log = logging.getLogger("cryomesh.hub.sweep")

#: Arbitrary constants naming the advisory locks: one sweep at a time; one runner.
SWEEP_LOCK_ID = 0x63727931
RUNNER_LOCK_ID = 0x63727932


class SweepRunner:
    """Whether this process is the sweep runner. On SQLite (one hub process) it always is."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn: Connection | None = None

    def is_runner(self) -> bool:
        """True if this process holds the runner lock (taking it if it is free)."""
        if self._engine.dialect.name != "postgresql":
            return True
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT 1"))
                self._conn.commit()
                return True
            except DBAPIError:  # the connection died and the lock with it
                log.warning("lost the connection that made this process the sweep runner")
                self.close()
        conn = self._engine.connect()
        try:
            taken = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": RUNNER_LOCK_ID}).scalar())
            conn.commit()  # the lock is the session's; no transaction stays open
        except BaseException:
            conn.close()
            raise
        if not taken:
            conn.close()
            return False
        self._conn = conn
        log.info("this hub process (pid %d) runs the sweeps", os.getpid())
        return True

    def close(self) -> None:
        """Give the role up (at shutdown): closing the connection releases the lock."""
        if self._conn is not None:
            with contextlib.suppress(SQLAlchemyError):  # a dead connection took the lock with it
                # Released here, not left to the server: a closed connection's backend ends (and
                # lets the lock go) a moment after the client has gone, so another process
                # asking at once could still find it taken.
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": RUNNER_LOCK_ID})
                self._conn.commit()
            with contextlib.suppress(DBAPIError):
                self._conn.invalidate()  # not back to the pool: the lock must go with it
            self._conn.close()
            self._conn = None


def try_sweep_lock(session: Session) -> bool:
    """True if this transaction may run the sweep (always, on SQLite)."""
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        return True
    return bool(session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": SWEEP_LOCK_ID}).scalar())


def sweep(engine: Engine, settings: HubSettings, notifier: Notifier | None = None) -> dict[str, object] | None:
    """One tick. Returns what it did, or None if another hub process holds the lock."""
    with transaction(engine) as session:
        if not try_sweep_lock(session):
            return None
        unreachable = mark_unreachable(session, settings)
        requeued = expire(session, settings, notifier)
        staged = advance(session, notifier)
        placed = place_queued(session, notifier)
        expire_shares(session)
        uploads_expired = expire_uploads(session)
        retried = stalled(session, settings)
        for name in unreachable:
            log.warning("site %s is unreachable: no heartbeat for %d intervals", name, settings.missed_heartbeats)
        rotated = signing_keys.rotate_if_due(session, timedelta(days=settings.signing_key_rotation_days))
        if rotated:
            log.info("rotated the token signing key; new kid %s", rotated.kid)
        pruned = prune_history(session, timedelta(days=settings.history_retention_days))
        pruned += prune_used_assertions(session)
        pruned += signing_keys.prune_retired(session, timedelta(seconds=settings.token_lifetime_s + 60))
    return {
        "unreachable": unreachable,
        "requeued": requeued,
        "placed": placed,
        "staged": staged,
        "transfers_retried": retried,
        "rotated": rotated.kid if rotated else None,
        "pruned": pruned,
        "uploads_expired": uploads_expired,
    }


@dataclass
class Sweeps:
    """The scheduler ticking in this process, and whether it is the runner."""

    scheduler: BackgroundScheduler
    runner: SweepRunner

    def stop(self) -> None:
        """Stop ticking (waiting for a tick under way) and give the runner role up."""
        self.scheduler.shutdown(wait=True)
        self.runner.close()


def start_scheduler(engine: Engine, settings: HubSettings, notifier: Notifier | None = None) -> Sweeps:
    """Tick every ``sweep_interval_s``; sweep when this process is the runner."""
    scheduler = BackgroundScheduler(timezone="UTC")
    runner = SweepRunner(engine)

    def tick() -> None:
        try:
            if runner.is_runner():
                sweep(engine, settings, notifier)
        except Exception:  # a failed tick must not stop the scheduler; the next one retries
            log.exception("sweep failed")

    scheduler.add_job(tick, "interval", seconds=settings.sweep_interval_s, id="sweep", max_instances=1, coalesce=True)
    scheduler.start()
    return Sweeps(scheduler, runner)
