"""Heartbeats: stored snapshots, history, network summary, refusals that store nothing."""

from __future__ import annotations

import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from hub.capacity.chart import summed_history
from hub.capacity.history_buffer import Fold, HistoryBuffer, bucket_start, write_folds
from hub.capacity.models import CapacityBucket, CapacityLatest
from hub.capacity.service import Beat, SiteGone, mark_unreachable, record_heartbeats, totals_of
from hub.db import make_engine, transaction
from hub.settings import HubSettings
from hub.sites.models import Site
from hub.types import utcnow
from shared.schemas.capacity import CapacityTotals, GpuCount, Heartbeat
from tests.helpers import Hub, heartbeat_body, prepare_database, running_hub
from tests.services import wait_for


def _online_site(hub: Hub, tmp_path: Path, name: str | None = None, **site: object) -> tuple[dict[str, object], str]:
    s = hub.create_site(name, **site)
    agent = hub.enroll_agent(str(s["name"]), tmp_path / str(s["name"]))
    return s, hub.agent_token(agent)


def test_heartbeat_is_stored_and_summarised(hub: Hub, tmp_path: Path) -> None:
    _, token_a = _online_site(hub, tmp_path, "alpha")
    _, token_b = _online_site(hub, tmp_path, "beta")
    with hub.http(token_a) as c:
        resp = c.post("/api/v1/sites/alpha/heartbeat", json=heartbeat_body(64, 48, ("a100", 8, 5)))
        assert resp.status_code == 200, resp.text
        assert resp.json()["site"] == "alpha"
    with hub.http(token_b) as c:
        assert c.post("/api/v1/sites/beta/heartbeat", json=heartbeat_body(128, 100, ("h100", 16, 16))).status_code == 200
    researcher = hub.account("researcher", institution="kek")
    with hub.as_(researcher) as c:
        summary = c.get("/api/v1/network/summary").json()
        cap = c.get("/api/v1/sites/alpha/capacity").json()
    assert summary["sites_by_status"] == {"active": 2}
    assert summary["sites_by_reachability"] == {"online": 2}
    assert summary["cpus_total"] == 192 and summary["cpus_free"] == 148
    assert summary["gpus"] == {"a100": {"total": 8, "free": 5}, "h100": {"total": 16, "free": 16}}
    alpha = next(s for s in summary["sites"] if s["name"] == "alpha")
    assert alpha["reachability"] == "online" and 0 <= alpha["heartbeat_age_s"] < 30
    assert alpha["capacity"]["jobs_pending"] == 3
    assert cap["partitions"][0]["gpus"] == [{"model": "a100", "total": 8, "free": 5, "bootable": 0}]
    assert cap["storage"][0]["free_bytes"] == 4 * 10**11


def test_agent_cannot_report_as_another_site(hub: Hub, tmp_path: Path) -> None:
    _, token_a = _online_site(hub, tmp_path, "alpha")
    _online_site(hub, tmp_path, "beta")
    with hub.http(token_a) as c:
        resp = c.post("/api/v1/sites/beta/heartbeat", json=heartbeat_body())
    assert resp.status_code == 403
    assert resp.json() == {"error": "Forbidden", "detail": "an agent of site alpha cannot act as site beta"}
    with hub.as_admin() as c:
        assert c.get("/api/v1/sites/beta/capacity").status_code == 404, "nothing was stored for beta"


def test_people_cannot_send_heartbeats(sqlite_hub: Hub, tmp_path: Path) -> None:
    site = sqlite_hub.create_site()
    for who in (sqlite_hub.admin, sqlite_hub.account("site_admin", site=site["name"])):
        with sqlite_hub.as_(who) as c:
            resp = c.post(f"/api/v1/sites/{site['name']}/heartbeat", json=heartbeat_body())
        assert resp.status_code == 403


