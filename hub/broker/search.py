"""Finding the sites where a job finishes first without scoring every site.

``rules.evaluate_now`` scores one site for one job: it ranks sites by the band of their
expected time to an answer (copy + run + start-up, slowed by unreliability and, for CPU
jobs, by GPUs kept free), then by a tie-break (cost, locality, headroom, queue). Scoring
every site for every job was most of a broker pass and of a submission. Most of a score
does not depend on the job, and the rest is cheap to bound:

- ``Board``: a pass's job-independent view of the sites in name order, as numpy arrays for
  the steps over every site and as lists where sites are read one at a time (an element of
  a list is read several times faster): open or why not, CPUs available, reliability and
  GPU-site slowdowns, queue, the longest node start-up reported, each kind's learned
  run-time bias and spread. Reservations update it one site at a time.
- ``Fixed``: per kind of job (kind, resources, software, constraints): the checks that
  rule sites out for good and the GPU models each site could use. They depend on the
  registry alone, so a hub process keeps them between submissions.
- ``Needs``: a ``Fixed`` on a board, and why the sites without room now have none (kept
  current as work is reserved).
- ``Candidates``: per job (its inputs, sizes, deadline, max_cost): an upper bound on
  every site's score, from a lower bound on its finish time (the copy of its inputs, exact;
  the fastest run its GPU models allow, at the site's learned bias; start-up >= 0) and on
  its tie-break (cost >= 0; locality and queue as they are; headroom as it is now, for GPU
  jobs on the roomiest usable model: it only shrinks as work is reserved, and a search
  tightens a site's bound when the site comes up after work was reserved there). ``best``
  scores sites exactly (``evaluate_now``, with what the job's verdict at a site keeps
  between placements: ``rules.Standing``), highest bound first, until the next bound is
  below the k-th best exact score: every site it skips scores lower than those it returns.

Which sites a job's deadline or max_cost rules out, and why, is hub/broker/limits.py.

The result is what scoring every site gives, with ties broken by name; tests compare the
two on random networks (tests/hub/test_placer_equivalence.py). A change to the score in
rules.py must keep the bound's premises: finish >= copy + run p50 with run p50 = min(prior
x e^bias, walltime), and every tie-break term >= 0 with locality, headroom and queue as
``Candidates._without_headroom`` and ``Candidates._again`` (recounting a reserved site) read them.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from hub.broker.rules import (
    GPU_SITE_PENALTY,
    TIE_BAND,
    TIE_WEIGHTS,
    Runs,
    SiteView,
    Standing,
    Verdict,
    closed,
    copy_time,
    cpus_available,
    evaluate_now,
    fixed_checks,
    gpus_available,
    institution_refused,
    locality,
    partition_room,
    reserve,
    room,
    within_max_cost,
)
from hub.estimates.model import Z90, learned, prior_seconds, work_units
from shared.schemas.jobs import JobSpec

if TYPE_CHECKING:
    from hub.broker.limits import Pairs

Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
Ints = npt.NDArray[np.int64]
#: Margins that keep the bounds above the exact scores despite rounding: relative, on the
#: finish time (a log computed by numpy may differ from math.log in the last place), and
#: absolute, on headroom as numpy rounds it to 4 places and on the score's 6 places.
_RELATIVE = 1e-9
_PART = 1e-4
_SCORE = 1e-6
_W_CAPACITY, _W_LOCALITY = TIE_WEIGHTS["capacity"], TIE_WEIGHTS["locality"]
_NO_SITES: set[str] = set()  # a search avoids no site (``evaluate_now`` only reads it)
_RANKED = itemgetter(0, 1)  # (-score, index): best first, ties to the earlier name


def needs_key(spec: JobSpec) -> str:
    """What ``Needs`` depends on."""
    return spec.model_dump_json(include={"kind", "resources", "software", "placement"})


def job_key(spec: JobSpec) -> str:
    """What a job's placement depends on: everything the broker reads."""
    return spec.model_dump_json(exclude={"name", "command", "tags", "idempotency_key", "priority", "outputs", "relion", "tes"})


