"""Which sites a job's deadline and max_cost rule out, and why, without judging every site.

A job's decision names every site ruled out, by the first reason ``rules.evaluate`` gives.
A deadline or a max_cost adds reasons of its own: max_cost among the checks for good
(``rules.within_max_cost``), then, after the site's being closed and its room
(``search.Needs``), both again on the partitions with room now (``rules.beyond_limits``).
Judging each site that passes the checks for good took about 30 µs a site: a third of a
second per submission at 10,000 sites, against a few milliseconds for a job without limits.

Most sites are within both limits by far, and upper bounds kept as arrays show it:

- ``Pairs``, per kind of job (kept on its ``search.Fixed``, so between submissions): each
  site's partitions the job could ever use (``rules._usable``, whatever is free now), with
  the price per hour of the job's footprint there and the start-up it is charged; and what
  ``within_max_cost`` prices at each site (the cheapest partition for each GPU model).
- per job, one vector pass: each pair's run time as ``estimates.model.estimate`` gives it
  (p50 = prior x e^bias, p90 = p50 x e^(Z90 sd), capped at the walltime; the board keeps
  e^bias and e^(Z90 sd) per site) and a start-up no longer than the charged one or, if none
  is charged, the longest the site or any of its partitions reports (``Board.boot``).

A site where every pair finishes by the deadline and costs no more than max_cost, with a
margin for rounding, is ruled out by neither limit whatever room it has now: its reason is
the board's (closed, or no room: ``Needs.not_now``) or none. Only the other sites are
judged (``judge``), exactly as before, so the reasons are the same; tests compare them with
``rules.evaluate`` at every site (tests/hub/test_limits.py). A job whose deadline no site
can meet still has each site judged: its explanation gives each site's soonest finish.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from hub.broker.rules import Runs, beyond_limits, misfit, partitions_for, price, room, within_max_cost
from hub.broker.search import Bools, Fixed, Floats, Needs
from hub.costs.pricing import footprint_per_hour
from hub.estimates.model import prior_seconds
from shared.schemas.jobs import JobSpec

Ints = npt.NDArray[np.int64]
#: Margins that keep a site judged when a bound comes within rounding of a limit: relative,
#: and absolute in seconds (a deadline is compared in microseconds) and in money.
_RELATIVE = 1e-9
_SECOND = 1e-3
_MONEY = 1e-9


@dataclass
class Pairs:
    """One kind of job over a ``Fixed``'s sites, for its limits: (site, partition) pairs it
    could use, and (site, GPU model) pairs ``within_max_cost`` prices, each as parallel arrays."""

    models: list[str | None]  # what ``model`` and ``priced_model`` index: the kind's GPU models, then None (CPUs)
    site: Ints
    model: Ints
    per_hour: Floats
    charged: Floats  # the start-up the partition charges (cloud nodes), 0 if none
    priced_site: Ints
    priced_model: Ints
    priced_per_hour: Floats
    priced_startup: Floats
    unpriced: Bools  # sites where no partition prices one of the models: always judged

    @classmethod
    def of(cls, spec: JobSpec, fixed: Fixed) -> Pairs:
        """The pairs of ``fixed``'s sites that pass its checks for good, built once and kept on it."""
        if fixed.pairs is None:
            fixed.pairs = cls._build(spec, fixed)
        return fixed.pairs

    @classmethod
    def _build(cls, spec: JobSpec, fixed: Fixed) -> Pairs:
        r = spec.resources
        models: list[str | None] = [*fixed.all_models, None]
        index = {m: k for k, m in enumerate(models)}
        usable: list[tuple[int, int, float, float]] = []
        priced: list[tuple[int, int, float, float]] = []
        unpriced = np.zeros(len(fixed.views), dtype=bool)
        for i in np.flatnonzero(fixed.ok).tolist():
            view, site_models = fixed.views[i], fixed.models[i]
            for p in partitions_for(spec, view):  # ``rules._usable`` without its check of the GPUs free now
                gpu = p.gpu_model if r.gpus else None
                if r.gpus and (gpu not in site_models or p.node_count * p.gpus_per_node < r.gpus):
                    continue
                if misfit(spec, p) is None:
                    rate, start = footprint_per_hour(p.cost, p.spot, p.cores_per_node, p.gpus_per_node, r.cpus, r.gpus)
                    usable.append((i, index[gpu], rate, start))
            for c in [[m] for m in site_models] if r.gpus else [[]]:  # as ``within_max_cost`` prices them
                found = price(spec, view, c)
                if found is None:
                    unpriced[i] = True
                else:
                    priced.append((i, index[c[0] if c else None], found.per_hour, found.startup_s))
        site, model, per_hour, charged = _columns(usable)
        priced_site, priced_model, priced_per_hour, priced_startup = _columns(priced)
        return cls(models, site, model, per_hour, charged, priced_site, priced_model, priced_per_hour, priced_startup, unpriced)


