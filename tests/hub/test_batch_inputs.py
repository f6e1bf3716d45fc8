"""The batch placer groups jobs by what they need; jobs that differ only in their inputs or
sizes must not share one group's scores, or it places them where one-by-one placement would
not (earliest completion depends on where each job's data is and how big the job is)."""

from __future__ import annotations

from datetime import UTC, datetime

from hub.broker.batch import place_batch
from hub.broker.rules import Network, PartitionView, SiteView, evaluate, rank, reserve
from shared.schemas.jobs import JobSpec
from shared.schemas.sites import SitePolicy

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def _sites() -> list[SiteView]:
    net = Network(dataset_bytes={"big-a": 4 * 10**12, "big-b": 4 * 10**12}, holders={"big-a": {1}, "big-b": {2}})
    out = []
    for i, name, nodes in ((1, "site-a", 8), (2, "site-b", 64)):  # site-b: more headroom, so it wins near-ties
        v = SiteView(id=i, name=name, institution="x", country="JP", status="active", reachability="online",
                     partitions=[PartitionView("cpu", nodes, 64, 512, None, 0)], software=[("relion", "4.1", None)],
                     policy=SitePolicy(), has_snapshot=True, cpus_total=nodes * 64, cpus_free=nodes * 64,
                     datasets={f"big-{name[-1]}"}, network=net)  # fmt: skip
        out.append(v)
    return out


def _job(dataset: str, particles: int) -> JobSpec:
    return JobSpec.model_validate({
        "name": dataset, "kind": "relion.class2d", "inputs": [{"dataset": dataset}],
        "workload": {"particles": particles, "box_px": 256}, "resources": {"cpus": 32, "walltime_s": 86_400},
    })  # fmt: skip


def test_jobs_differing_only_in_inputs_go_where_their_data_is() -> None:
    jobs = [(_job("big-b", 200_000), "x"), (_job("big-a", 200_000), "x"), (_job("big-a", 300_000), "x")]
    one_by_one = []
    views = _sites()
    for spec, inst in jobs:
        best = rank([evaluate(spec, inst, v, NOW, set()) for v in views])[0]
        reserve(next(v for v in views if v.name == best.site), spec, None)
        one_by_one.append(best.site)
    assert one_by_one == ["site-b", "site-a", "site-a"], "each job stays with its 4 TB"
    assert [r.site.name if r.site else None for r in place_batch(jobs, _sites(), NOW)] == one_by_one
