"""The registry's change counter (hub/broker/changes.py) and the kept site views that read it
(hub/broker/cache.py): an unchanged registry costs a submission one counter read, not a
comparison of every site; every kind of registry write moves the counter, a heartbeat's sign
of life does not, and what a heartbeat changes (capacity, a silent site heard again) is still
seen by the next submission, also when another process wrote it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, update
from sqlmodel import Session, col, select

from bench.broker import NOW, seed
from hub.broker.cache import SiteViewCache
from hub.broker.changes import note_change, registry_changes
from hub.broker.rules import reserve
from hub.capacity.history_buffer import HistoryBuffer
from hub.capacity.service import Beat, mark_unreachable, record_heartbeats
from hub.datasets.models import Dataset, Replica
from hub.db import make_engine, transaction
from hub.estimates.models import RuntimeStat
from hub.jobs.models import SitePolicyRow
from hub.settings import HubSettings
from hub.sites.models import PartitionRow, Site, SoftwareRow
from hub.sites.service import set_status
from hub.types import utcnow
from shared.schemas.capacity import Heartbeat
from shared.schemas.jobs import JobSpec
from shared.schemas.sites import SiteStatus
from tests.helpers import heartbeat_body

SPEC = JobSpec.model_validate({"name": "j", "kind": "generic.command", "command": ["x"], "resources": {"cpus": 1}})
REPO = Path(__file__).resolve().parents[2]


def _id(s: Session, name: str) -> int:
    found = s.exec(select(Site.id).where(Site.name == name)).one()
    assert found is not None
    return found


def _beat(s: Session, name: str, idle: int) -> Beat:
    hb = Heartbeat.model_validate(heartbeat_body(128, idle, None, sampled_at=utcnow().isoformat()))
    return Beat(_id(s, name), name, hb)


def test_each_registry_write_moves_the_counter_and_a_sign_of_life_does_not(db_url: str) -> None:
    seed(db_url, 0, 5)
    engine = make_engine(db_url)
    settings = HubSettings(database_url=db_url)
    history = HistoryBuffer(engine, 300, 3600, 10_000)

    def moves(change: Callable[[Session], object]) -> bool:
        with transaction(engine, write=False) as s:
            before = registry_changes(s)
        with transaction(engine) as s:
            change(s)
        with transaction(engine, write=False) as s:
            return registry_changes(s) != before

    def dataset(s: Session) -> None:
        s.add(Dataset(id="ds-1", owner_site_id=_id(s, "site-0001"), institution="inst-1", title="d", experiment_type="SPA",
                      visibility="network", meta={}, checksum_algorithm="sha256", manifest_digest="0" * 64, file_count=1,
                      total_bytes=10**9, registered_by="t"))  # fmt: skip

    def rolled_back(s: Session) -> None:
        s.execute(update(Site).where(col(Site.name) == "site-0002").values(status="suspended"))
        s.rollback()

    try:
        with transaction(engine, write=False) as s:
            assert registry_changes(s) == 1, "seeding wrote the registry once"
        assert moves(lambda s: set_status(s, "site-0000", SiteStatus.SUSPENDED))  # an ORM edit
        assert moves(lambda s: s.execute(update(Site).where(col(Site.name) == "site-0001").values(reachability="unknown")))
        assert not moves(lambda s: s.execute(update(Site).where(col(Site.name) == "nowhere").values(status="active")))
        assert moves(lambda s: s.add(SoftwareRow(site_id=_id(s, "site-0003"), name="cryosparc", version="4.4")))
        assert moves(lambda s: s.execute(delete(PartitionRow).where(col(PartitionRow.site_id) == _id(s, "site-0003"))))
        assert moves(lambda s: s.add(SitePolicyRow(site_id=_id(s, "site-0004"), cpu_share=0.5)))
        assert moves(lambda s: s.add(RuntimeStat(site_id=_id(s, "site-0004"), kind="relion.refine3d", n=5, mean=-0.7)))
        assert not moves(dataset), "a dataset with no copy yet places nothing"
        assert moves(lambda s: s.add(Replica(dataset_id="ds-1", site_id=_id(s, "site-0002"), state="AVAILABLE",
                                             location="s3://b/d")))  # fmt: skip
        assert not moves(rolled_back)
        assert not moves(lambda s: record_heartbeats(s, [_beat(s, "site-0002", 64)], settings, history)), "a sign of life"
        far = utcnow() + timedelta(hours=1)
        assert moves(lambda s: mark_unreachable(s, settings, now=far)), "the sweep marks silent sites"
        assert not moves(lambda s: mark_unreachable(s, settings, now=far)), "a sweep that marks none"
        assert moves(note_change)
        assert moves(lambda s: s.execute(delete(Site).where(col(Site.name) == "site-0004")))
    finally:
        engine.dispose()


def test_an_unchanged_registry_is_not_compared_and_heartbeats_are_seen(db_url: str) -> None:
    seed(db_url, 0, 150, heard_at=utcnow())
    engine = make_engine(db_url)
    settings = HubSettings(database_url=db_url)
    history = HistoryBuffer(engine, 300, 3600, 10_000)
    cache = SiteViewCache(max_age_s=3600)  # nothing read again by age

    def views() -> dict[str, tuple[int, str]]:
        with transaction(engine) as s, cache.views(s, NOW) as kept:
            cache.board(NOW)
            return {v.name: (v.cpus_free, v.reachability) for v in kept}

    def heartbeat(name: str, idle: int) -> None:
        with transaction(engine) as s:
            record_heartbeats(s, [_beat(s, name, idle)], settings, history)

    try:
        with transaction(engine) as s:  # every site heard from within its deadline
            s.execute(update(Site).values(reachable_until=utcnow() + timedelta(days=1)))
        views()
        compared = cache.compared
        views()
        assert cache.compared == compared, "nothing changed: the registry is not compared"
        heartbeat("site-0010", 17)  # capacity changes between two submissions
        assert views()["site-0010"] == (17, "online")
        assert cache.compared == compared and cache.reloads == 1, "a capacity report moves no counter"
        with transaction(engine) as s:  # the sweep finds site-0011 silent
            s.execute(update(Site).where(col(Site.name) == "site-0011").values(reachable_until=NOW))
            assert mark_unreachable(s, settings) == ["site-0011"]
        assert views()["site-0011"][1] == "unreachable"
        assert cache.compared == compared + 1
        heartbeat("site-0011", 23)  # heard again: online, with no registry change
        assert views()["site-0011"] == (23, "online")
        with transaction(engine) as s:  # silent again: the views must not keep the state the heartbeat left
            s.execute(update(Site).where(col(Site.name) == "site-0011").values(reachable_until=NOW))
            assert mark_unreachable(s, settings) == ["site-0011"]
        assert views()["site-0011"][1] == "unreachable"
        assert cache.reloads == 1
    finally:
        engine.dispose()


def test_a_placement_that_fails_after_reserving_holds_nothing(db_url: str) -> None:
    seed(db_url, 0, 150)
    engine = make_engine(db_url)
    cache = SiteViewCache(max_age_s=3600)
    try:
        with transaction(engine) as s, cache.views(s, NOW) as views:
            before = views[7].unseen_cpus
        with pytest.raises(RuntimeError), transaction(engine) as s, cache.views(s, NOW) as views:
            reserve(views[7], SPEC, None)  # no attempt written: nothing in the database says which site
            raise RuntimeError("the placement failed")
        with transaction(engine) as s, cache.views(s, NOW) as views:
            assert views[7].unseen_cpus == before, "the reservation was recounted away"
    finally:
        engine.dispose()


CHANGE_ELSEWHERE = """
import sys
from sqlalchemy import update
from sqlmodel import col, select
from hub.capacity.history_buffer import HistoryBuffer
from hub.capacity.service import Beat, record_heartbeats
from hub.db import make_engine, transaction
from hub.settings import HubSettings
from hub.sites.models import Site
from hub.types import utcnow
from shared.schemas.capacity import Heartbeat
from tests.helpers import heartbeat_body