class Board:
    """The sites of one pass (or one submission), job-independent, in name order."""

    def __init__(self, views: Iterable[SiteView], now: datetime, fixed: dict[str, Fixed] | None = None) -> None:
        self.views = sorted(views, key=lambda v: v.name)
        # By ``needs_key``; a caller that keeps them passes the same views in the same state of the registry.
        self.fixed = {} if fixed is None else fixed
        self.now = now
        self.index = {v.id: i for i, v in enumerate(self.views)}
        self.position = {v.name: i for i, v in enumerate(self.views)}
        self.closed = [next(iter(closed(v, now, set())), None) for v in self.views]
        self.open = np.array([c is None for c in self.closed], dtype=bool)
        self.reported = np.array([bool(v.part_now) for v in self.views], dtype=bool)  # each partition's room
        self.free = [cpus_available(v) for v in self.views]  # read one site at a time; ``cpus`` for whole-board steps
        self.cpus = np.array(self.free, dtype=np.int64)
        self.totals = [max(v.cpus_total, 1) for v in self.views]
        self.cpus_total = np.array(self.totals, dtype=np.float64)
        # Expected time to an answer grows by 1 / reliability; CPU jobs count GPU sites as later.
        self.slowdown = np.array([1 / max(v.reliability, 0.05) for v in self.views])
        self.gpu_site = np.array([bool(v.gpus_total) for v in self.views], dtype=bool)
        self.queue = np.array([round(1 / (1 + v.jobs_pending), 4) for v in self.views])
        self.boot = np.array([_longest_boot(v) for v in self.views], dtype=np.float64)
        self.windowed = [i for i, v in enumerate(self.views) if v.policy.windows]  # open or closed by the clock
        networks = {id(v.network) for v in self.views}
        # Copying to a site that holds none of a job's inputs and has no measured transfer from
        # their holders takes the same time everywhere: computed once, on a site like that.
        self.blank = SiteView(-1, "", "", "", "", "", [], [], self.views[0].policy, network=self.views[0].network) \
            if len(networks) == 1 and self.views else None  # fmt: skip
        self.holding: dict[str, list[int]] = {}  # dataset -> sites with it, as each view says
        for i, v in enumerate(self.views):
            for dataset in v.datasets:
                self.holding.setdefault(dataset, []).append(i)
        self.measured_to: dict[int, list[int]] = {}
        if self.blank is not None:
            for src, dst in self.blank.network.pair_bps:
                if dst in self.index:
                    self.measured_to.setdefault(src, []).append(self.index[dst])
        self._bias: dict[str, Floats] = {}
        self._spread: dict[str, Floats] = {}
        self._lends: dict[str, Bools] = {}
        self._lends_all: dict[str, bool] = {}
        self.restricted = [i for i, v in enumerate(self.views) if v.policy.allowed_institutions is not None]
        self.needs: dict[str, Needs] = {}
        self.searches: dict[str, Candidates] = {}  # by ``job_key``: those still to place jobs
        # Placements reserved at each site, and in all, on this board: a search recounts a site
        # placed at since it last looked (``Candidates.seen``).
        self.reserved = [0] * len(self.views)
        self.placed = 0

    def update(self, i: int) -> None:
        """Site ``i``'s view changed (a capacity report, work placed or ended there, its
        reliability): recount what the board keeps of it. The rest of a view changes only with the registry, on a new board."""
        v = self.views[i]
        self.closed[i] = next(iter(closed(v, self.now, set())), None)
        self.open[i] = self.closed[i] is None
        self.reported[i] = bool(v.part_now)
        self.cpus[i] = self.free[i] = cpus_available(v)
        self.cpus_total[i] = self.totals[i] = max(v.cpus_total, 1)
        self.gpu_site[i] = bool(v.gpus_total)
        self.queue[i] = round(1 / (1 + v.jobs_pending), 4)
        self.boot[i] = _longest_boot(v)
        self.slowdown[i] = 1 / max(v.reliability, 0.05)

    def replace(self, views: Iterable[SiteView]) -> None:
        """A registry change to some sites (hub/broker/cache.py): their views, new or changed in
        place, under the same ids and names. Recounts those sites and what the board derives
        from every view's registry part (lending hours, restrictions, where data is held), and
        drops what it derived per kind and per institution. A site added, removed or renamed
        needs a new board."""
        for v in views:
            i = self.index[v.id]
            self.views[i] = v
            self.update(i)
        self.windowed = [i for i, v in enumerate(self.views) if v.policy.windows]
        self.restricted = [i for i, v in enumerate(self.views) if v.policy.allowed_institutions is not None]
        self.holding = {}
        for i, v in enumerate(self.views):
            for dataset in v.datasets:
                self.holding.setdefault(dataset, []).append(i)
        if self.blank is not None:
            self.blank.policy = self.views[0].policy
        self._bias, self._lends = {}, {}

    def at(self, now: datetime, changed: Iterable[int]) -> Board:
        """The board kept between submissions (hub/broker/cache.py), for one more at ``now``: the
        sites ``changed`` (by view id) and those with lending hours recounted, and what the
        last submission derived from the board (``needs``, ``searches``) dropped. The work
        is proportional to the sites that changed, not to the network."""
        self.now = now
        for i in {self.index[site_id] for site_id in changed if site_id in self.index}.union(self.windowed):
            self.update(i)
        self.needs, self.searches = {}, {}
        return self

    def bias(self, kind: str) -> Floats:
        """e^bias of each site's learned run times for ``kind`` (hub/estimates/model.py)."""
        if kind not in self._bias:
            bias = np.full(len(self.views), math.exp(learned(None)[0]))  # sites with no runs of the kind
            for i, v in enumerate(self.views):
                if kind in v.runtime_stats:
                    bias[i] = math.exp(learned(v.runtime_stats[kind])[0])
            self._bias[kind] = bias
        return self._bias[kind]

    def spread(self, kind: str) -> Floats:
        """p90 / p50 of each site's run times for ``kind``: e^(Z90 sd) (hub/estimates/model.py)."""
        if kind not in self._spread:
            spread = np.full(len(self.views), math.exp(Z90 * learned(None)[1]))
            for i, v in enumerate(self.views):
                if kind in v.runtime_stats:
                    spread[i] = math.exp(Z90 * learned(v.runtime_stats[kind])[1])
            self._spread[kind] = spread
        return self._spread[kind]

    def lends(self, institution: str) -> Bools:
        if institution not in self._lends:
            lends = np.ones(len(self.views), dtype=bool)
            for i in self.restricted:
                lends[i] = institution_refused(institution, self.views[i]) is None
            self._lends[institution] = lends
            self._lends_all[institution] = bool(lends.all())
        return self._lends[institution]

    def lends_all(self, institution: str) -> bool:
        """Whether every site lends to the institution (no site's policy refuses it)."""
        self.lends(institution)
        return self._lends_all[institution]

    def needs_of(self, spec: JobSpec, key: str | None = None) -> Needs:
        """The kind of job's ``Needs`` on this board (``key``: its ``needs_key``, when the caller has it)."""
        key = needs_key(spec) if key is None else key
        if key not in self.needs:
            fixed = self.fixed.get(key)
            if fixed is None:
                fixed = self.fixed[key] = Fixed(spec, self.views)
            self.needs[key] = Needs(self, spec, fixed)
        return self.needs[key]

    def reserve(self, i: int, spec: JobSpec, model: str | None, partition: str | None) -> None:
        """Account a placement at site ``i`` (``rules.reserve``); every kind of job's view of the
        site is recounted when next used (``Needs.refresh``), and a search tightens its bound on
        the site only if the site comes up again (``Candidates.best``, by ``reserved``)."""
        reserve(self.views[i], spec, model, partition)
        self.cpus[i] = self.free[i] = cpus_available(self.views[i])
        self.reserved[i] += 1
        self.placed += 1
        gpus = model is not None
        for needs in self.needs.values():
            if gpus or i not in needs.stale:  # whether GPUs were reserved there since: any time
                needs.stale[i] = gpus

    def special(self, spec: JobSpec) -> set[int]:
        """Sites whose copy time for the job differs from ``blank``'s: they hold an input, or
        have measured transfers from a holder."""
        assert self.blank is not None
        out: set[int] = set()
        for ref in spec.inputs:
            out.update(self.holding.get(ref.dataset, ()))
            for holder in self.blank.network.holders.get(ref.dataset, ()):
                if holder in self.index:
                    out.add(self.index[holder])
                out.update(self.measured_to.get(holder, ()))
        return out