def test_malformed_heartbeat_is_422_and_nothing_stored(hub: Hub, tmp_path: Path) -> None:
    _, token = _online_site(hub, tmp_path, "alpha")
    good = heartbeat_body(64, 48)
    bad = [
        ({**good, "partitions": []}, "partitions"),
        ({**good, "partitions": [{**good["partitions"][0], "cpus_allocated": 30, "cpus_idle": 40}]}, "exceeds cpus_total"),
        (heartbeat_body(64, 48, ("a100", 4, 9)), "exceeds total"),
        ({**good, "interval_s": -1}, "interval_s"),
        ({k: v for k, v in good.items() if k != "agent_version"}, "agent_version"),
        ({**good, "partitions": [{"name": "gpu"}]}, "cpus_total"),
        ({**good, "totals": {"cpus_total": 1, "cpus_free": 5}}, "cpus_free exceeds"),
    ]
    with hub.http(token) as c:
        for body, words in bad:
            resp = c.post("/api/v1/sites/alpha/heartbeat", json=body)
            assert resp.status_code == 422, body
            assert resp.json()["error"] == "ValidationError" and words in resp.json()["detail"], resp.json()
        assert c.get("/api/v1/sites/alpha/capacity").status_code == 404, "no snapshot was stored"
        assert c.get("/api/v1/sites/alpha").json()["reachability"] == "unknown", "a refused heartbeat is no sign of life"