url, what = sys.argv[1], sys.argv[2]
engine = make_engine(url)
with transaction(engine) as s:
    if what == "suspend":
        s.execute(update(Site).where(col(Site.name) == "site-0020").values(status="suspended", updated_at=utcnow()))
    else:
        hb = Heartbeat.model_validate(heartbeat_body(128, 29, None, sampled_at=utcnow().isoformat()))
        site_id = s.exec(select(Site.id).where(Site.name == "site-0021")).one()
        history = HistoryBuffer(engine, 300, 3600, 100)
        record_heartbeats(s, [Beat(site_id, "site-0021", hb)], HubSettings(database_url=url), history)
engine.dispose()
"""


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_change_made_by_another_process_is_seen_by_the_next_submission(db_url: str) -> None:
    seed(db_url, 0, 150, heard_at=utcnow())
    engine = make_engine(db_url)
    cache = SiteViewCache(max_age_s=3600)

    def views() -> dict[str, tuple[str, int]]:
        with transaction(engine) as s, cache.views(s, NOW) as kept:
            return {v.name: (v.status, v.cpus_free) for v in kept}

    def elsewhere(what: str) -> None:
        code = textwrap.dedent(CHANGE_ELSEWHERE)
        subprocess.run([sys.executable, "-c", code, db_url, what], cwd=REPO, check=True, timeout=120)

    try:
        assert views()["site-0020"][0] == "active"
        elsewhere("suspend")
        assert views()["site-0020"][0] == "suspended"
        elsewhere("heartbeat")
        assert views()["site-0021"][1] == 29
        assert (cache.reloads, cache.edits) == (1, 1)
    finally:
        engine.dispose()
