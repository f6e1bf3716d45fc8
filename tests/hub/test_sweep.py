"""The periodic sweep: one runner when several hub processes share PostgreSQL."""

from __future__ import annotations

import threading

from sqlmodel import Session

from hub.db import make_engine, migrate, transaction
from hub.settings import HubSettings
from hub.sweeps import SWEEP_LOCK_ID, sweep, try_sweep_lock


def test_only_one_hub_process_sweeps_at_a_time(pg_url: str, tmp_path: object) -> None:
    migrate(pg_url)
    settings = HubSettings(database_url=pg_url, data_dir=tmp_path)  # type: ignore[arg-type]
    hub_a, hub_b = make_engine(pg_url), make_engine(pg_url)
    try:
        holding, release = threading.Event(), threading.Event()

        def hub_a_sweeping() -> None:
            with transaction(hub_a) as s:
                assert try_sweep_lock(s)
                holding.set()
                release.wait(10)

        t = threading.Thread(target=hub_a_sweeping)
        t.start()
        assert holding.wait(10)
        assert sweep(hub_b, settings) is None, "hub B skips the tick while hub A sweeps"
        release.set()
        t.join()
        result = sweep(hub_b, settings)
        assert result is not None and result["unreachable"] == [], "with the lock free, hub B sweeps"
    finally:
        hub_a.dispose()
        hub_b.dispose()


def test_lock_is_released_with_the_transaction(pg_url: str) -> None:
    migrate(pg_url)
    engine = make_engine(pg_url)
    try:
        with Session(engine) as s1, Session(engine) as s2:
            assert try_sweep_lock(s1)
            assert not try_sweep_lock(s2)
            s1.commit()
            assert try_sweep_lock(s2)
            s2.rollback()
    finally:
        engine.dispose()
    assert SWEEP_LOCK_ID > 0


def test_sqlite_always_sweeps(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/hub.db"
    migrate(url)
    engine = make_engine(url)
    try:
        result = sweep(engine, HubSettings(database_url=url, data_dir=tmp_path))  # type: ignore[arg-type]
        assert result is not None and result["rotated"] is not None, "the first sweep creates a signing key"
        again = sweep(engine, HubSettings(database_url=url, data_dir=tmp_path))  # type: ignore[arg-type]
        assert again is not None and again["rotated"] is None, "and does not rotate a fresh one"
    finally:
        engine.dispose()
