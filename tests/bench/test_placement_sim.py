"""The placement simulation's accounting, on a tiny scenario (a few days, one microscope
session a day): what `make bench` reports is only as good as this bookkeeping."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from bench.placement_scenario import Scenario, SimJob, SiteSpec, build, view
from bench.placement_sim import POLICIES, Outcome, metrics, simulate
from hub.broker.rules import DEFAULT_COPY_BPS, PartitionView
from shared.schemas.jobs import JobSpec
from shared.schemas.sites import PartitionCost


@pytest.fixture(scope="module")
def tiny() -> tuple[object, dict[str, Outcome]]:
    sc = build(seed=7, days=3, session_every_h=24, lend=0.5)
    return sc, {p: simulate(sc, p) for p in POLICIES}


def test_every_job_completes_once_with_sane_times(tiny) -> None:  # type: ignore[no-untyped-def]
    sc, outcomes = tiny
    ids = {j.id for j in sc.jobs}
    assert len(ids) > 20, "the tiny scenario still has work"
    for policy, o in outcomes.items():
        assert set(o.runs) == ids and not o.never and not o.stuck, policy
        assert o.submit == {j.id: j.submit for j in sc.jobs}, "every policy sees the same jobs"
        for r in o.runs.values():
            assert o.submit[r.job] <= r.placed <= r.end, (policy, r)
            assert r.run_s > 0 and r.end - r.placed >= r.run_s - 1e-6 and r.cost >= 0 and r.moved >= 0


def test_capacity_is_never_exceeded(tiny) -> None:  # type: ignore[no-untyped-def]
    """At no moment do the jobs a site holds use more CPUs or GPUs than it lends."""
    sc, outcomes = tiny
    jobs = {j.id: j for j in sc.jobs}
    for policy, o in outcomes.items():
        for i, s in enumerate(sc.sites):
            v = view(i, s, sc.lend)
            cpus = int(v.cpus_total * v.policy.cpu_share)
            gpus = int(sum(v.gpus_total.values()) * v.policy.gpu_share)
            held = [r for r in o.runs.values() if r.site == i]
            for t in {r.placed for r in held}:
                now = [jobs[r.job].spec.resources for r in held if r.placed <= t < r.end]
                assert sum(x.cpus for x in now) <= cpus and sum(x.gpus for x in now) <= gpus, (policy, s.name, t)


def test_policies_differ_where_they_should(tiny) -> None:  # type: ignore[no-untyped-def]
    sc, outcomes = tiny
    own = set(range(len(sc.sites)))
    inst = {j.id: j.institution for j in sc.jobs}
    nofed = outcomes["no-federation"]
    assert all(sc.sites[r.site].institution == inst[r.job] for r in nofed.runs.values()), "no federation: own sites only"
    rr = outcomes["round-robin"]
    assert len({r.site for r in rr.runs.values()}) == len(own), "round-robin reaches every site"
    for p, o in outcomes.items():
        m = metrics(sc, o)
        assert m["jobs"] == len(sc.jobs) and m["mean_h"] > 0 and m["p95_h"] >= m["mean_h"] * 0.5, p
        assert 0 <= m["gpu_util"] <= 1 and m["moved_tb"] >= 0, p


def test_same_seed_same_month() -> None:
    a, b = build(seed=3, days=2), build(seed=3, days=2)
    assert [(j.submit, j.spec) for j in a.jobs] == [(j.submit, j.spec) for j in b.jobs] and a.speed == b.speed
    o1, o2 = simulate(a, "earliest"), simulate(b, "earliest")
    assert {k: (r.site, r.end) for k, r in o1.runs.items()} == {k: (r.site, r.end) for k, r in o2.runs.items()}


def _cloud_spec(name: str = "kek-aws") -> SiteSpec:
    """One elastic site: a spot and an on-demand partition of one 64-core node each."""
    cost = PartitionCost(instance_type="c6i.16xlarge", on_demand_node_hour=2.72, spot_node_hour=1.09, node_startup_s=600,
                         as_of=date(2026, 11, 1), source="test")  # fmt: skip
    return SiteSpec(name, "kek", 0, [PartitionView("c6i-spot", 1, 64, 512.0, None, 0, True, cost),
                                     PartitionView("c6i", 1, 64, 512.0, None, 0, False, cost)])  # fmt: skip


def _spec(name: str, cpus: int = 64, dataset: str | None = None) -> JobSpec:
    raw: dict[str, Any] = {
        "name": name,
        "kind": "relion.motioncorr",
        "resources": {"cpus": cpus, "memory_gb": 64, "walltime_s": 7200},
    }
    if dataset:
        raw["inputs"] = [{"dataset": dataset}]
    return JobSpec.model_validate(raw)


def _scenario(sites: list[SiteSpec], specs: list[JobSpec], sizes: dict[str, int] | None = None,
              link_bps: float = 1e9) -> Scenario:  # fmt: skip
    jobs = [SimJob(k, 0.0, "kek", s) for k, s in enumerate(specs)]
    links = {(a, b): link_bps for a in range(len(sites)) for b in range(len(sites)) if a != b}
    return Scenario(sites, jobs, dict(sizes or {}), dict.fromkeys(sizes or {}, 0), {s.name: 1.0 for s in sites}, links,
                    {j.id: 1.0 for j in jobs})  # fmt: skip


def test_each_run_is_priced_and_started_on_the_partition_its_verdict_chose() -> None:
    """Two preemptible jobs of a whole node each, one spot node and one on-demand node: the first
    takes the spot node (cheaper), the second finds the spot partition full (as the agent reports
    it) and runs on demand, at the on-demand price."""
    sc = _scenario([_cloud_spec()], [_spec("a"), _spec("b")])
    o = simulate(sc, "earliest")
    a, b = o.runs[0], o.runs[1]
    assert (a.partition, b.partition) == ("c6i-spot", "c6i")
    assert a.end == b.end == 600 + a.run_s, "both booted a node and ran at once"
    assert abs(a.cost - 1.09 * (a.run_s + 600) / 3600) < 1e-9 and abs(b.cost - 2.72 * (b.run_s + 600) / 3600) < 1e-9


def test_a_cloud_partition_holds_no_more_nodes_than_its_maximum() -> None:
    """Two 32-CPU jobs hold the two one-node partitions (a job holds its whole nodes, as it pays
    for them): a third of 16 CPUs waits for a node, though the site counted by CPUs alone has room."""
    sc = _scenario([_cloud_spec()], [_spec("a", cpus=32), _spec("b", cpus=32), _spec("c", cpus=16)])
    for k in (1, 2):  # each after the agent's report of the last (within one pass the hub counts CPUs, not nodes)
        sc.jobs[k].submit = float(k)
    o = simulate(sc, "earliest")
    assert (o.runs[0].partition, o.runs[1].partition) == ("c6i-spot", "c6i")
    assert o.runs[2].placed == min(o.runs[0].end, o.runs[1].end), "placed when a node came free, not before"


def test_copies_over_one_link_share_its_rate() -> None:
    """Two 1 TB copies over a 1 GB/s link, asked for a second apart, share it: each lands after
    about 2,000 s of moving bytes (plus the set-up), where alone each would take 1,000 s; the
    broker's estimate for the second counts the first, under way (not yet measured: the default rate)."""
    home = SiteSpec("kek-cryo", "kek", 1, [PartitionView("gpu", 1, 8, 512.0, "v100", 4)])  # too small for the jobs
    sc = _scenario([home, _cloud_spec()], [_spec("a", dataset="d1"), _spec("b", dataset="d2")], {"d1": 10**12, "d2": 10**12})
    sc.jobs[1].submit = 1.0
    shared = simulate(sc, "earliest")
    alone = simulate(sc, "earliest", share_links=False)
    assert [round(shared.runs[k].copy_s) for k in (0, 1)] == [300 + 1999] * 2
    assert [round(alone.runs[k].copy_s) for k in (0, 1)] == [300 + 1000] * 2
    assert [shared.runs[k].est_copy_s for k in (0, 1)] == [300 + 10**12 / DEFAULT_COPY_BPS, 300 + 2 * 10**12 / DEFAULT_COPY_BPS]
    blind = simulate(sc, "earliest", see_in_flight=False)
    assert blind.runs[1].est_copy_s == blind.runs[0].est_copy_s


