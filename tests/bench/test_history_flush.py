"""bench.history_flush runs and both of its paths write the same buckets."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import select

from bench.history_flush import folds, run
from hub.capacity.history_buffer import write_folds, write_folds_portable
from hub.capacity.models import CapacityBucket
from hub.db import make_engine, migrate, transaction
from hub.sites.models import Site
from hub.types import utcnow


def test_the_bench_reports_both_paths() -> None:
    out = run(sites=20, rounds=2)
    assert set(out) == {"one statement", "portable"}
    assert all(m["cpu_ms"] > 0 and m["wall_ms"] > 0 for m in out.values())


def test_both_paths_store_the_same_history(pg_url: str) -> None:
    """The bench compares two writers; they must write alike for the ratio to mean anything."""
    migrate(pg_url)
    engine = make_engine(pg_url)
    try:
        with transaction(engine) as s:
            for i in range(6):
                s.add(Site(name=f"s{i}", institution="kek", display_name="x", country="JP"))
        with transaction(engine) as s:
            ids = list(s.exec(select(Site.id).order_by(Site.id)))
        one, other = utcnow(), utcnow() - timedelta(hours=1)
        for k in range(3):  # the first round inserts, the next two add to stored rows
            with transaction(engine) as s:
                assert write_folds(s, folds(ids, one, k)) == 6
            with transaction(engine) as s:
                assert write_folds_portable(s, folds(ids, other, k)) == 6
        with transaction(engine) as s:
            rows = s.exec(select(CapacityBucket)).all()

        def stored(at: datetime) -> list[tuple[object, ...]]:
            kept = [b for b in rows if b.bucket_start == at]
            return sorted((b.site_id, b.samples, b.cpus_total, b.cpus_free_sum, b.cpus_free_min, b.gpus) for b in kept)

        assert len(rows) == 12
        assert len(stored(one)) == 6
        assert stored(one) == stored(other)
    finally:
        engine.dispose()
