"""Alembic migrations: they build the schema the models describe, on both databases."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import hub.models  # noqa: F401
from hub.db import alembic_config, make_engine, migrate
from hub.migrations.objects import include_object


def test_migrations_match_the_models(empty_db_url: str) -> None:
    migrate(empty_db_url)
    engine = make_engine(empty_db_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"include_object": include_object(conn.dialect.name)})
            diff = compare_metadata(context, SQLModel.metadata)
    finally:
        engine.dispose()
    assert diff == [], f"models and migrations differ; add a migration: {diff}"


def test_autogenerate_proposes_nothing_at_head(empty_db_url: str) -> None:
    """``alembic check`` runs autogenerate through hub/migrations/env.py, as a developer's
    ``alembic revision --autogenerate`` would: at head it must find nothing to add, on either
    database, so the SQLite-only indexes of 0021 are not proposed for PostgreSQL."""
    from alembic import command

    migrate(empty_db_url)
    command.check(alembic_config(empty_db_url))


def test_downgrade_and_upgrade_again(empty_db_url: str) -> None:
    from alembic import command
    from sqlalchemy import inspect

    migrate(empty_db_url)
    command.downgrade(alembic_config(empty_db_url), "base")
    engine = make_engine(empty_db_url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        migrate(empty_db_url)
        assert "sites" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_0021_fills_the_summed_counts_from_the_snapshots_and_downgrades(empty_db_url: str) -> None:
    """0021 adds the counts a summary sums to ``capacity_latest`` and fills them from each
    row's snapshot JSON as a heartbeat would have written them; its downgrade drops them and
    keeps the rows."""
    import sqlalchemy as sa
    from alembic import command

    from hub.capacity.models import summed_columns
    from hub.db import alembic_config
    from hub.types import UTCDateTime, utcnow
    from shared.schemas.capacity import CapacityTotals

    snapshots = [
        {"cpus_total": 64, "cpus_free": 48, "gpus": {"a100": {"total": 8, "free": 5}}, "jobs_pending": 1},
        {"cpus_total": 128, "cpus_free": 0, "gpus": {"a100": {"total": 4, "free": 1}, "l40s": {"total": 2, "free": 2}}},
        {"cpus_total": 256, "cpus_free": 200, "gpus": {}},
        {"cpus_total": 16, "cpus_free": 16, "gpus": {"t4": {"total": 0, "free": 0}}, "gpus_bootable": {"t4": 0}},
    ]
    table = sa.table(
        "capacity_latest",
        *(sa.column(c) for c in ("site_id", "agent_version", "backend")),
        *(sa.column(c, UTCDateTime()) for c in ("received_at", "sampled_at")),
        *(sa.column(c, sa.JSON()) for c in ("totals", "partitions", "storage")),
    )
    migrate(empty_db_url, "0020")
    engine = make_engine(empty_db_url)
    try:
        with engine.begin() as conn:  # Core, not a session: the session's commit hooks write tables of later revisions
            now = utcnow()
            site_ids = _insert_sites(conn, 4, now)
            conn.execute(sa.insert(table), [
                {"site_id": site_id, "agent_version": "a", "backend": "slurm", "received_at": now, "sampled_at": now,
                 "totals": totals, "partitions": [], "storage": []}
                for site_id, totals in zip(site_ids, snapshots, strict=True)
            ])  # fmt: skip
        migrate(empty_db_url)
        counts = sa.select(*(sa.column(c) for c in summed_columns(CapacityTotals()))).select_from(table)
        with engine.connect() as conn:
            rows = conn.execute(counts.order_by(table.c.site_id)).all()
        expected = [summed_columns(CapacityTotals.model_validate(t)) for t in snapshots]
        assert [dict(r._mapping) for r in rows] == expected
        assert expected[1]["gpu_model"] is None and expected[1]["gpu_models"] == 2 and expected[3]["gpu_model"] == "t4"

        command.downgrade(alembic_config(empty_db_url), "0020")
        with engine.connect() as conn:
            columns = {c["name"] for c in sa.inspect(conn).get_columns("capacity_latest")}
            kept = conn.execute(sa.select(table.c.totals).order_by(table.c.site_id)).scalars().all()
        assert not columns & set(expected[0]) and kept == snapshots, "the counts dropped, the snapshots kept"
    finally:
        engine.dispose()


def test_0023_serving_copies_keeps_what_auto_approve_public_allowed_and_downgrades_to_the_narrower(empty_db_url: str) -> None:
    """0023 adds ``share_policies.serve_public_copies``, set from ``auto_approve_public`` (which
    let a site serve copies of others' public data until then); its downgrade folds the two
    consents back into ``auto_approve_public``, kept only where both were given."""
    import sqlalchemy as sa
    from alembic import command

    from hub.db import alembic_config
    from hub.types import UTCDateTime, utcnow

    policies = sa.table(
        "share_policies",
        *(sa.column(c) for c in ("site_id", "auto_approve_public", "accept_own_institution", "accept_job_inputs")),
        *(sa.column(c, sa.JSON()) for c in ("auto_approve_institutions", "accept_institutions")),
        sa.column("updated_at", UTCDateTime()),
    )
    migrate(empty_db_url, "0022")
    engine = make_engine(empty_db_url)
    try:
        with engine.begin() as conn:  # Core, not a session: the session's commit hooks write tables of later revisions
            now = utcnow()
            ids = _insert_sites(conn, 3, now)
            conn.execute(sa.insert(policies), [
                {"site_id": site_id, "auto_approve_public": public, "accept_own_institution": True, "accept_job_inputs": True,
                 "auto_approve_institutions": [], "accept_institutions": [], "updated_at": now}
                for site_id, public in zip(ids, (True, False, True), strict=True)
            ])  # fmt: skip
        migrate(empty_db_url)
        served = sa.text("SELECT site_id, auto_approve_public, serve_public_copies FROM share_policies ORDER BY site_id")
        with engine.begin() as conn:
            rows = [(i, bool(a), bool(s)) for i, a, s in conn.execute(served)]
            assert rows == [(ids[0], True, True), (ids[1], False, False), (ids[2], True, True)], "what each site allowed"
            # site 2 approves requests for its own public data but no longer serves others' copies
            conn.execute(sa.text("UPDATE share_policies SET serve_public_copies = :f WHERE site_id = :i"),
                         {"f": False, "i": ids[2]})  # fmt: skip

        command.downgrade(alembic_config(empty_db_url), "0022")
        with engine.connect() as conn:
            columns = {c["name"] for c in sa.inspect(conn).get_columns("share_policies")}
            kept = [(i, bool(a)) for i, a in conn.execute(sa.text("SELECT site_id, auto_approve_public FROM share_policies "
                                                                  "ORDER BY site_id"))]  # fmt: skip
        assert "serve_public_copies" not in columns
        assert kept == [(ids[0], True), (ids[1], False), (ids[2], False)], "no data leaves a site that did not let it"
    finally:
        engine.dispose()


def _insert_sites(conn: Any, n: int, now: datetime) -> list[int]:
    """``n`` sites written with Core (a session's commit hooks would write tables of later revisions)."""
    import sqlalchemy as sa

    from hub.sites.models import Site

    site = {"institution": "kek", "country": "JP", "contacts": [], "created_at": now, "updated_at": now}
    return [
        conn.execute(sa.insert(Site).values(name=f"site-{i}", display_name=f"Site {i}", **site).returning(Site.id)).scalar_one()
        for i in range(n)
    ]