def _longest_boot(v: SiteView) -> int:
    """The longest start-up of a powered-down node the site or any of its partitions reports."""
    return max([v.boot_s, *(p.boot_s for p in v.part_now.values())])


class Fixed:
    """One kind of job (kind, resources, software, constraints) over a list of sites: the
    checks that rule sites out for good and the GPU models each site could use. Depends on
    the registry alone, so a hub process keeps it between submissions (hub/broker/cache.py)."""

    def __init__(self, spec: JobSpec, views: list[SiteView]) -> None:
        self.views = views
        software: dict[tuple[tuple[str, str, str | None], ...], str | None] = {}
        checks = [fixed_checks(spec, v, software) for v in views]
        self.before = [c[0] for c in checks]  # the job's own constraints: before the institution check
        self.after = [c[1] for c in checks]  # policy, software, hardware: after it
        self.models = [c[2] for c in checks]
        self.ok = np.array([c[0] is None and c[1] is None for c in checks], dtype=bool)
        self.all_models = sorted({m for ms in self.models for m in ms})
        # The sets of GPU models sites could use (each once), and which set each site's is.
        sets: dict[tuple[str, ...], int] = {}
        self.model_set = np.array([sets.setdefault(tuple(ms), len(sets)) for ms in self.models], dtype=np.int64)
        self.model_sets = list(sets)
        self._never: dict[str, dict[str, list[str]]] = {}
        self._restricted = [i for i, v in enumerate(views) if v.policy.allowed_institutions is not None]
        self._unrefused: dict[str, list[str]] | None = None
        self.pairs: Pairs | None = (
            None  # what bounds a job's limits at these sites (hub/broker/limits.py), built when first needed
        )

    def never_for(self, institution: str) -> dict[str, list[str]]:
        """Sites ruled out for good for this institution's jobs, by reason (max_cost aside),
        each with the reason ``rules.static_verdict`` gives first."""
        if institution not in self._never:
            refused = {i for i in self._restricted if not self.before[i] and institution_refused(institution, self.views[i])}
            if not refused and self._unrefused is not None:  # institutions no site refuses share one dict
                self._never[institution] = self._unrefused
                return self._unrefused
            out: dict[str, list[str]] = {}
            for i, v in enumerate(self.views):
                reason = institution_refused(institution, v) if i in refused else self.before[i] or self.after[i]
                if reason:
                    out.setdefault(reason, []).append(v.name)
            self._never[institution] = out
            if not refused:
                self._unrefused = out
        return self._never[institution]