def test_history_is_downsampled_into_buckets(sqlite_hub: Hub, tmp_path: Path) -> None:
    _, token = _online_site(sqlite_hub, tmp_path, "alpha")
    with sqlite_hub.http(token) as c:
        for idle in (10, 20, 30):
            assert (
                c.post("/api/v1/sites/alpha/heartbeat", json=heartbeat_body(64, idle, ("a100", 8, idle // 10))).status_code == 200
            )
        hist = c.get("/api/v1/sites/alpha/capacity/history", params={"hours": 1}).json()
    assert hist["bucket_s"] == 300
    assert sum(p["samples"] for p in hist["points"]) == 3
    if len(hist["points"]) == 1:  # all three fell in one 5-minute bucket (almost always)
        point = hist["points"][0]
        assert point["cpus_free_avg"] == 20 and point["cpus_free_min"] == 10 and point["cpus_total"] == 64
        assert point["gpus"]["a100"] == {"total": 8, "free_avg": 2.0, "free_min": 1}


def test_history_rejects_bad_windows(sqlite_hub: Hub) -> None:
    sqlite_hub.create_site("alpha")
    with sqlite_hub.as_admin() as c:
        resp = c.get(
            "/api/v1/sites/alpha/capacity/history", params={"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}
        )
        assert resp.status_code == 400 and resp.json()["detail"] == "since is after until"
        assert c.get("/api/v1/sites/alpha/capacity/history", params={"hours": -1}).status_code == 422


def test_sweep_marks_silent_sites_unreachable(hub: Hub, tmp_path: Path) -> None:
    _, token = _online_site(hub, tmp_path, "alpha")
    with hub.http(token) as c:
        c.post("/api/v1/sites/alpha/heartbeat", json={**heartbeat_body(), "interval_s": 10})
    engine = make_engine(hub.settings.resolved_database_url)
    try:
        with transaction(engine) as s:
            assert mark_unreachable(s, hub.settings, now=utcnow() + timedelta(seconds=29)) == [], "2.9 intervals: still online"
        with transaction(engine) as s:
            assert mark_unreachable(s, hub.settings, now=utcnow() + timedelta(seconds=31)) == ["alpha"]
        with transaction(engine) as s:
            assert s.exec(select(Site.reachability).where(Site.name == "alpha")).one() == "unreachable"
    finally:
        engine.dispose()
    with hub.as_admin() as c:
        summary = c.get("/api/v1/network/summary").json()
    assert summary["sites_by_reachability"] == {"unreachable": 1}
    assert summary["cpus_total"] == 0 and summary["gpus"] == {}, "an unreachable site lends nothing"
    with hub.http(token) as c:
        c.post("/api/v1/sites/alpha/heartbeat", json=heartbeat_body())
    with hub.as_admin() as c:
        assert c.get("/api/v1/network/summary").json()["sites_by_reachability"] == {"online": 1}


class _StatementLog:
    """The SQL statements one engine runs meanwhile; by default every engine of this process
    (a hub under test serves from a thread of this process: keep its sweeps out of the way)."""

    def __init__(self, target: Any = Engine) -> None:
        self.target = target

    def __enter__(self) -> list[str]:
        self.seen: list[str] = []
        event.listen(self.target, "before_cursor_execute", self._record)
        return self.seen

    def __exit__(self, *exc: object) -> None:
        event.remove(self.target, "before_cursor_execute", self._record)

    def _record(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not statement.lower().startswith("begin"):
            self.seen.append(" ".join(statement.split()).lower())


def test_a_heartbeat_reads_nothing_back_and_renews_leases_in_one_statement(db_url: str, tmp_path: Path) -> None:
    """The heartbeat upserts the snapshot and updates the site without reading either back,
    leaves the history to the batch writer, and renews every lease it names in one UPDATE."""
    with running_hub(db_url, tmp_path / "data", sweep_interval_s=3600, history_flush_s=300) as hub:
        _, token = _online_site(hub, tmp_path, "alpha")
        with hub.http(token) as c:
            assert c.post("/api/v1/sites/alpha/heartbeat", json=heartbeat_body()).status_code == 200  # the row exists
            with _StatementLog() as sql:
                body = {**heartbeat_body(), "attempts": ["a-1", "a-2", "a-3"]}
                assert c.post("/api/v1/sites/alpha/heartbeat", json=body).status_code == 200
    assert not [s for s in sql if "capacity_history" in s], "the history is written in batches, not per heartbeat"
    assert not [s for s in sql if s.startswith("select") and "capacity_latest" in s], "the snapshot is not read back"
    assert len([s for s in sql if "capacity_latest" in s]) == 1, sql
    on_attempts = [s for s in sql if "attempts" in s]
    assert len(on_attempts) == 1 and on_attempts[0].startswith("update attempts"), on_attempts


def test_history_is_folded_in_memory_read_back_at_once_and_written_in_batches(db_url: str, tmp_path: Path) -> None:
    def stored() -> list[tuple[int, int, int, dict[str, Any]]]:
        engine = make_engine(db_url)
        try:
            with transaction(engine) as s:
                rows = s.exec(select(CapacityBucket)).all()
                return [(b.samples, b.cpus_free_sum, b.cpus_free_min, b.gpus) for b in rows]
        finally:
            engine.dispose()

    with running_hub(db_url, tmp_path / "data", sweep_interval_s=3600, history_flush_s=300) as hub:
        _, token = _online_site(hub, tmp_path, "alpha")
        with hub.http(token) as c:
            for idle in (10, 20, 30):
                assert (
                    c.post("/api/v1/sites/alpha/heartbeat", json=heartbeat_body(64, idle, ("a100", 8, idle // 10))).status_code
                    == 200
                )
            hist = c.get("/api/v1/sites/alpha/capacity/history", params={"hours": 1}).json()
        with hub.as_admin() as c:
            chart = c.get("/api/v1/dashboard/capacity", params={"hours": 1}).json()
        assert stored() == [], "nothing written yet: the flush interval has not passed"
        assert sum(p["samples"] for p in hist["points"]) == 3, "this process's heartbeats are read back before they are written"
        assert chart["points"] and chart["points"][-1]["cpus_total"] == 64
    rows = stored()  # the hub stopped: what it had folded was written at shutdown
    assert sum(r[0] for r in rows) == 3 and sum(r[1] for r in rows) == 60 and min(r[2] for r in rows) == 10
    if len(rows) == 1:  # all three in one bucket (almost always)
        assert rows[0][3] == {"a100": {"total": 8, "free_sum": 6, "free_min": 1}}
    engine = make_engine(db_url)  # what the dashboard's chart reads, from the database alone
    try:
        with transaction(engine) as s:
            empty = HistoryBuffer(engine, 300, 300, 100)
            points = summed_history(s, utcnow() - timedelta(hours=1), None, 300, empty)
    finally:
        engine.dispose()
    assert points[-1]["cpus_total"] == 64 and points[-1]["gpus"]["a100"]["total"] == 8


def _add_site(engine: Engine, name: str = "alpha") -> int:
    with transaction(engine) as s:
        site = Site(name=name, display_name=name.title(), institution="kek", country="JP")
        s.add(site)
        s.flush()
        assert site.id is not None
        return site.id


def test_a_chart_read_during_a_flush_still_counts_the_samples_being_written(pg_url: str) -> None:
    """A flush takes its folds out of memory before its transaction commits. A reader in
    between used to find the samples neither in memory nor in the table: the chart lost
    points for a moment (a dashboard test saw its last point vanish in CI). Here another
    connection's table lock holds a flush between the two; a chart read then waits for the
    flush and counts every sample once."""
    engine = make_engine(pg_url, busy_timeout_s=120)
    locker = make_engine(pg_url)
    try:
        site_id = _add_site(engine)
        history = HistoryBuffer(engine, 300, 3600, 10_000)
        now = utcnow()
        for free in (10, 20):
            history.add(site_id, now, CapacityTotals(cpus_total=64, cpus_free=free, gpus={}))
        since = now - timedelta(hours=1)
        with ThreadPoolExecutor(2) as pool, locker.connect() as lock:
            lock.exec_driver_sql("LOCK TABLE capacity_history IN SHARE ROW EXCLUSIVE MODE")  # inserts wait; reads do not
            flushing = pool.submit(history.flush)
            wait_for(lambda: history.pending() == 0, 60, "the flush to take its folds")
            with transaction(engine, write=False) as s:
                reading = pool.submit(summed_history, s, since, None, 300, history)
                time.sleep(0.5)
                assert not reading.done(), "the read waits for the flush under way"
                lock.rollback()
                assert flushing.result(timeout=60) == 1
                points = reading.result(timeout=60)
        assert [(p["cpus_total"], p["cpus_free"]) for p in points] == [(64, 15.0)], points
    finally:
        locker.dispose()
        engine.dispose()


def test_a_full_buffer_is_written_before_its_interval(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    prepare_database(url)
    with running_hub(url, tmp_path / "data", history_flush_s=300, history_flush_rows=1) as hub:
        _, token = _online_site(hub, tmp_path, "alpha")
        with hub.http(token) as c:
            assert c.post("/api/v1/sites/alpha/heartbeat", json=heartbeat_body()).status_code == 200
        engine = make_engine(hub.settings.resolved_database_url)
        try:

            def written() -> bool:
                with transaction(engine) as s:
                    return s.exec(select(CapacityBucket)).first() is not None

            wait_for(written, 60, "the history row")
        finally:
            engine.dispose()


def test_folds_from_several_hub_processes_add_up(db_url: str) -> None:
    """Two processes folding the same site's heartbeats into the same bucket: both count."""
    engine = make_engine(db_url)
    t = bucket_start(utcnow(), 300)

    def fold(*samples: tuple[int, dict[str, tuple[int, int]]]) -> Fold:
        f = Fold()
        for free, gpus in samples:
            f.add(
                CapacityTotals(cpus_total=64, cpus_free=free, gpus={m: GpuCount(total=n, free=k) for m, (n, k) in gpus.items()})
            )
        return f

    try:
        with transaction(engine) as s:
            site = Site(name="alpha", institution="kek", display_name="Alpha", country="JP")
            s.add(site)
            s.flush()
            assert site.id is not None
            site_id = site.id
        with transaction(engine) as s:
            assert write_folds(s, {(site_id, t): fold((10, {"a100": (8, 2)}), (30, {"a100": (8, 6)}))}) == 1
        with transaction(engine) as s:
            other = fold((5, {"a100": (8, 1), "h100": (4, 4)}))
            assert write_folds(s, {(site_id, t): other, (site_id + 999, t): other}) == 1, "a deleted site is skipped"
        with transaction(engine) as s:
            [b] = s.exec(select(CapacityBucket)).all()
        assert (b.samples, b.cpus_total, b.cpus_free_sum, b.cpus_free_min) == (3, 64, 45, 5)
        assert b.gpus == {"a100": {"total": 8, "free_sum": 9, "free_min": 1}, "h100": {"total": 4, "free_sum": 4, "free_min": 4}}
        with transaction(engine) as s:  # a model this fold lacks keeps its stored counts
            assert write_folds(s, {(site_id, t): fold((7, {"h100": (6, 2)}))}) == 1
        with transaction(engine) as s:
            [b] = s.exec(select(CapacityBucket)).all()
        assert (b.samples, b.cpus_total, b.cpus_free_sum, b.cpus_free_min) == (4, 64, 52, 5)
        assert b.gpus == {"a100": {"total": 8, "free_sum": 9, "free_min": 1}, "h100": {"total": 6, "free_sum": 6, "free_min": 2}}
    finally:
        engine.dispose()


def test_the_sweep_marks_exactly_the_stale_sites_in_one_statement(hub: Hub, tmp_path: Path) -> None:
    beats = {"fast": 10.0, "slow": 100.0}
    for name, interval in beats.items():
        _, token = _online_site(hub, tmp_path, name)
        with hub.http(token) as c:
            assert c.post(f"/api/v1/sites/{name}/heartbeat", json={**heartbeat_body(), "interval_s": interval}).status_code == 200
    hub.create_site("silent")  # never heard from: 'unknown', not 'online'; the sweep leaves it alone
    engine = make_engine(hub.settings.resolved_database_url)
    try:
        with transaction(engine) as s:
            last = [t for t in s.exec(select(Site.last_heartbeat_at)) if t is not None]
        at = max(last) + timedelta(seconds=3 * beats["fast"])  # fast missed 3 beats; slow has not
        with _StatementLog(engine) as sql, transaction(engine) as s:
            assert mark_unreachable(s, hub.settings, now=at) == ["fast"]
        # and at commit the registry's change counter (hub/broker/changes.py): the views see the mark
        assert len(sql) == 2 and sql[0].startswith("update sites") and "registry_changes" in sql[1], sql
        with transaction(engine) as s:
            states = dict(s.exec(select(Site.name, Site.reachability)).all())
            assert mark_unreachable(s, hub.settings, now=at) == [], "an unreachable site is not marked again"
    finally:
        engine.dispose()
    assert states == {"fast": "unreachable", "slow": "online", "silent": "unknown"}


@pytest.mark.parametrize(
    ("interval_s", "missed", "sweep_s"),
    [(15, 3, 5), (0.2, 3, 0.05), (1, 2, 0.3), (10, 3, 20)],
    ids=["defaults", "short", "two-beats", "sweep-slower-than-beats"],
)
def test_a_silent_site_is_unreachable_at_most_missed_intervals_after_its_last_heartbeat(
    tmp_path: Path, interval_s: float, missed: int, sweep_s: float
) -> None:
    """Sweep ticks come every ``sweep_s`` at an arbitrary phase from the last heartbeat; at
    whichever phase, the first tick that marks the site falls within ``missed`` intervals of
    its last heartbeat, and not more than one tick before that (the defaults: 40 to 45 s)."""
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    prepare_database(url)
    # The hub's own sweep never ticks here; the test plays the ticks with mark_unreachable.
    with running_hub(url, tmp_path / "data", missed_heartbeats=missed, sweep_interval_s=3600) as hub:
        _, token = _online_site(hub, tmp_path, "alpha")
        with hub.http(token) as c:
            assert c.post("/api/v1/sites/alpha/heartbeat", json={**heartbeat_body(), "interval_s": interval_s}).status_code == 200
    settings = hub.settings.model_copy(update={"sweep_interval_s": sweep_s})
    engine = make_engine(url)
    bound = timedelta(seconds=interval_s * missed)
    try:
        with transaction(engine) as s:
            last = s.exec(select(Site.last_heartbeat_at).where(Site.name == "alpha")).one()
        assert last is not None
        for phase in (0.0, 0.001, 0.25, 0.5, 0.999):
            tick = last + timedelta(seconds=phase * sweep_s)
            while True:
                with Session(engine) as s:  # rolled back: every tick sees the site online
                    marked = mark_unreachable(s, settings, now=tick)
                    s.rollback()
                if marked:
                    break
                tick += timedelta(seconds=sweep_s)
            assert tick - last <= bound, f"phase {phase}: unreachable {tick - last} after the last heartbeat"
            assert tick - last > bound - timedelta(seconds=sweep_s), f"phase {phase}: marked more than a tick early"
    finally:
        engine.dispose()


# ---------------------------------------------------------------- heartbeats written together


def _metric(hub: Hub, name: str) -> float:
    with hub.http() as c:
        line = next(x for x in c.get("/metrics").text.splitlines() if x.startswith(name + " "))
    return float(line.split()[1])


def _send_while_locked(hub: Hub, db: Path, beats: list[tuple[str, str]], while_locked: str | None = None) -> list[Any]:
    """Hold SQLite's write lock from another connection (as another process would) while
    every heartbeat reaches the hub and waits; run ``while_locked`` in that transaction; then
    commit and return each heartbeat's answer."""
    lock = sqlite3.connect(db, isolation_level=None, timeout=30)
    lock.execute("BEGIN IMMEDIATE")
    committed = False
    try:
        with ThreadPoolExecutor(len(beats)) as pool:

            def send(site: str, token: str) -> httpx.Response:
                with hub.http(token) as c:
                    c.timeout = httpx.Timeout(120)
                    return c.post(f"/api/v1/sites/{site}/heartbeat", json=heartbeat_body())

            answers = [pool.submit(send, site, token) for site, token in beats]
            wait_for(lambda: _metric(hub, "cryomesh_hub_heartbeats_pending") == len(beats), 50, "every heartbeat at the hub")
            if while_locked:
                lock.execute(while_locked)
            lock.execute("COMMIT")
            committed = True
            return [a.result() for a in answers]
    finally:
        if not committed:
            lock.execute("ROLLBACK")
        lock.close()


def test_heartbeats_waiting_together_are_written_in_one_transaction(tmp_path: Path) -> None:
    """While another writer holds the database, heartbeats of 12 sites arrive: they are
    written together once it lets go (at most two transactions: the one already waiting for
    the lock, and the rest), each answered for its own site and stored."""
    db = tmp_path / "hub.db"
    with running_hub(f"sqlite:///{db}", tmp_path / "data", database_busy_timeout_s=60) as hub:
        beats = [(str(s["name"]), token) for s, token in (_online_site(hub, tmp_path, f"site-{i}") for i in range(12))]
        before = _metric(hub, "cryomesh_hub_heartbeat_transactions")
        answers = _send_while_locked(hub, db, beats)
        assert [a.status_code for a in answers] == [200] * 12, [a.text for a in answers]
        assert [a.json()["site"] for a in answers] == [site for site, _ in beats]
        assert _metric(hub, "cryomesh_hub_heartbeat_transactions") - before <= 2
        with hub.as_admin() as c:
            summary = c.get("/api/v1/network/summary").json()
        assert summary["sites_by_reachability"] == {"online": 12} and summary["cpus_total"] == 12 * 64


def test_a_site_gone_in_a_batch_refuses_only_its_own_heartbeat(tmp_path: Path) -> None:
    """A site renamed after its agent's heartbeat passed the token check (the token still
    names the old name): that heartbeat is refused 404; the others in its batch are stored."""
    db = tmp_path / "hub.db"
    with running_hub(f"sqlite:///{db}", tmp_path / "data", database_busy_timeout_s=60) as hub:
        beats = [(str(s["name"]), token) for s, token in (_online_site(hub, tmp_path, f"site-{i}") for i in range(6))]
        answers = _send_while_locked(
            hub, db, beats, while_locked="UPDATE sites SET name = 'site-3-renamed' WHERE name = 'site-3'"
        )
        assert [a.status_code for a in answers] == [200, 200, 200, 404, 200, 200], [a.text for a in answers]
        assert answers[3].json() == {"error": "NotFound", "detail": "no site named 'site-3'"}
        with hub.as_admin() as c:
            sites = {s["name"]: s["reachability"] for s in c.get("/api/v1/network/summary").json()["sites"]}
        assert sites == {**{f"site-{i}": "online" for i in (0, 1, 2, 4, 5)}, "site-3-renamed": "unknown"}


def test_two_heartbeats_of_one_site_in_a_batch_store_the_later(db_url: str, tmp_path: Path) -> None:
    """On both engines (PostgreSQL refuses an upsert that touches one row twice in a statement)."""
    prepare_database(db_url)
    engine = make_engine(db_url)
    try:
        site_id = _add_site(engine)
        history = HistoryBuffer(engine, 300, 3600, 10_000)
        first = Heartbeat.model_validate(heartbeat_body(64, 48))
        second = Heartbeat.model_validate(heartbeat_body(64, 10))
        settings = HubSettings(database_url=db_url)
        with transaction(engine) as s:
            acks = record_heartbeats(s, [Beat(site_id, "alpha", first), Beat(site_id, "alpha", second)], settings, history)
        assert [a.site for a in acks] == ["alpha", "alpha"]
        with transaction(engine, write=False) as s:
            latest = s.get(CapacityLatest, site_id)
            assert latest is not None and latest.totals["cpus_free"] == 10
        assert history.pending() == 1, "both samples folded into the site's bucket"
    finally:
        engine.dispose()


def _stored(engine: Engine, site_id: int) -> dict[str, Any]:
    with transaction(engine, write=False) as s:
        row, site = s.get(CapacityLatest, site_id), s.get(Site, site_id)
        assert row is not None and site is not None and site.last_heartbeat_at and site.reachable_until
        return {
            "sampled_at": row.sampled_at, "agent_version": row.agent_version, "backend": row.backend, "totals": row.totals,
            "partitions": row.partitions, "storage": row.storage, "reachability": site.reachability,
            "site_agent_version": site.agent_version, "interval_s": site.heartbeat_interval_s,
            "deadline_s": (site.reachable_until - site.last_heartbeat_at).total_seconds(),
        }  # fmt: skip


def _expected(hb: Heartbeat, settings: HubSettings) -> dict[str, Any]:
    return {
        "sampled_at": hb.sampled_at, "agent_version": hb.agent_version, "backend": hb.backend,
        "totals": totals_of(hb).model_dump(), "partitions": [p.model_dump() for p in hb.partitions],
        "storage": [x.model_dump() for x in hb.storage], "reachability": "online", "site_agent_version": hb.agent_version,
        "interval_s": hb.interval_s, "deadline_s": hb.interval_s * settings.missed_heartbeats,
    }  # fmt: skip


def test_a_batch_is_one_or_two_statements_whatever_its_size_and_stores_what_lone_heartbeats_store(db_url: str) -> None:
    """Twenty sites' heartbeats written in one batch: one statement on PostgreSQL (taking the
    batch as arrays), two on SQLite (each executed with every site's values), and
    each site's snapshot, sign of life and reachability deadline are its own heartbeat's, as
    when heartbeats are written one at a time. A batch naming a site that is gone raises
    SiteGone and leaves every snapshot as it was."""
    prepare_database(db_url)
    engine = make_engine(db_url)
    try:
        with transaction(engine) as s:
            sites = [Site(name=f"site-{i}", display_name=f"Site {i}", institution="kek", country="JP") for i in range(30)]
            s.add_all(sites)
            s.flush()
            ids = [int(site.id) for site in sites if site.id is not None]
        history = HistoryBuffer(engine, 300, 3600, 10_000)
        settings = HubSettings(database_url=db_url)
        beats = [
            Beat(site_id, f"site-{i}", Heartbeat.model_validate(
                heartbeat_body(64 + i, i, interval_s=10 + i, agent_version=f"v{i}", sampled_at=f"2026-01-01T00:00:{i:02d}Z")
            ))
            for i, site_id in enumerate(ids)
        ]  # fmt: skip
        with _StatementLog(engine) as sql, transaction(engine) as s:
            record_heartbeats(s, beats[:20], settings, history)
        writes = [q for q in sql if "sites" in q or "capacity_latest" in q]
        assert len(writes) == (1 if engine.dialect.name == "postgresql" else 2), sql
        for b in beats[20:]:
            with transaction(engine) as s:
                record_heartbeats(s, [b], settings, history)
        for b in beats:
            assert _stored(engine, b.site_id) == _expected(b.hb, settings), b.site_name

        with transaction(engine) as s:
            s.get_one(Site, ids[3]).name = "site-3-renamed"
        again = [Beat(b.site_id, b.site_name, Heartbeat.model_validate(heartbeat_body(8, 0))) for b in beats[:6]]
        with pytest.raises(SiteGone), transaction(engine) as s:
            record_heartbeats(s, again, settings, history)
        for b in beats[:6]:
            assert _stored(engine, b.site_id) == _expected(b.hb, settings), "nothing of the refused batch stored"
    finally:
        engine.dispose()