def _columns(rows: list[tuple[int, int, float, float]]) -> tuple[Ints, Ints, Floats, Floats]:
    a, b, c, d = zip(*rows, strict=True) if rows else ((), (), (), ())
    return np.array(a, dtype=np.int64), np.array(b, dtype=np.int64), np.array(c, dtype=float), np.array(d, dtype=float)


def within_limits(needs: Needs, spec: JobSpec) -> Bools:
    """Per site of the board: True where the bounds show that neither the job's deadline nor
    its max_cost rules the site out, whatever room it has now; False where either might."""
    board = needs.board
    pairs = Pairs.of(spec, needs.fixed)
    kind, cap = spec.kind.value, float(spec.resources.walltime_s)
    prior = np.array([prior_seconds(spec, m)[0] for m in pairs.models])
    bias = board.bias(kind)
    clear = np.ones(len(board.views), dtype=bool)
    # p50 before the walltime cap: p90 is taken from it, then capped (``estimate``).
    p50 = prior[pairs.model] * bias[pairs.site]
    startup = np.where(pairs.charged > 0, pairs.charged, board.boot[pairs.site])
    if spec.deadline is not None:
        slack = (spec.deadline - board.now).total_seconds()
        p90 = np.minimum(p50 * board.spread(kind)[pairs.site], cap)
        clear[pairs.site[(p90 + startup) * (1 + _RELATIVE) + _SECOND > slack]] = False
    if spec.max_cost is not None:
        limit = spec.max_cost * (1 - _RELATIVE) - _MONEY
        cost = pairs.per_hour * (np.minimum(p50, cap) + startup) / 3600
        clear[pairs.site[cost > limit]] = False
        run = np.minimum(prior[pairs.priced_model] * bias[pairs.priced_site], cap)
        cost = pairs.priced_per_hour * (run + pairs.priced_startup) / 3600
        clear[pairs.priced_site[cost > limit]] = False
        clear &= ~pairs.unpriced
    return clear


def judge(needs: Needs, spec: JobSpec, i: int, runs: Runs) -> tuple[str | None, bool]:
    """(the first reason ``rules.evaluate`` gives against site ``i``, which passes the checks
    for good and lends to the job's institution, or None; whether it rules the site out for good)."""
    board = needs.board
    view, models = board.views[i], needs.models[i]
    if spec.max_cost is not None:
        why, models = within_max_cost(spec, view, models, runs)
        if why is not None:
            return why, True
    why = board.closed[i]
    if why is None:  # room, as evaluate_now judges it: on the models within max_cost
        why = needs.short(i) if models == needs.models[i] else next(iter(room(spec, view, models)[0]), None)
    return why or beyond_limits(spec, view, models, board.now, runs), False


def ruled_out(needs: Needs, spec: JobSpec, institution: str) -> tuple[dict[str, list[str]], int]:
    """(every site ruled out for a job with a max_cost or deadline, by the first reason
    ``rules.evaluate`` gives, sites and reasons in name order; how many of them for good).
    Sites the bounds clear have the board's reasons; the others are judged one by one."""
    board, fixed = needs.board, needs.fixed
    never = fixed.never_for(institution)
    for_good = sum(len(names) for names in never.values())
    groups = {reason: list(names) for reason, names in never.items()}
    lends = board.lends(institution)
    clear = within_limits(needs, spec)
    for reason, names in needs.refresh().not_now.items():  # closed, or no room
        kept = [n for n in names if clear[board.position[n]] and lends[board.position[n]]]
        if kept:
            groups.setdefault(reason, []).extend(kept)
    runs: Runs = {}
    for i in np.flatnonzero(fixed.ok & lends & ~clear).tolist():
        why, good = judge(needs, spec, i, runs)
        for_good += good
        if why is not None:
            groups.setdefault(why, []).append(board.views[i].name)
    for names in groups.values():
        names.sort()  # name order is board order
    return dict(sorted(groups.items(), key=lambda kv: board.position[kv[1][0]])), for_good
