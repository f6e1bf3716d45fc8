"""Alembic migrations: they build the schema the models describe, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import hub.models  # noqa: F401
from hub.db import make_engine, migrate


def test_migrations_match_the_models(empty_db_url: str) -> None:
    migrate(empty_db_url)
    engine = make_engine(empty_db_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    finally:
        engine.dispose()
    assert diff == [], f"models and migrations differ; add a migration: {diff}"


def test_downgrade_and_upgrade_again(empty_db_url: str) -> None:
    from alembic import command
    from sqlalchemy import inspect

    from hub.db import alembic_config

    migrate(empty_db_url)
    command.downgrade(alembic_config(empty_db_url), "base")
    engine = make_engine(empty_db_url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        migrate(empty_db_url)
        assert "sites" in inspect(engine).get_table_names()
    finally:
        engine.dispose()
