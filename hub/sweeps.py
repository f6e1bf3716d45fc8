"""Periodic upkeep, run by APScheduler inside the hub.

With several hub processes on one PostgreSQL database, each tick takes a transaction-level
advisory lock; whoever does not get it skips the tick, so exactly one runner sweeps.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import text
from sqlalchemy.engine import Engine
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

#: Arbitrary constant naming the sweep's advisory lock.
SWEEP_LOCK_ID = 0x63727931


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


def start_scheduler(engine: Engine, settings: HubSettings, notifier: Notifier | None = None) -> BackgroundScheduler:
    scheduler = BackgroundScheduler(timezone="UTC")

    def tick() -> None:
        try:
            sweep(engine, settings, notifier)
        except Exception:  # a failed tick must not stop the scheduler; the next one retries
            log.exception("sweep failed")

    scheduler.add_job(tick, "interval", seconds=settings.sweep_interval_s, id="sweep", max_instances=1, coalesce=True)
    scheduler.start()
    return scheduler
