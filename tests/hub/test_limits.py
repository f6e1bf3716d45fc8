"""Sites ruled out by a job's deadline and max_cost: the bounds that spare most sites a
judgement (hub/broker/limits.py) against judging every site (``rules.evaluate``).

The reference groups every site ``rules.evaluate`` finds ineligible by its first reason, in
name order, and counts those ruled out for good. ``limits.ruled_out`` must give exactly that,
on random networks (tests/hub/test_placer_equivalence.py's: cloud prices with charged
start-ups, elastic sites reporting node start-ups per partition, learned run times, closed
sites) for jobs whose deadlines and max_cost fall anywhere from "no site can meet it" to "every
site does", with the board kept between submissions as a hub process keeps it: each
placement reserved, and sites' reported start-ups and capacity changing between submissions.
Deliberately broken bounds must fail the same comparison.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from hub.broker import limits, search
from hub.broker.limits import ruled_out, within_limits
from hub.broker.rules import PartitionView, SiteView, evaluate, reserve
from hub.broker.search import Board, Candidates, Fixed
from hub.broker.service import decide_by_scan, decide_by_search
from shared.schemas.jobs import JobSpec
from shared.schemas.sites import PartitionCost, SitePolicy
from tests.hub.test_placer_equivalence import INSTITUTIONS, NOW, _spec, network


def full_judgement(spec: JobSpec, institution: str, views: list[SiteView], now: datetime) -> tuple[dict[str, list[str]], int]:
    groups: dict[str, list[str]] = {}
    for_good = 0
    for v in sorted(views, key=lambda v: v.name):
        verdict = evaluate(spec, institution, v, now, set())
        if not verdict.eligible:
            groups.setdefault(verdict.reasons[0], []).append(v.name)
            for_good += verdict.never
    return groups, for_good


def limited(rng: random.Random, n_sites: int, j: int) -> JobSpec:
    """A random job with a deadline, a max_cost or both, from a few minutes to ten days, from
    a cent to a thousand: some no site meets, some every site does, most in between."""
    raw: dict[str, Any] = _spec(rng, n_sites, j).model_dump(mode="json", exclude={"deadline", "max_cost"})
    pick = rng.random()
    if pick < 0.7:
        raw["deadline"] = (NOW + timedelta(seconds=10 ** rng.uniform(2.5, 6))).isoformat()
    if pick > 0.4:
        raw["max_cost"] = round(10 ** rng.uniform(-2, 3), 3)
    return JobSpec.model_validate(raw)


def _snapshot(rng: random.Random, view: SiteView) -> None:
    """A new capacity report: few CPUs free on nodes up, the others on nodes it can start,
    which take from nothing to hours to start (the site's and each partition's)."""
    view.cpus_free = rng.randint(0, view.cpus_total // 4)
    view.cpus_bootable = view.cpus_total - view.cpus_free
    view.boot_s = rng.choice([0, 600, 3600, 4 * 3600])
    for p in view.partitions:
        if (part := view.part_now.get(p.name)) is not None:
            part.cpus_free = rng.randint(0, p.node_count * p.cores_per_node // 4)
            part.cpus_bootable = p.node_count * p.cores_per_node - part.cpus_free
            part.boot_s = rng.choice([0, 1800, 7200])


def differences(seed: int, n_sites: int = 150, n_jobs: int = 60) -> tuple[list[int], int, int]:
    """(the submissions whose ruled-out sites differ from the full judgement's, or whose
    decision differs from scoring every site's; sites the bounds cleared; sites judged)."""
    rng = random.Random(seed + 2000)
    views = sorted(network(random.Random(seed), n_sites), key=lambda v: v.name)
    by_id = {v.id: v for v in views}
    fixed: dict[str, Fixed] = {}
    board: Board | None = None
    changed: set[int] = set()
    wrong, cleared, judged = [], 0, 0
    for j in range(n_jobs):
        spec, institution = limited(rng, n_sites, j), rng.choice(INSTITUTIONS)
        now = NOW + timedelta(minutes=j)
        board = Board(views, now, fixed) if board is None else board.at(now, changed)
        needs = board.needs_of(spec)
        Candidates(needs, spec).best(institution)
        eligible = needs.fixed.ok & board.lends(institution)
        clear = within_limits(needs, spec)
        cleared += int((eligible & clear).sum())
        judged += int((eligible & ~clear).sum())
        scan = decide_by_scan(spec, institution, views, now, set(), set())
        same = ruled_out(needs, spec, institution) == full_judgement(spec, institution, views, now)
        if not same or decide_by_search(spec, institution, views, now, fixed, board.at(now, ())) != scan:
            wrong.append(j)
        changed = set()
        if scan.best is not None:
            site = next(v for v in views if v.name == scan.best.site)
            reserve(site, spec, scan.best.gpu_model, scan.best.partition)
            changed.add(site.id)
        for site_id in rng.sample(sorted(by_id), 10):
            _snapshot(rng, by_id[site_id])
            changed.add(site_id)
    return wrong, cleared, judged


@pytest.mark.parametrize("seed", range(4))
def test_the_sites_ruled_out_by_limits_are_those_judging_every_site_rules_out(seed: int) -> None:
    wrong, cleared, judged = differences(seed)
    assert wrong == [], f"submissions {wrong} differ from judging every site"
    assert cleared > 0 and judged > 0, "sites cleared by the bounds and sites judged: both paths compared"


def test_a_deadline_no_site_can_meet_is_explained_for_every_site() -> None:
    views = sorted(network(random.Random(7), 150), key=lambda v: v.name)
    spec = JobSpec.model_validate(
        {"name": "j", "kind": "generic.command", "command": ["x"], "deadline": (NOW + timedelta(seconds=30)).isoformat()}
    )
    board = Board(views, NOW)
    needs = board.needs_of(spec)
    assert not Candidates(needs, spec).best("inst-0")
    groups, for_good = ruled_out(needs, spec, "inst-0")
    assert (groups, for_good) == full_judgement(spec, "inst-0", views, NOW)
    late = [names for reason, names in groups.items() if "after the deadline" in reason]
    assert sum(map(len, late)) > 50, "each open site with room is named with its soonest finish"
    assert not within_limits(needs, spec)[needs.fixed.ok].any()


BROKEN: dict[str, Callable[[pytest.MonkeyPatch], None]] = {
    # start-ups left out of the bound: sites whose node start-up makes them late, or dear, are cleared
    "reported start-ups ignored": lambda mp: mp.setattr(search, "_longest_boot", lambda view: 0),
    # the board keeps a site's start-up from its first report: a longer one reported later is missed
    "start-ups not recounted": lambda mp: mp.setattr(search.Board, "at", _at_without_boot),
    # p90 bounded by p50: sites whose p90 misses the deadline are cleared
    "p90 taken as p50": lambda mp: mp.setattr(search.Board, "spread", lambda self, kind: np.ones(len(self.views))),
    # a margin the wrong way: bounds a little below what they bound
    "margin the wrong way": lambda mp: mp.setattr(limits, "_RELATIVE", -0.2),
}

_at = Board.at


def _at_without_boot(self: Board, now: datetime, changed: Any) -> Board:
    boot = self.boot.copy()
    out = _at(self, now, changed)
    self.boot = boot
    return out


@pytest.mark.parametrize("breakage", sorted(BROKEN))
def test_the_comparison_catches_wrong_bounds(breakage: str, monkeypatch: pytest.MonkeyPatch) -> None:
    BROKEN[breakage](monkeypatch)
    assert any(differences(seed)[0] for seed in range(4)), f"{breakage}: no difference found"


def test_the_bounds_clear_a_week_away_deadline_everywhere_at_no_cost() -> None:
    """What the submit benchmark sends: every site within the limits is cleared, none judged."""
    views = sorted(network(random.Random(3), 150), key=lambda v: v.name)
    spec = JobSpec.model_validate({"name": "j", "kind": "generic.command", "command": ["x"], "resources": {"cpus": 1},
                                   "deadline": (NOW + timedelta(days=7)).isoformat(), "max_cost": 1000.0})  # fmt: skip
    needs = Board(views, NOW).needs_of(spec)
    assert within_limits(needs, spec)[needs.fixed.ok].all()
    assert ruled_out(needs, spec, "inst-0") == full_judgement(spec, "inst-0", views, NOW)


def _dear_to_start(rates: str) -> SiteView:
    """A site with a partition the job fits, priced per CPU-hour, and a cloud partition of
    nodes too small for it, whose half-hour start-up makes it cheaper for an hour's work
    (``rules.price`` prices a job there: the cheapest partition with enough cores in all)."""
    fits = PartitionView("a-rates", 1, 64, 512, None, 0, cost=PartitionCost(cpu_hour=0.1, as_of=date(2026, 11, 1)))
    small = PartitionView("b-cloud", 4, 16, 512, None, 0, cost=PartitionCost(
        instance_type="c", on_demand_node_hour=1.0, node_startup_s=1800, as_of=date(2026, 11, 1)))  # fmt: skip
    v = SiteView(1, rates, "inst-0", "JP", "active", "online", [fits, small], [], SitePolicy(), has_snapshot=True,
                 cpus_total=128, cpus_free=128)  # fmt: skip
    return v


@pytest.mark.parametrize("broken", [False, True])
def test_max_cost_is_bounded_as_the_check_for_good_prices_it(broken: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check for good prices the cheapest partition for an hour (here one the job does not
    fit): 1.17 for its 5 minutes, where the partition it would run on costs 0.27. Bounds
    that left that pricing out would clear the site; the comparison catches them."""
    if broken:
        monkeypatch.setattr(limits, "price", lambda *args: None)
        build = limits.Pairs._build.__func__  # type: ignore[attr-defined]

        def without_unpriced(cls: type[limits.Pairs], spec: JobSpec, fixed: Fixed) -> limits.Pairs:
            pairs: limits.Pairs = build(cls, spec, fixed)
            pairs.unpriced[:] = False
            return pairs

        monkeypatch.setattr(limits.Pairs, "_build", classmethod(without_unpriced))
    views = [_dear_to_start("site-a")]
    spec = JobSpec.model_validate({"name": "j", "kind": "generic.command", "command": ["x"],
                                   "resources": {"cpus": 32, "walltime_s": 600}, "max_cost": 0.5})  # fmt: skip
    needs = Board(views, NOW).needs_of(spec)
    expected = ({"would cost ≈ 1.17 (5 m on b-cloud + 30 m start-up), above the job's max_cost 0.5": ["site-a"]}, 1)
    assert full_judgement(spec, "inst-0", views, NOW) == expected
    assert (ruled_out(needs, spec, "inst-0") == expected) is not broken