def _pinned(name: str, site: str, dataset: str) -> JobSpec:
    spec = _spec(name, dataset=dataset)
    return spec.model_copy(update={"placement": spec.placement.model_copy(update={"allowed_sites": [site]})})


def test_a_copy_comes_from_the_holder_the_estimate_assumed() -> None:
    """kek-cryo owns d1 (1 TB) and d2 (4 TB). Job a brings d1 to aws-a; job c is bringing d2 to
    aws-b from kek-cryo when job b at aws-b needs d1: the link from kek-cryo is busy, the one from
    aws-a is not, so the estimate and the copy take aws-a (1,000 s alone at 1 GB/s). Copied from the
    owner instead (the hub before), d1 shares kek-cryo's link with d2 and lands later than estimated."""
    home = SiteSpec("kek-cryo", "kek", 1, [PartitionView("gpu", 1, 8, 512.0, "v100", 4)])  # too small for the jobs
    specs = [_pinned("a", "aws-a", "d1"), _pinned("c", "aws-b", "d2"), _pinned("b", "aws-b", "d1")]
    sc = _scenario([home, _cloud_spec("aws-a"), _cloud_spec("aws-b")], specs, {"d1": 10**12, "d2": 4 * 10**12})
    sc.jobs[1].submit, sc.jobs[2].submit = 1400.0, 1500.0
    fastest, owner = simulate(sc, "earliest"), simulate(sc, "earliest", copy_from="owner")
    assert [(src, dst, size) for src, dst, _, _, size in fastest.copies] == [(0, 1, 10**12), (1, 2, 10**12), (0, 2, 4 * 10**12)]
    assert fastest.from_other == 1 and owner.from_other == 0
    assert fastest.runs[2].est_copy_s == owner.runs[2].est_copy_s == 300 + 10**12 / DEFAULT_COPY_BPS, "the same estimate"
    assert round(fastest.runs[2].copy_s) == 300 + 1000
    assert owner.runs[2].copy_s > 300 + 1900, "shares kek-cryo's link with d2 all the way"
    assert [(src, dst) for src, dst, _, _, _ in owner.copies if dst == 2] == [(0, 2), (0, 2)]


