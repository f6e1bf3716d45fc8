"""A site's view as the broker loads it from the registry and the latest snapshot
(hub/broker/views.py ``load_views``, which reads columns, not ORM objects): software in
name order, rows of one name in the order they were written; the lending policy; a
partition's price; the partitions a site reports when the registry describes none; and the
same views when only some sites are read again."""

from __future__ import annotations

from datetime import date

from sqlalchemy import delete, update
from sqlmodel import select

from bench.broker import NOW, seed
from hub.broker.rules import PartitionView
from hub.broker.views import load_views
from hub.capacity.models import CapacityLatest
from hub.db import make_engine, transaction
from hub.jobs.models import SitePolicyRow
from hub.sites.models import PartitionRow, SoftwareRow
from shared.schemas.sites import PartitionCost, SitePolicy, TimeWindow

REPORTED = [
    {"name": "batch", "nodes_total": 10, "cpus_total": 640, "cpus_allocated": 476, "cpus_idle": 100, "cpus_bootable": 64,
     "memory_total_mb": 2_560_000, "memory_free_mb": 100_000, "elastic": True, "resume_timeout_s": 300,
     "gpus": [{"model": "a100", "total": 40, "free": 5, "bootable": 3}]},
]  # fmt: skip


def test_a_view_holds_what_the_registry_and_the_snapshot_say(db_url: str) -> None:
    seed(db_url, 0, 3)
    engine = make_engine(db_url)
    try:
        with transaction(engine) as s:
            first = s.exec(select(SoftwareRow).where(SoftwareRow.site_id == 1)).one()
            for name, version, arch in (("relion", "5.0", None), ("relion", "4.0", "8.0"), ("ctffind", "4.1", None)):
                s.add(SoftwareRow(site_id=1, name=name, version=version, cuda_arch=arch))
                s.flush()  # one row after another: ids in this order
            s.add(SitePolicyRow(site_id=2, cpu_share=0.5, allowed_institutions=["inst-1"],
                                windows=[{"days": ["mon", "tue"], "start": "08:00", "end": "18:00"}]))  # fmt: skip
            cost = {"cpu_hour": 0.02, "as_of": "2026-11-01"}
            s.execute(update(PartitionRow).where(PartitionRow.site_id == 2).values(cost=cost))
            s.execute(delete(PartitionRow).where(PartitionRow.site_id == 3))  # site 3: judged by what it reports
            s.execute(update(CapacityLatest).where(CapacityLatest.site_id == 3).values(partitions=REPORTED))
        with transaction(engine) as s:
            views, sampled_at, described = load_views(s, NOW)
            again, _, described_again = load_views(s, NOW, only=[2, 3], network=views[1].network)
    finally:
        engine.dispose()

    assert [v.name for v in views.values()] == ["site-0000", "site-0001", "site-0002"]
    assert views[1].software == [("ctffind", "4.1", None), ("relion", first.version, None), ("relion", "5.0", None),
                                 ("relion", "4.0", "8.0")]  # fmt: skip
    assert views[1].policy == SitePolicy() and views[3].policy == SitePolicy()
    window = TimeWindow(days=["mon", "tue"], start="08:00", end="18:00")
    assert views[2].policy == SitePolicy(cpu_share=0.5, allowed_institutions=["inst-1"], windows=[window])
    assert [p.cost for p in views[2].partitions] == [PartitionCost(cpu_hour=0.02, as_of=date(2026, 11, 1))]
    assert views[3].partitions == [PartitionView("batch", 10, 64, 250.0, "a100", 4, False)]
    assert views[3].part_now["batch"].cpus_free == 100 and views[3].boot_s == 300
    assert described == {1, 2} and set(sampled_at) == {1, 2, 3}
    assert list(again) == [2, 3] and described_again == {2}
    for site_id in (2, 3):
        assert again[site_id] == views[site_id]