class Needs:
    """One kind of job on a board: its ``Fixed`` checks, and why the sites without room now have none.

    Per site, what the searches read one site at a time is kept as lists (``usable_at``,
    ``gpus_at``, ``headroom_at``, ``part_ok_at``: an element of a list is read several
    times faster than one of a numpy array), beside the arrays whole-board steps use."""

    def __init__(self, board: Board, spec: JobSpec, fixed: Fixed) -> None:
        self.board, self.spec, self.fixed = board, spec, fixed
        self.models = fixed.models
        views = board.views
        # What every job's bound of this kind starts from (``Candidates._without_headroom``).
        self.usable = fixed.ok & board.open
        self.usable_at: list[bool] = self.usable.tolist()
        self.slow = board.slowdown * np.where(board.gpu_site & (spec.resources.gpus == 0), GPU_SITE_PENALTY, 1.0)
        self.queue_tie = TIE_WEIGHTS["queue"] * (1 - board.queue)
        self.far = _W_LOCALITY + self.queue_tie  # the tie-break's locality and queue, no input here
        n = len(views)
        self.gpus_at, self.headroom_at = [0] * n, [0.0] * n
        if spec.resources.gpus:
            for i in range(n):
                self.gpus_at[i], self.headroom_at[i] = self._gpus(i)
        self.gpus: Ints = np.array(self.gpus_at, dtype=np.int64)
        self.gpu_headroom: Floats = np.array(self.headroom_at, dtype=np.float64)
        # Whether a partition the job may use has room, where the agent reported each one's (``rules.partition_room``).
        self.part_ok_at = [True] * n
        for site in np.flatnonzero(fixed.ok & board.open & board.reported & self._site_fits()).tolist():
            self.part_ok_at[site] = partition_room(spec, views[site], self.models[site]) is None
        self.part_ok: Bools = np.array(self.part_ok_at, dtype=bool)
        # Ruled out for now (closed, or no room): reason -> sites, kept current by ``update``.
        self.not_now: dict[str, list[str]] = {}
        # Sites reserved since the last ``refresh``, in order, each with whether GPUs were reserved there.
        self.stale: dict[int, bool] = {}
        self._short: dict[int, str] = {}
        for i in np.flatnonzero(fixed.ok & ~board.open).tolist():
            self.not_now.setdefault(board.closed[i] or "", []).append(views[i].name)  # a closed site has a reason
        for full in np.flatnonzero(fixed.ok & board.open & ~self.fits()).tolist():
            self.update(full)

    def _gpus(self, i: int) -> tuple[int, float]:
        """(the most GPUs of one usable model site ``i`` lends now, the most headroom a GPU job
        could leave there: ``rules.room``'s for the model it would use is no larger); 0s for CPU jobs."""
        gpus = self.spec.resources.gpus
        if not gpus:
            return 0, 0.0
        view = self.board.views[i]
        most, roomiest = -1, None
        for m in self.models[i]:
            avail = gpus_available(view, m)
            left = (avail - gpus) / max(view.gpus_total.get(m, 1), 1)
            most = avail if avail > most else most
            roomiest = left if roomiest is None or left > roomiest else roomiest
        return most, 0.0 if roomiest is None else roomiest

    def refresh(self) -> Needs:
        """Recount the sites reserved since the last refresh (``not_now`` is current after it).
        A site with the job's CPUs still free, whose partitions' room the agent does not report,
        where no GPUs were reserved (or the job needs none), is unchanged: room only shrinks, so
        it had them before, and whatever else kept the job out (its GPUs) is as it was. Only the
        others are recounted."""
        if not self.stale:
            return self
        few = list(self.stale.items())
        self.stale.clear()
        r, free, views = self.spec.resources, self.board.free, self.board.views
        cpus, any_gpus = r.cpus, bool(r.gpus)
        for i, gpus in few:
            if (gpus and any_gpus) or free[i] < cpus or views[i].part_now:
                self.update(i, gpus)
        return self

    def _site_fits(self) -> Bools:
        r = self.spec.resources
        cpus: Bools = self.board.cpus >= r.cpus
        if not r.gpus:
            return cpus
        both: Bools = cpus & (self.gpus >= r.gpus)
        return both

    def fits(self) -> Bools:
        """Sites with room for the job now (``rules.room`` with these models says nothing against them)."""
        self.refresh()
        return self._site_fits() & self.part_ok

    def update(self, i: int, gpus: bool = True) -> None:
        """Site ``i``'s capacity changed: recount its room and why it has none (``gpus``: its
        GPUs too; work without GPUs leaves them as they were)."""
        if not self.usable_at[i]:
            return
        r = self.spec.resources
        if gpus and r.gpus:
            self.gpus_at[i], self.headroom_at[i] = self.gpus[i], self.gpu_headroom[i] = self._gpus(i)
        view = self.board.views[i]
        fits = self.board.free[i] >= r.cpus and self.gpus_at[i] >= r.gpus
        if fits and view.part_now:
            self.part_ok_at[i] = self.part_ok[i] = fits = partition_room(self.spec, view, self.models[i]) is None
        # ``fits`` holds exactly when ``room`` finds nothing against the site: its words only when not.
        short = [] if fits else room(self.spec, view, self.models[i])[0]
        old, new = self._short.pop(i, None), short[0] if short else None
        if old == new:
            if new is not None:
                self._short[i] = new
            return
        if old is not None:
            names = self.not_now[old]
            names.remove(view.name)
            if not names:
                del self.not_now[old]
        if new is not None:
            self._short[i] = new
            self.not_now.setdefault(new, []).append(view.name)

    def short(self, i: int) -> str | None:
        """Why site ``i`` has no room for the job now (``rules.room``'s first reason), if it has none."""
        return self._short.get(i)

    def run_floor(self, spec: JobSpec) -> Floats:
        """Per site, the shortest run the job's estimate could give there (the fastest usable GPU model)."""
        r = spec.resources
        bias = self.board.bias(spec.kind.value)
        if r.gpus:  # the fastest of each set of models some site offers, then per site
            fixed = self.fixed
            work = work_units(spec)
            priors = {m: prior_seconds(spec, m, work)[0] for m in fixed.all_models}
            fastest = np.array([min((priors[m] for m in ms), default=math.inf) for ms in fixed.model_sets])[fixed.model_set]
        else:
            fastest = np.full(len(self.board.views), prior_seconds(spec, None)[0])
        return np.minimum(fastest * bias, float(r.walltime_s))


