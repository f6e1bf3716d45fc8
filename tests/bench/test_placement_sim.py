"""The placement simulation's accounting, on a tiny scenario (a few days, one microscope
session a day): what `make bench` reports is only as good as this bookkeeping."""

from __future__ import annotations

import pytest

from bench.placement_scenario import build, view
from bench.placement_sim import POLICIES, Outcome, metrics, simulate


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
