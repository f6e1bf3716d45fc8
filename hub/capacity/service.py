"""Heartbeats: keep the latest snapshot, fold it into the history, track reachability."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from pydantic import BaseModel
from sqlalchemy import bindparam, delete, or_, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlmodel import Session, col, select

from hub.capacity.history_buffer import HistoryBuffer
from hub.capacity.models import CapacityBucket, CapacityLatest, summed_columns
from hub.db import after_commit
from hub.errors import NotFound
from hub.jobs.service import renew_leases
from hub.settings import HubSettings
from hub.sites.models import Site
from hub.sites.service import record_measured_software
from hub.types import UTCDateTime, utcnow
from shared.schemas.capacity import (
    CapacityHistory,
    CapacityPoint,
    CapacityTotals,
    GpuCount,
    GpuHistory,
    Heartbeat,
    HeartbeatAck,
    SiteCapacity,
)


def totals_of(hb: Heartbeat) -> CapacityTotals:
    if hb.totals is not None:
        return hb.totals
    gpus: dict[str, GpuCount] = {}
    bootable: dict[str, int] = {}
    for p in hb.partitions:
        for g in p.gpus:
            c = gpus.setdefault(g.model, GpuCount())
            c.total += g.total
            c.free += g.free
            if g.bootable:
                bootable[g.model] = bootable.get(g.model, 0) + g.bootable
    return CapacityTotals(
        cpus_total=sum(p.cpus_total for p in hb.partitions),
        cpus_free=sum(p.cpus_idle for p in hb.partitions),
        cpus_bootable=sum(p.cpus_bootable for p in hb.partitions),
        memory_total_mb=sum(p.memory_total_mb for p in hb.partitions),
        memory_free_mb=sum(p.memory_free_mb for p in hb.partitions),
        gpus=gpus,
        gpus_bootable=bootable,
        jobs_pending=sum(p.jobs_pending for p in hb.partitions),
    )


def _sign_of_life() -> Any:
    sites = Site.__table__  # type: ignore[attr-defined]
    return (
        update(sites)
        .where(sites.c.id == bindparam("b_site_id"), sites.c.name == bindparam("b_name"))
        .values(
            last_heartbeat_at=bindparam("b_now"),
            heartbeat_interval_s=bindparam("b_interval"),
            agent_version=bindparam("b_version"),
            reachability="online",
            reachable_until=bindparam("b_until"),
        )
    )


#: The counts a network summary sums, written with the snapshot (``summed_columns``).
_COUNTS = ("cpus_total", "cpus_free", "gpus_total", "gpus_free", "gpu_model", "gpu_models")
_SNAPSHOT = ("received_at", "sampled_at", "agent_version", "backend", "totals", "partitions", "storage", *_COUNTS)
#: Built once: a heartbeat executes fixed Core statements with its values as parameters, so
#: SQLAlchemy neither rebuilds nor re-keys them per request (that was most of their cost).
_SIGN_OF_LIFE = _sign_of_life()


#: On PostgreSQL a batch is one statement whatever its size: it takes every heartbeat's
#: values as arrays, unnested into rows, marks the sites alive and upserts the snapshots of
#: the sites it marked. Executed once per heartbeat, the same writes cost the hub and the
#: server a statement's overhead per heartbeat, and each statement is a round trip, which
#: on a busy host is the batch's latency (docs/benchmarks.md, "One hub process on PostgreSQL").
#: The snapshots' JSON travels as one JSON array per column, not as a ``json[]`` parameter:
#: psycopg writes an array parameter as text, escaping every quote of every element with a
#: regular expression in Python, which was a fifth of a heartbeat's hub CPU at 64 senders.
_PG_BATCH = text(
    """WITH v AS (
        SELECT * FROM unnest(
            CAST(:ids AS integer[]), CAST(:names AS text[]), CAST(:intervals AS float8[]), CAST(:versions AS text[]),
            CAST(:untils AS timestamptz[]), CAST(:sampled AS timestamptz[]), CAST(:backends AS text[]),
            ARRAY(SELECT e FROM json_array_elements(CAST(:totals AS json)) WITH ORDINALITY AS j(e, i) ORDER BY i),
            ARRAY(SELECT e FROM json_array_elements(CAST(:partitions AS json)) WITH ORDINALITY AS j(e, i) ORDER BY i),
            ARRAY(SELECT e FROM json_array_elements(CAST(:storage AS json)) WITH ORDINALITY AS j(e, i) ORDER BY i),
            CAST(:cpus_total AS bigint[]), CAST(:cpus_free AS bigint[]), CAST(:gpus_total AS bigint[]),
            CAST(:gpus_free AS bigint[]), CAST(:gpu_model AS text[]), CAST(:gpu_models AS integer[]))
        AS v(id, name, interval_s, agent_version, reachable_until, sampled_at, backend, totals, partitions, storage,
            cpus_total, cpus_free, gpus_total, gpus_free, gpu_model, gpu_models)
    ), marked AS (
        UPDATE sites SET last_heartbeat_at = :now, heartbeat_interval_s = v.interval_s,
            agent_version = v.agent_version, reachability = 'online', reachable_until = v.reachable_until
        FROM v WHERE sites.id = v.id AND sites.name = v.name
        RETURNING sites.id
    )
    INSERT INTO capacity_latest (site_id, received_at, sampled_at, agent_version, backend, totals, partitions, storage,
        cpus_total, cpus_free, gpus_total, gpus_free, gpu_model, gpu_models)
    SELECT v.id, :now, v.sampled_at, v.agent_version, v.backend, v.totals, v.partitions, v.storage,
        v.cpus_total, v.cpus_free, v.gpus_total, v.gpus_free, v.gpu_model, v.gpu_models
    FROM v JOIN marked ON marked.id = v.id
    ON CONFLICT (site_id) DO UPDATE SET received_at = excluded.received_at, sampled_at = excluded.sampled_at,
        agent_version = excluded.agent_version, backend = excluded.backend, totals = excluded.totals,
        partitions = excluded.partitions, storage = excluded.storage, cpus_total = excluded.cpus_total,
        cpus_free = excluded.cpus_free, gpus_total = excluded.gpus_total, gpus_free = excluded.gpus_free,
        gpu_model = excluded.gpu_model, gpu_models = excluded.gpu_models"""
)


@cache
def _snapshot_upsert(dialect: str) -> Any:
    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(CapacityLatest.__table__)  # type: ignore[attr-defined]
    return stmt.on_conflict_do_update(index_elements=["site_id"], set_={c: stmt.excluded[c] for c in _SNAPSHOT})


@dataclass(frozen=True)
class Beat:
    """One accepted heartbeat: the site it is for (known from the agent's token) and what it said."""

    site_id: int
    site_name: str
    hb: Heartbeat


class SiteGone(Exception):
    """A site in a batch of heartbeats no longer exists under its name (renamed or deleted
    since its agent's token was read): the batch is written again one heartbeat at a time,
    so only that heartbeat is refused."""


def record_heartbeats(session: Session, beats: list[Beat], settings: HubSettings, history: HistoryBuffer) -> list[HeartbeatAck]:
    """Store each site's sign of life and snapshot for the whole batch, nothing read back: on
    PostgreSQL one statement taking the batch as arrays, on SQLite two statements each
    executed with every site's values. Two heartbeats of one site in a batch store the later one.
    The history samples are folded in memory once the transaction has committed (see
    history_buffer). Raises ``NotFound`` for a lone heartbeat of a site
    that is gone, ``SiteGone`` for a batch holding one."""
    now, totals = utcnow(), [totals_of(b.hb) for b in beats]
    latest = {b.site_id: i for i, b in enumerate(beats)}  # an upsert may touch a row once per statement
    conn = session.connection()
    write = _write_unnested if conn.dialect.name == "postgresql" else _write_each
    if not write(conn, now, [beats[i] for i in latest.values()], [totals[i] for i in latest.values()], settings):
        if len(beats) == 1:
            raise NotFound(f"no site named {beats[0].site_name!r}")
        raise SiteGone()
    for b in beats:
        if b.hb.software is not None:
            record_measured_software(session, b.site_id, b.hb.software, now)
        renew_leases(session, b.site_id, b.hb.attempts, b.hb.interval_s * settings.missed_heartbeats)

    def fold() -> None:
        for b, t in zip(beats, totals, strict=True):
            history.add(b.site_id, now, t)

    after_commit(session, fold)
    return [HeartbeatAck(site=b.site_name, received_at=now, next_in_s=b.hb.interval_s) for b in beats]


def _write_unnested(
    conn: Connection, now: datetime, beats: list[Beat], totals: list[CapacityTotals], settings: HubSettings
) -> bool:
    """PostgreSQL: the sign of life and the snapshot of ``beats`` (one per site) in one
    statement; False if a site is gone (its snapshot is not written; the caller rolls back)."""
    utc = UTCDateTime()
    counts = [summed_columns(t) for t in totals]
    stored = conn.execute(
        _PG_BATCH,
        {
            "now": now,
            "ids": [b.site_id for b in beats],
            "names": [b.site_name for b in beats],
            "intervals": [b.hb.interval_s for b in beats],
            "versions": [b.hb.agent_version for b in beats],
            "untils": [now + timedelta(seconds=b.hb.interval_s * settings.missed_heartbeats) for b in beats],
            "sampled": [utc.process_bind_param(b.hb.sampled_at, conn.dialect) for b in beats],
            "backends": [b.hb.backend for b in beats],
            "totals": _json_array(t.model_dump_json() for t in totals),
            "partitions": _json_array(_json_list(b.hb.partitions) for b in beats),
            "storage": _json_array(_json_list(b.hb.storage) for b in beats),
            **{name: [c[name] for c in counts] for name in _COUNTS},
        },
    )
    return bool(stored.rowcount == len(beats))


def _json_list(items: Sequence[BaseModel]) -> str:
    return "[" + ",".join(i.model_dump_json() for i in items) + "]"


def _json_array(documents: Iterable[str]) -> str:
    """One JSON array of JSON documents (each already valid JSON)."""
    return "[" + ",".join(documents) + "]"


def _write_each(conn: Connection, now: datetime, beats: list[Beat], totals: list[CapacityTotals], settings: HubSettings) -> bool:
    """SQLite: the site update and the snapshot upsert, each executed with every site's
    values; False (and no snapshot written) if a site is gone."""
    marked = conn.execute(
        _SIGN_OF_LIFE,
        [
            {
                "b_site_id": b.site_id,
                "b_name": b.site_name,
                "b_now": now,
                "b_interval": b.hb.interval_s,
                "b_version": b.hb.agent_version,
                "b_until": now + timedelta(seconds=b.hb.interval_s * settings.missed_heartbeats),
            }
            for b in beats
        ],
    )
    if marked.rowcount != len(beats):
        return False
    conn.execute(
        _snapshot_upsert(conn.dialect.name),
        [
            {
                "site_id": b.site_id,
                "received_at": now,
                "sampled_at": b.hb.sampled_at,
                "agent_version": b.hb.agent_version,
                "backend": b.hb.backend,
                "totals": t.model_dump(),
                "partitions": [p.model_dump() for p in b.hb.partitions],
                "storage": [s.model_dump() for s in b.hb.storage],
                **summed_columns(t),
            }
            for b, t in zip(beats, totals, strict=True)
        ],
    )
    return True


def record_heartbeat(
    session: Session, site_id: int, site_name: str, hb: Heartbeat, settings: HubSettings, history: HistoryBuffer
) -> HeartbeatAck:
    """One heartbeat on its own (see ``record_heartbeats``)."""
    return record_heartbeats(session, [Beat(site_id, site_name, hb)], settings, history)[0]


def latest_capacity(session: Session, site: Site) -> SiteCapacity:
    row = session.get(CapacityLatest, site.id)
    if row is None:
        raise NotFound(f"site {site.name} has not reported its capacity yet")
    return SiteCapacity(
        site=site.name,
        received_at=row.received_at,
        sampled_at=row.sampled_at,
        agent_version=row.agent_version,
        backend=row.backend,
        totals=CapacityTotals.model_validate(row.totals),
        partitions=row.partitions,
        storage=row.storage,
    )


def history(
    session: Session, site: Site, since: datetime, until: datetime, bucket_s: int, buffer: HistoryBuffer
) -> CapacityHistory:
    assert site.id is not None
    stmt = select(CapacityBucket).where(
        CapacityBucket.site_id == site.id, CapacityBucket.bucket_start >= since, CapacityBucket.bucket_start <= until
    )
    rows = [b for b in buffer.read(stmt, since, {site.id}) if b.bucket_start <= until]
    points = [
        CapacityPoint(
            bucket_start=b.bucket_start,
            samples=b.samples,
            cpus_total=b.cpus_total,
            cpus_free_avg=b.cpus_free_sum / b.samples if b.samples else 0.0,
            cpus_free_min=b.cpus_free_min,
            gpus={
                m: GpuHistory(total=g["total"], free_avg=g["free_sum"] / b.samples if b.samples else 0.0, free_min=g["free_min"])
                for m, g in b.gpus.items()
            },
        )
        for b in rows
    ]
    return CapacityHistory(site=site.name, bucket_s=bucket_s, points=points)


def mark_unreachable(session: Session, settings: HubSettings, now: datetime | None = None) -> list[str]:
    """Sites whose agent missed ``missed_heartbeats`` beats in a row become unreachable, in one
    UPDATE over the index on ``reachable_until``.

    A site whose deadline falls before the next tick is marked at this one: marked at the
    first tick after its deadline, it would be found up to one ``sweep_interval_s`` late
    (15 s x 3 beats + a 5 s tick: 45 to 50 s after its last heartbeat). So a site is unreachable
    at most ``interval * missed_heartbeats`` after its last heartbeat, and at the earliest
    one sweep interval before that."""
    horizon = (now or utcnow()) + timedelta(seconds=settings.sweep_interval_s)
    stale = or_(col(Site.reachable_until).is_(None), col(Site.reachable_until) < horizon)
    stmt = (
        update(Site)
        .where(col(Site.reachability) == "online", stale)
        .values(reachability="unreachable")
        .returning(col(Site.name))
        .execution_options(synchronize_session=False)
    )
    return sorted(session.execute(stmt).scalars())


def prune_history(session: Session, retention: timedelta) -> int:
    """Delete history buckets older than ``retention`` in one statement; returns how many."""
    result = session.execute(
        delete(CapacityBucket)
        .where(col(CapacityBucket.bucket_start) < utcnow() - retention)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
