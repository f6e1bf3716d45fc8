"""The periodic sweep: one runner when several hub processes share PostgreSQL."""

from __future__ import annotations

import threading

from sqlalchemy import text
from sqlmodel import Session

from hub.db import make_engine, migrate, transaction
from hub.settings import HubSettings
from hub.sweeps import RUNNER_LOCK_ID, SWEEP_LOCK_ID, SweepRunner, sweep, try_sweep_lock


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


def test_one_sweep_runner_and_another_takes_over_when_it_stops(pg_url: str) -> None:
    """Two hub processes (two engines): the first to ask runs the sweeps; the other does not,
    at every tick, until the runner stops, and then it does."""
    migrate(pg_url)
    engine_a, engine_b = make_engine(pg_url), make_engine(pg_url)
    a, b = SweepRunner(engine_a), SweepRunner(engine_b)
    try:
        assert a.is_runner()
        assert not b.is_runner()
        assert a.is_runner() and not b.is_runner(), "the role is held across ticks"
        a.close()
        assert b.is_runner(), "the runner stopped: another process takes over at its next tick"
        assert not a.is_runner()
    finally:
        a.close()
        b.close()
        engine_a.dispose()
        engine_b.dispose()


def test_a_runner_whose_connection_died_gives_the_role_up(pg_url: str) -> None:
    migrate(pg_url)
    engine_a, engine_b = make_engine(pg_url), make_engine(pg_url)
    a, b = SweepRunner(engine_a), SweepRunner(engine_b)
    try:
        assert a.is_runner()
        database = pg_url.rsplit("/", 1)[1]
        with transaction(engine_b) as s:  # PostgreSQL ends the runner's session (as a failover would)
            s.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objid = :k "
                    "AND database = (SELECT oid FROM pg_database WHERE datname = :db)"
                ),
                {"k": RUNNER_LOCK_ID, "db": database},
            )
        assert b.is_runner(), "the lock went with the session"
        assert not a.is_runner(), "the old runner notices at its next tick and does not sweep"
    finally:
        a.close()
        b.close()
        engine_a.dispose()
        engine_b.dispose()


def test_on_sqlite_the_one_process_is_the_runner(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/hub.db"
    migrate(url)
    engine = make_engine(url)
    try:
        runner = SweepRunner(engine)
        assert runner.is_runner() and SweepRunner(engine).is_runner()
    finally:
        engine.dispose()
