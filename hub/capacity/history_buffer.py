"""Capacity history folded in memory and written in batches.

Every heartbeat used to read its site's history bucket, fold the new sample in and write it
back: two statements and a row lock per heartbeat, for a chart with one point per five
minutes. Now each hub process folds heartbeats into a dict keyed by (site, bucket) and a
background thread writes it every ``history_flush_s`` seconds (sooner when it holds
``history_flush_rows`` rows, and at shutdown) in one transaction.

The write adds to what is stored (sums and sample counts add, minima take the smaller), so
several hub processes folding heartbeats of the same site into the same bucket all count.
What a crash loses is at most one flush interval of samples of a bucket's average; the
latest snapshot, which the broker and the network views read, is written by the heartbeat
itself. Readers of the history in this process lay the unwritten folds over what they read
(``read``), so they see every heartbeat this process has answered without writing.

A flush takes the folds out of memory before its transaction commits. A reader between the
two would see the samples in neither place, so a chart's points vanished for a moment
(seen as a dashboard test failing in CI). ``read`` therefore waits for a flush under way
and runs its query in a transaction of its own, begun after that flush's commit, so what
it lays over the rows is exactly what they lack.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import text, tuple_, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from hub.capacity.models import CapacityBucket
from hub.db import transaction
from hub.sites.models import Site
from hub.upsert import insert_for, least
from shared.schemas.capacity import CapacityTotals

log = logging.getLogger("cryomesh.hub.history")


def bucket_start(t: datetime, bucket_s: int) -> datetime:
    epoch = int(t.timestamp())
    return datetime.fromtimestamp(epoch - epoch % bucket_s, tz=t.tzinfo)


@dataclass
class Fold:
    """Samples of one site in one bucket, as the ``capacity_history`` row stores them."""

    samples: int = 0
    cpus_total: int = 0
    cpus_free_sum: int = 0
    cpus_free_min: int | None = None
    gpus: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, totals: CapacityTotals) -> None:
        self.samples += 1
        self.cpus_total = totals.cpus_total
        self.cpus_free_sum += totals.cpus_free
        self.cpus_free_min = totals.cpus_free if self.cpus_free_min is None else min(self.cpus_free_min, totals.cpus_free)
        for model, c in totals.gpus.items():
            self.gpus = merge_gpus(self.gpus, {model: {"total": c.total, "free_sum": c.free, "free_min": c.free}})

    def then(self, newer: Fold) -> Fold:
        """This fold followed by ``newer`` (totals are the newer's; sums add; minima take the smaller)."""
        mins = [m for m in (self.cpus_free_min, newer.cpus_free_min) if m is not None]
        return Fold(
            samples=self.samples + newer.samples,
            cpus_total=newer.cpus_total,
            cpus_free_sum=self.cpus_free_sum + newer.cpus_free_sum,
            cpus_free_min=min(mins) if mins else None,
            gpus=merge_gpus(self.gpus, newer.gpus),
        )


def merge_gpus(older: Mapping[str, Any], newer: Mapping[str, Any]) -> dict[str, Any]:
    """Per GPU model: the newer total, summed free counts, the smaller minimum."""
    out = dict(older)
    for model, g in newer.items():
        old = out.get(model)
        out[model] = (
            dict(g)
            if old is None
            else {
                "total": g["total"],
                "free_sum": old["free_sum"] + g["free_sum"],
                "free_min": min(old["free_min"], g["free_min"]),
            }
        )
    return out


Key = tuple[int, datetime]


def write_folds(session: Session, folds: dict[Key, Fold]) -> int:
    """Add ``folds`` to the stored buckets in this transaction; returns the rows written.

    Rows are upserted in key order, so two hub processes flushing the same buckets lock them
    in the same order. Sites deleted since their heartbeat are skipped."""
    if session.get_bind().dialect.name == "postgresql":
        return _write_folds_postgres(session, folds)
    return write_folds_portable(session, folds)


def write_folds_portable(session: Session, folds: dict[Key, Fold]) -> int:
    """``write_folds`` in statements both databases take (SQLite's path; bench.history_flush
    compares it with PostgreSQL's one statement)."""
    site_ids = {site_id for site_id, _ in folds}
    alive = set(session.exec(select(Site.id).where(col(Site.id).in_(site_ids))))
    keys = sorted(k for k in folds if k[0] in alive)
    if not keys:
        return 0
    table = CapacityBucket.__table__  # type: ignore[attr-defined]
    stmt = insert_for(session, CapacityBucket)
    stmt = stmt.on_conflict_do_update(
        index_elements=["site_id", "bucket_start"],
        set_={
            "samples": table.c.samples + stmt.excluded.samples,
            "cpus_total": stmt.excluded.cpus_total,
            "cpus_free_sum": table.c.cpus_free_sum + stmt.excluded.cpus_free_sum,
            "cpus_free_min": least(session)(table.c.cpus_free_min, stmt.excluded.cpus_free_min),
        },
    )
    rows = [
        {
            "site_id": site_id,
            "bucket_start": start,
            "samples": f.samples,
            "cpus_total": f.cpus_total,
            "cpus_free_sum": f.cpus_free_sum,
            "cpus_free_min": f.cpus_free_min or 0,
            "gpus": {},
        }
        for site_id, start in keys
        for f in (folds[(site_id, start)],)
    ]
    session.execute(stmt, rows)
    # GPU counts are a JSON object per bucket: merged here, on rows the upsert has locked.
    with_gpus = [k for k in keys if folds[k].gpus]
    if with_gpus:
        stored = session.exec(
            select(CapacityBucket.id, CapacityBucket.site_id, CapacityBucket.bucket_start, CapacityBucket.gpus).where(
                tuple_(col(CapacityBucket.site_id), col(CapacityBucket.bucket_start)).in_(with_gpus)
            )
        ).all()
        session.execute(
            update(CapacityBucket),
            [{"id": row_id, "gpus": merge_gpus(gpus, folds[(site_id, start)].gpus)} for row_id, site_id, start, gpus in stored],
        )
    return len(keys)


#: On PostgreSQL a flush is one statement, whatever its size: the folds travel as one JSON
#: parameter, the GPU counts are merged by the upsert itself, and deleted sites drop out in
#: the join. ``write_folds_portable`` took 0.4-0.7 s of the hub's CPU for 5,000 rows (a tuple
#: IN of 10,000 parameters, then an UPDATE per row), held the GIL meanwhile and so stalled
#: heartbeats at 10,000 sites every few seconds; docs/benchmarks.md has the numbers.
_UPSERT_POSTGRES = text("""
INSERT INTO capacity_history AS h (site_id, bucket_start, samples, cpus_total, cpus_free_sum, cpus_free_min, gpus)
SELECT r.site_id, r.bucket_start, r.samples, r.cpus_total, r.cpus_free_sum, r.cpus_free_min, r.gpus
FROM json_to_recordset(CAST(:rows AS json)) AS r(
    site_id integer, bucket_start timestamptz, samples integer, cpus_total integer,
    cpus_free_sum integer, cpus_free_min integer, gpus json)
JOIN sites ON sites.id = r.site_id
ORDER BY r.site_id, r.bucket_start
ON CONFLICT (site_id, bucket_start) DO UPDATE SET
    samples = h.samples + excluded.samples,
    cpus_total = excluded.cpus_total,
    cpus_free_sum = h.cpus_free_sum + excluded.cpus_free_sum,
    cpus_free_min = LEAST(h.cpus_free_min, excluded.cpus_free_min),
    gpus = (
        SELECT COALESCE(json_object_agg(k, CASE
            WHEN n.v IS NULL THEN o.v
            WHEN o.v IS NULL THEN n.v
            ELSE json_build_object(
                'total', n.v -> 'total',
                'free_sum', (o.v ->> 'free_sum')::bigint + (n.v ->> 'free_sum')::bigint,
                'free_min', LEAST((o.v ->> 'free_min')::bigint, (n.v ->> 'free_min')::bigint))
            END), '{}'::json)
        FROM json_each(h.gpus) AS o(k, v) FULL JOIN json_each(excluded.gpus) AS n(k, v) USING (k)
    )
""")


def _write_folds_postgres(session: Session, folds: dict[Key, Fold]) -> int:
    rows = [
        {
            "site_id": site_id,
            "bucket_start": start.isoformat(),
            "samples": f.samples,
            "cpus_total": f.cpus_total,
            "cpus_free_sum": f.cpus_free_sum,
            "cpus_free_min": f.cpus_free_min or 0,
            "gpus": f.gpus,
        }
        for (site_id, start), f in folds.items()
    ]
    if not rows:
        return 0
    result = session.connection().execute(_UPSERT_POSTGRES, {"rows": json.dumps(rows)})
    return int(result.rowcount)


def _merged(row: CapacityBucket, fold: Fold) -> CapacityBucket:
    mins = [m for m in (row.cpus_free_min if row.samples else None, fold.cpus_free_min) if m is not None]
    return CapacityBucket(
        id=row.id,
        site_id=row.site_id,
        bucket_start=row.bucket_start,
        samples=row.samples + fold.samples,
        cpus_total=fold.cpus_total,
        cpus_free_sum=row.cpus_free_sum + fold.cpus_free_sum,
        cpus_free_min=min(mins) if mins else 0,
        gpus=merge_gpus(row.gpus, fold.gpus),
    )


class HistoryBuffer:
    """This process's heartbeats not yet written to ``capacity_history``. Thread-safe."""

    def __init__(self, engine: Engine, bucket_s: int, flush_s: float, flush_rows: int) -> None:
        self._engine = engine
        self._bucket_s = bucket_s
        self._flush_s = flush_s
        self._flush_rows = flush_rows
        self._lock = threading.Lock()  # guards _folds only; never held across the database
        self._flushing = threading.Lock()  # one flush at a time, so batches land in order
        self._folds: dict[Key, Fold] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, site_id: int, at: datetime, totals: CapacityTotals) -> None:
        with self._lock:
            self._folds.setdefault((site_id, bucket_start(at, self._bucket_s)), Fold()).add(totals)
            full = len(self._folds) >= self._flush_rows
        if full:
            self._wake.set()

    def pending(self) -> int:
        with self._lock:
            return len(self._folds)

    def read(
        self, stmt: SelectOfScalar[CapacityBucket], since: datetime, site_ids: set[int] | None = None
    ) -> list[CapacityBucket]:
        """The rows ``stmt`` selects from ``capacity_history`` (buckets from ``since`` on, of
        ``site_ids`` or of every site) with this process's unwritten folds added. The query
        runs in its own read transaction while no flush is under way (see the module's note)."""
        with self._flushing, transaction(self._engine, write=False) as session:
            return self.overlay(session.exec(stmt).all(), since, site_ids)

    def overlay(self, rows: Iterable[CapacityBucket], since: datetime, site_ids: set[int] | None = None) -> list[CapacityBucket]:
        """``rows`` read from ``capacity_history`` with this process's unwritten folds added:
        new, detached rows (the session's own are left untouched, so nothing is written back).
        Folds of buckets before ``since``, or of sites not in ``site_ids``, are left out."""
        with self._lock:
            pending = {k: f for k, f in self._folds.items() if (site_ids is None or k[0] in site_ids) and k[1] >= since}
        out = []
        for row in rows:
            fold = pending.pop((row.site_id, row.bucket_start), None)
            out.append(_merged(row, fold) if fold else row)
        out.extend(
            _merged(CapacityBucket(site_id=site_id, bucket_start=start), fold) for (site_id, start), fold in pending.items()
        )
        return sorted(out, key=lambda b: (b.bucket_start, b.site_id))

    def flush(self) -> int:
        """Write what is folded so far, in a transaction of its own; returns the rows written.
        If the write fails, the folds are put back and the next flush tries again."""
        with self._flushing:
            with self._lock:
                folds, self._folds = self._folds, {}
            if not folds:
                return 0
            try:
                with transaction(self._engine) as session:
                    return write_folds(session, folds)
            except BaseException:
                with self._lock:
                    for key, fold in folds.items():
                        newer = self._folds.get(key)
                        self._folds[key] = fold.then(newer) if newer else fold
                raise

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="history-flush", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the flushing thread and write what is left."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self.flush()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._flush_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.flush()
            except Exception:  # the database is away: keep folding, the next flush retries
                log.exception("writing the capacity history failed; will retry")