def test_copies_out_of_one_site_share_its_uplink() -> None:
    """Two 1 TB copies from kek-cryo to two sites, a second apart: over separate links (pairs) each
    moves in 1,000 s; sharing kek-cryo's uplink each takes about 2,000 s, and the broker's estimate
    for the second counts the first, though it goes elsewhere."""
    home = SiteSpec("kek-cryo", "kek", 1, [PartitionView("gpu", 1, 8, 512.0, "v100", 4)])
    sc = _scenario([home, _cloud_spec("aws-a"), _cloud_spec("aws-b")], [_pinned("a", "aws-a", "d1"), _pinned("b", "aws-b", "d2")],
                   {"d1": 10**12, "d2": 10**12})  # fmt: skip
    sc.jobs[1].submit = 1.0
    pairs, uplink = simulate(sc, "earliest"), simulate(sc, "earliest", uplinks=True)
    assert [round(pairs.runs[k].copy_s) for k in (0, 1)] == [300 + 1000] * 2
    assert [round(uplink.runs[k].copy_s) for k in (0, 1)] == [300 + 1999] * 2
    assert pairs.runs[1].est_copy_s == 300 + 10**12 / DEFAULT_COPY_BPS
    assert uplink.runs[1].est_copy_s == 300 + 2 * 10**12 / DEFAULT_COPY_BPS
