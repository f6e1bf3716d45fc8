"""Fixtures: real PostgreSQL, Slurm and S3 (started once per run), and a real hub per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Hub, running_hub
from tests.services import (
    CHROMIUM,
    PostgresServer,
    S3Server,
    SlurmCluster,
    missing,
    postgres_server,
    s3_server,
    slurm_cluster,
)


@pytest.fixture(scope="session")
def pg() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def slurm() -> Iterator[SlurmCluster]:
    with slurm_cluster(gpus=4, gpu_type="a100") as cluster:
        yield cluster


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (never a downloaded browser)."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        missing("chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


def _pg_database(pg: PostgresServer) -> Iterator[str]:
    name = f"cm_{uuid.uuid4().hex[:12]}"
    pg.admin(f"CREATE DATABASE {name}")
    try:
        yield pg.url(name)
    finally:
        pg.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def pg_url(pg: PostgresServer) -> Iterator[str]:
    """A fresh, empty PostgreSQL database."""
    yield from _pg_database(pg)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same test on the embedded SQLite default and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hub.db'}"
    else:
        yield from _pg_database(request.getfixturevalue("pg"))


@pytest.fixture
def hub(db_url: str, tmp_path: Path) -> Iterator[Hub]:
    """A real hub over HTTP, on SQLite and on PostgreSQL."""
    with running_hub(db_url, tmp_path / "data") as h:
        yield h


@pytest.fixture
def sqlite_hub(tmp_path: Path) -> Iterator[Hub]:
    """A real hub over HTTP on SQLite, for tests where the database makes no difference."""
    with running_hub(f"sqlite:///{tmp_path / 'hub.db'}", tmp_path / "data") as h:
        yield h


#: Tests that start real processes get longer than the default per-test timeout: on a
#: busy machine (`make test-busy`) they take several times as long; their own deadlines,
#: on events and states, are what tell a failure.
SLOW_TIMEOUT_S = 360


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))