#: (-key, site) in a search's heap: highest key first, ties to the earlier name.
Entry = tuple[float, int]
_INF = math.inf


@dataclass
class Candidates:
    """One job's search over a board: bounds on every site's score, and the sites ruled out
    for this job alone (max_cost, deadline) with why. Jobs alike (``job_key``) share one.

    A search's first ``best`` takes the sites from numpy arrays (``keys.argmax``), which a
    job placed alone (own inputs and sizes, a submission) needs only a few times. A search
    that jobs alike use again keeps its per-site data as lists and its keys in a heap: each
    later ``best`` reads a handful of sites one at a time."""

    needs: Needs
    spec: JobSpec
    bound: Floats | list[float] = field(init=False)
    out: list[bool] = field(init=False)
    never: dict[str, list[str]] = field(default_factory=dict)
    not_now: dict[str, list[str]] = field(default_factory=dict)
    # The job's run-time estimates by (GPU model, a site's learned statistics): sites alike share them.
    runs: Runs = field(default_factory=dict)
    # What the job's verdict at each site (by id) takes from what work reserved there leaves as it is.
    kept: dict[int, Standing] = field(default_factory=dict)
    # Per site, the board's count of its placements when the search last recounted it (``Board.reserved``):
    # a site reserved since may have no room left, and its bound is looser.
    seen: list[int] = field(init=False)
    # Per site, its bound while it has room for the job and is not ruled out (``out``), else -inf:
    # kept from one ``best`` to the next; a site reserved since (``stale``) is recounted when it comes up.
    keys: Floats | list[float] = field(init=False)
    # Exact verdicts of eligible sites not reserved since: a site's verdict changes only with its own view.
    verdicts: dict[int, Verdict] = field(default_factory=dict)
    # Once searched again: (-key, site) of every site with a key (and keys it had since, skipped when met).
    heap: list[Entry] | None = field(default=None, init=False)
    searched: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        board, r = self.needs.refresh().board, self.spec.resources
        self.seen, self._placed = board.reserved.copy(), board.placed
        self._fixed_part: Floats | list[float] = self._without_headroom()
        spare = self.needs.gpu_headroom if r.gpus else (board.cpus - r.cpus) / board.cpus_total
        # numpy's rounding to 4 places may differ from Python's in the last place: a margin here,
        # none once ``_again`` recounts a reserved site's headroom as ``evaluate_now`` does.
        self.bound = self._fixed_part - TIE_WEIGHTS["capacity"] * (1 - np.minimum(np.maximum(spare + _PART, 0.0), 1.0))
        self.out = [False] * len(board.views)
        self.keys = np.where(self.needs.fits(), self.bound, -np.inf)

    def _without_headroom(self) -> Floats:
        """Each site's bound but for the headroom term (which work reserved there lowers)."""
        board, spec, needs = self.needs.board, self.spec, self.needs
        slow, queue_tie, floor = needs.slow, needs.queue_tie, needs.run_floor(spec)
        if spec.inputs:  # most sites copy as ``blank`` does; the others, each site when there is none, are counted one by one
            exact = board.special(spec) if board.blank is not None else range(len(board.views))
            finish = ((copy_time(spec, board.blank)[0] if board.blank is not None else 0.0) + floor) * slow * (1 - _RELATIVE)
            tie = needs.far.copy()
            for i in exact:
                view = board.views[i]
                finish[i] = (copy_time(spec, view)[0] + floor[i]) * slow[i] * (1 - _RELATIVE)
                tie[i] = _W_LOCALITY * (1 - round(locality(spec, view), 4)) + queue_tie[i]  # as the verdict rounds it
        else:
            finish, tie = floor * slow * (1 - _RELATIVE), needs.far
        band = np.floor(np.log(np.maximum(finish, 60.0)) / math.log(TIE_BAND))
        return np.where(needs.usable, 1000 - band - tie + _SCORE, -np.inf)

    @property
    def stale(self) -> list[int]:
        """The sites reserved since the search last recounted them."""
        return [i for i, (seen, now) in enumerate(zip(self.seen, self.needs.board.reserved, strict=True)) if seen != now]

    def _lists(self) -> None:
        """Searched again: per-site data as lists, the keys in a heap."""
        bound, fixed_part, keys = self.bound, self._fixed_part, self.keys
        assert isinstance(bound, np.ndarray) and isinstance(fixed_part, np.ndarray) and isinstance(keys, np.ndarray)
        self.bound, self._fixed_part, self.keys = bound.tolist(), fixed_part.tolist(), keys.tolist()
        keys = self.keys
        self.heap = [(-key, i) for i, key in enumerate(keys) if key != -_INF]
        heapq.heapify(self.heap)

    def best(self, institution: str, k: int = 1) -> list[tuple[int, Verdict]]:
        """The k sites (board indices) where the job finishes first, best first, exactly as
        ranking every site's ``evaluate_now`` would order them. A site reserved since the last
        search has its bound tightened only when it comes up: an untightened bound is still
        above its score (reservations only lower it), so it is only looser.

        The sites are taken highest key first (``keys``: the bound of each site with room);
        a site that does not lend to the institution, or scored exactly here, is set aside
        for this search and its key put back after it."""
        self.needs.refresh()
        board = self.needs.board
        lends = None if board.lends_all(institution) else board.lends(institution)
        if self.heap is None and (self.searched or board.placed != self._placed):
            self._lists()
        self.searched = True
        return self._first(lends, k) if self.heap is None else self._again(lends, k)

    def _first(self, lends: Bools | None, k: int) -> list[tuple[int, Verdict]]:
        """``best`` on the arrays, for a search no site was reserved for since it was made."""
        keys = self.keys
        assert isinstance(keys, np.ndarray)
        found: list[tuple[float, int, Verdict]] = []  # (-score, index, verdict), kept sorted
        aside: list[tuple[int, float]] = []
        scored: list[int] = []
        while True:
            i = int(keys.argmax())
            key = float(keys[i])
            if key == -_INF:
                break
            if len(found) >= k and (-key, i) > (found[k - 1][0], found[k - 1][1]):
                break  # no site left can beat the k-th (ties go to the earlier name)
            keys[i] = -_INF
            if lends is not None and not lends[i]:
                aside.append((i, key))
                continue
            verdict = self._exact(i)
            if verdict is not None:
                scored.append(i)
                found.append((-(verdict.score or 0.0), i, verdict))
                if len(found) > 1:
                    found.sort(key=_RANKED)
                    del found[k:]
        for i, key in aside:
            keys[i] = key
        for i in scored:
            keys[i] = self.bound[i]
        return [(i, v) for _, i, v in found]

    def _again(self, lends: Bools | None, k: int) -> list[tuple[int, Verdict]]:
        """``best`` on the lists and the heap. A site reserved since it was last looked at keeps
        its key (room only shrinks and bounds only fall as work is reserved, so it is still
        above what the site scores) until it comes up: then its room is recounted, and its
        bound tightened: its headroom recounted as ``evaluate_now`` counts it (for GPU jobs, on
        the roomiest usable model; for CPU jobs from the board's ``cpus_available``, kept as work
        is reserved). An entry whose key is not the site's now is dropped when
        it comes up. The site on top of the heap stays there, its entry changed in place, when
        its recounted key, or the k-th score found, is still above both entries below it."""
        keys, bound, heap, out, verdicts = self.keys, self.bound, self.heap, self.out, self.verdicts
        seen, reserved = self.seen, self.needs.board.reserved
        assert isinstance(keys, list) and isinstance(bound, list) and heap is not None
        needs, r = self.needs, self.spec.resources
        cpus, gpus, free, room, part_ok = r.cpus, r.gpus, needs.board.free, needs.gpus_at, needs.part_ok_at
        headroom_at, totals, fixed_part = needs.headroom_at, needs.board.totals, self._fixed_part
        push, pop = heapq.heappush, heapq.heappop
        if len(heap) > 4 * len(keys) + 64:  # mostly keys the sites no longer have
            heap[:] = [(-key, i) for i, key in enumerate(keys) if key != -_INF]
            heapq.heapify(heap)
        found: list[tuple[float, int, Verdict]] = []  # (-score, index, verdict), kept sorted
        aside: list[tuple[int, float]] = []
        scored: list[int] = []
        while heap:
            neg, i = heap[0]
            key = -neg
            if keys[i] != key:
                pop(heap)
                continue
            if len(found) >= k and (neg, i) > (found[k - 1][0], found[k - 1][1]):
                break  # no site left can beat the k-th (ties go to the earlier name)
            if lends is not None and not lends[i]:
                pop(heap)
                aside.append((i, key))
                keys[i] = -_INF
                continue
            if seen[i] != reserved[i]:
                seen[i] = reserved[i]
                verdicts.pop(i, None)
                if free[i] >= cpus and room[i] >= gpus and part_ok[i] and not out[i]:
                    spare = headroom_at[i] if gpus else (free[i] - cpus) / totals[i]
                    headroom = round(spare, 4)
                    headroom = 1.0 if headroom > 1.0 else 0.0 if headroom < 0.0 else headroom  # as evaluate_now clips it
                    key = keys[i] = bound[i] = fixed_part[i] - _W_CAPACITY * (1 - headroom)
                    entry = (-key, i)
                    n = len(heap)
                    if n == 1 or (entry < heap[1] and (n == 2 or entry < heap[2])):
                        heap[0] = entry  # still on top
                    else:
                        heapq.heapreplace(heap, entry)
                else:
                    keys[i] = -_INF
                    pop(heap)
                continue
            verdict = verdicts.get(i) or self._exact(i)
            if verdict is None:  # ruled out for this job: no key again
                pop(heap)
                keys[i] = -_INF
                continue
            found.append((-(verdict.score or 0.0), i, verdict))
            if len(found) > 1:
                found.sort(key=_RANKED)
                del found[k:]
            if len(found) >= k:  # the site stays on top, with its key, if no entry below it can beat the k-th
                last = (found[k - 1][0], found[k - 1][1])
                n = len(heap)
                if n == 1 or (heap[1] > last and (n == 2 or heap[2] > last)):
                    break
            pop(heap)
            keys[i] = -_INF
            scored.append(i)
        for i, key in aside:
            keys[i] = key
            push(heap, (-key, i))
        for i in scored:
            key = keys[i] = bound[i]
            push(heap, (-key, i))
        return [(i, v) for _, i, v in found]

    def _exact(self, i: int) -> Verdict | None:
        """Site ``i``'s verdict, or None (and why, kept) when this job cannot go there."""
        view = self.needs.board.views[i]
        models = self.needs.models[i]
        if self.spec.max_cost is not None:
            never, models = within_max_cost(self.spec, view, models, self.runs)
            if never:
                self.never.setdefault(never, []).append(view.name)
                self.out[i] = True
                return None
        verdict = evaluate_now(self.spec, view, models, self.needs.board.now, _NO_SITES, self.runs, self.kept)
        if not verdict.eligible:
            self.not_now.setdefault(verdict.reasons[0], []).append(view.name)
            self.out[i] = True
            return None
        self.verdicts[i] = verdict
        return verdict
