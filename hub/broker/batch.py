"""Placing many jobs at once, exactly as one-by-one placement would, but fast.

One-by-one placement scores every site for every job and takes the best, ties broken by
name; each placement leaves less room for the jobs after it. Here the sites are a
``search.Board`` shared by the whole batch; each kind of job (kind, resources, software,
constraints) gets its checks for good once (``search.Needs``); each job gets bounds on
every site's score and scores exactly only the sites that could still beat the best found
(``search.Candidates``). Jobs alike in everything the broker reads share their bounds and
the sites ruled out for them, so a queue of identical jobs costs little more than one; a
queue where each job has its own inputs and sizes costs one vector pass per job.

What a result lists as ruled out: for good, every site with the first reason
``rules.static_verdict`` gives (max_cost: the sites the search looked at); for now, the
closed sites and those without room for the kind of job, as they stood when the batch's
last job of that kind was placed, and the sites this job's deadline or max_cost ruled out among those it looked at.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from hub.broker.rules import SiteView, Verdict
from hub.broker.search import Board, Candidates, job_key, needs_key
from shared.schemas.jobs import JobSpec


@dataclass
class BatchResult:
    site: SiteView | None
    verdict: Verdict | None
    never: dict[str, list[str]] = field(default_factory=dict)  # reason -> sites ruled out for good
    not_now: dict[str, list[str]] = field(default_factory=dict)  # reason -> sites ruled out for now


def _merged(shared: dict[str, list[str]], own: dict[str, list[str]]) -> dict[str, list[str]]:
    """The kind's reasons and the job's own (their reasons differ in words); shared as is when the job has none."""
    return {**shared, **own} if own else shared


def place_batch(jobs: list[tuple[JobSpec, str]], views: list[SiteView], now: datetime) -> list[BatchResult]:
    """Place ``(spec, institution)`` pairs in order; views are reserved as jobs are placed."""
    board = Board(views, now)
    keys: dict[int, tuple[str, str]] = {}  # by spec object: callers often pass one spec for many jobs
    per_spec = Counter(id(spec) for spec, _ in jobs)
    left: Counter[str] = Counter()  # a job's candidates are dropped after its last like
    kinds_left: Counter[str] = Counter()
    for spec, _ in jobs:
        if id(spec) not in keys:
            job, kind = keys[id(spec)] = (job_key(spec), needs_key(spec))
            left[job] += per_spec[id(spec)]
            kinds_left[kind] += per_spec[id(spec)]
    searches = board.searches  # each knows the sites reserved since it looked by the board's counts
    out = []
    for spec, institution in jobs:
        key, kind = keys[id(spec)]
        search = searches.get(key)
        if search is None:
            search = searches[key] = Candidates(board.needs_of(spec, kind), spec)
        best = search.best(institution)
        needs = search.needs
        never = _merged(needs.fixed.never_for(institution), search.never)
        if best:
            i, verdict = best[0]
            board.reserve(i, spec, verdict.gpu_model, verdict.partition)
            if search.not_now:  # merged below into a copy: the kind's reasons with this placement counted
                needs.refresh()
            out.append(BatchResult(board.views[i], verdict, never, _merged(needs.not_now, search.not_now)))
        else:
            out.append(BatchResult(None, None, never, _merged(needs.not_now, search.not_now)))
        left[key] -= 1
        if not left[key]:
            del searches[key]
        kinds_left[kind] -= 1
        if not kinds_left[kind]:
            board.needs.pop(kind).refresh()  # its reasons as they stand now; no later job needs them kept current
    return out
