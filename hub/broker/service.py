"""Placing jobs and recording why. Called at submission (one job) and by the sweep (every
queued job, in priority order), so queued jobs are re-placed as capacity changes."""

from __future__ import annotations

import gc
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NamedTuple

from sqlmodel import Session, col, select

from hub.broker.batch import place_batch
from hub.broker.limits import ruled_out
from hub.broker.queue import Queued, read_queue
from hub.broker.rules import SiteView, Verdict, evaluate, rank, reserve, static_verdict
from hub.broker.search import Board, Candidates, Fixed
from hub.broker.views import load_site_views
from hub.broker.writes import PassWrites
from hub.db import after_commit
from hub.errors import Conflict
from hub.jobs.models import Attempt, Job, PlacementRecord
from hub.jobs.notify import Notifier
from hub.jobs.staging import stage
from hub.metrics import BROKER_SECONDS
from hub.types import utcnow
from shared.schemas.jobs import JobSpec

#: Above this many sites a decision keeps the 10 best sites and groups the rest by reason.
FULL_VERDICTS_UP_TO = 100


def ensure_possible(views: list[SiteView], spec: JobSpec, institution: str) -> None:
    """Refuse a job no site in the network could ever run, saying why for each site."""
    reasons = []
    for v in views:
        never, _ = static_verdict(spec, institution, v)
        if never is None:
            return
        reasons.append(f"{v.name}: {never}")
    if not views:
        raise Conflict("no site is registered in the network, so no site could run this job")
    raise Conflict("no site in the network could ever run this job — " + "; ".join(reasons))


def _as_dict(v: Verdict) -> dict[str, Any]:
    out = {"site": v.site, "eligible": v.eligible, "reasons": v.reasons, "score": v.score, "score_parts": v.parts}
    return {**out, "partition": v.partition} if v.partition else out


def _grouped(groups: dict[str, list[str]]) -> list[dict[str, Any]]:
    """Ruled-out sites as one entry per reason, largest group first."""
    out = []
    for reason, names in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        if len(names) == 1:
            label = names[0]
        else:
            label = f"{len(names)} sites ({', '.join(names[:10])}" + (f" and {len(names) - 10} more)" if len(names) > 10 else ")")
        out.append({"site": label, "eligible": False, "reasons": [reason], "score": None, "score_parts": {}})
    return out


def _grouped_once(groups: dict[str, list[str]], seen: dict[int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """``_grouped``, once per dict: the batch placer hands the jobs of one kind the same dicts
    of sites, which no longer change once the batch is placed."""
    key = id(groups)
    if key not in seen:
        seen[key] = _grouped(groups)
    return seen[key]


def _placement_spec(job: Queued, seen: dict[str, JobSpec]) -> JobSpec:
    """The job's spec as the broker reads it, validated once per distinct set of needs: jobs
    that differ only in what the broker does not read (name, command, tags) share one; sizes,
    parameters, deadline and max_cost are read (run-time estimates, limits)."""
    spec = seen.get(job.read)
    if spec is None:
        spec = seen[job.read] = JobSpec.model_validate_json(job.spec)
    return spec


def _record(verdicts: list[Verdict], ranked: list[Verdict]) -> list[dict[str, Any]]:
    """Every site's verdict, best first; past FULL_VERDICTS_UP_TO sites, the 10 best and the rest grouped."""
    if len(verdicts) <= FULL_VERDICTS_UP_TO:
        order = {v.site: i for i, v in enumerate(ranked)}
        return [_as_dict(v) for v in sorted(verdicts, key=lambda v: (order.get(v.site, len(order)), v.site))]
    groups: dict[str, list[str]] = defaultdict(list)
    for v in verdicts:
        if not v.eligible:
            groups[v.reasons[0] if v.reasons else "ruled out"].append(v.site)
    return [_as_dict(v) for v in ranked[:10]] + _grouped(groups)


def _summary(placed: Verdict | None, counts: dict[str, int], never_only: bool) -> str:
    """One line: where the job went, or how many sites ruled it out for which reasons."""
    if placed is not None:
        return f"placed on {placed.site} (score {placed.score}): " + ", ".join(placed.reasons)
    if never_only:
        return "no site could ever run this job"
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:5]
    return "waiting: " + "; ".join(f"{n} site(s): {r}" for r, n in top) if top else "waiting: no sites"


def place_job(
    session: Session,
    job: Job,
    views: list[SiteView],
    now: datetime,
    notifier: Notifier | None,
    last_summary: str | None = None,
    fixed: dict[str, Fixed] | None = None,
    board: Board | None = None,
) -> Attempt | None:
    """Try to place one queued job; record the decision (waiting decisions only when they change).
    ``fixed``: the checks for good per kind of job, kept by the caller for these views; ``board``:
    a search board of these views kept by the caller, current at ``now`` (hub/broker/cache.py)."""
    with BROKER_SECONDS.labels("one job").time():
        return _place_job(session, job, views, now, notifier, last_summary, fixed, board)


class Decision(NamedTuple):
    best: Verdict | None
    verdicts: list[dict[str, Any]]  # as recorded: see ``_record``
    summary: str
    impossible: bool  # every site rules the job out for good


def _place_job(
    session: Session,
    job: Job,
    views: list[SiteView],
    now: datetime,
    notifier: Notifier | None,
    last_summary: str | None,
    fixed: dict[str, Fixed] | None,
    board: Board | None,
) -> Attempt | None:
    spec = JobSpec.model_validate(job.spec)
    # Sites that refused the job are avoided for good; sites where an attempt was lost or
    # hit a system error only while another site can take it.
    refused_at: set[int] = set()
    failed_at: set[int] = set()
    for site_id, state in session.exec(
        select(Attempt.site_id, Attempt.state).where(
            Attempt.job_id == job.id, col(Attempt.state).in_(("lost", "refused")) | (col(Attempt.tes_state) == "SYSTEM_ERROR")
        )
    ):
        (refused_at if state == "refused" else failed_at).add(site_id)
    names = {v.id: v.name for v in views} if refused_at or failed_at else {}  # a new job has no attempts
    hard = {names[i] for i in refused_at if i in names}
    soft = {names[i] for i in failed_at if i in names} - hard
    if not hard and not soft and searchable(spec, views):
        decision = decide_by_search(spec, job.institution, views, now, fixed, board)
    else:
        decision = decide_by_scan(spec, job.institution, views, now, hard, soft)
    best = decision.best
    if best is None:
        if decision.summary != last_summary:
            session.add(
                PlacementRecord(
                    job_id=job.id,
                    attempt=job.attempt,
                    decided_at=now,
                    outcome="impossible" if decision.impossible else "waiting",
                    summary=decision.summary,
                    verdicts=decision.verdicts,
                )
            )
        return None
    site = board.views[board.position[best.site]] if board is not None else next(v for v in views if v.name == best.site)
    reserve(site, spec, best.gpu_model, best.partition)
    return _offer(session, job, spec, site, best, now, notifier, decision.summary, decision.verdicts)


def decide_by_scan(
    spec: JobSpec, institution: str, views: list[SiteView], now: datetime, hard: set[str], soft: set[str]
) -> Decision:
    """Every site's verdict: the reference placement, and the one that applies avoid rules."""
    verdicts = [evaluate(spec, institution, v, now, hard | soft) for v in views]
    ranked = rank(verdicts)
    if not ranked and soft:
        verdicts = [evaluate(spec, institution, v, now, hard) for v in views]
        ranked = rank(verdicts)
    best = ranked[0] if ranked else None
    counts: dict[str, int] = defaultdict(int)
    for v in verdicts:
        for r in v.reasons[:1]:
            counts[r] += 1
    impossible = bool(verdicts) and all(v.never for v in verdicts)
    return Decision(best, _record(verdicts, ranked), _summary(best, counts, impossible), impossible)


def searchable(spec: JobSpec, views: list[SiteView]) -> bool:
    """Whether ``decide_by_search`` records what ``decide_by_scan`` would: past
    FULL_VERDICTS_UP_TO sites, where only the 10 best are recorded in full."""
    return len(views) > FULL_VERDICTS_UP_TO


def decide_by_search(
    spec: JobSpec,
    institution: str,
    views: list[SiteView],
    now: datetime,
    fixed: dict[str, Fixed] | None,
    board: Board | None = None,
) -> Decision:
    """``decide_by_scan``'s decision for a ``searchable`` job on views in name order (as the hub
    loads them), scoring only the sites that could be among the 10 best (hub/broker/search.py).
    A job with a max_cost or deadline has the sites those may rule out judged against them
    (``limits.ruled_out``: bounds clear the others).
    ``board``: one of these views kept by the caller and current (``Board.at``), else built here."""
    board = Board(views, now, fixed) if board is None else board
    needs = board.needs_of(spec)
    ranked = [v for _, v in Candidates(needs, spec).best(institution, k=10)]
    if spec.max_cost is not None or spec.deadline is not None:
        groups, for_good = ruled_out(needs, spec, institution)
    else:
        lends = board.lends(institution)
        never = needs.fixed.never_for(institution)
        for_good = sum(len(names) for names in never.values())
        groups = dict(never)
        for reason, names in needs.not_now.items():  # closed, or no room: those that lend to the institution
            kept = sorted(n for n in names if lends[board.position[n]])
            if kept:
                groups[reason] = kept
        # Reasons in the order a scan of the sites by name meets them (the summary lists ties in that order).
        groups = dict(sorted(groups.items(), key=lambda kv: board.position[kv[1][0]]))
    impossible = for_good == len(views)
    best = ranked[0] if ranked else None
    counts = {reason: len(names) for reason, names in groups.items()}
    verdicts = [_as_dict(v) for v in ranked] + _grouped(groups)
    return Decision(best, verdicts, _summary(best, counts, impossible), impossible)


def _offer(
    session: Session,
    job: Job,
    spec: JobSpec,
    site: SiteView,
    best: Verdict,
    now: datetime,
    notifier: Notifier | None,
    summary: str,
    verdicts: list[dict[str, Any]],
) -> Attempt:
    """Offer the job's next attempt to ``site`` and record why."""
    job.attempt += 1
    job.site_id = site.id
    job.updated_at = now
    attempt = Attempt(
        id=uuid.uuid4().hex,
        job_id=job.id,
        number=job.attempt,
        site_id=site.id,
        offered_at=now,
        cpus=spec.resources.cpus,
        gpus=spec.resources.gpus,
        gpu_model=best.gpu_model,
        partition=best.queue,
    )
    session.add_all([job, attempt])
    session.add(
        PlacementRecord(
            job_id=job.id,
            attempt=job.attempt,
            decided_at=now,
            outcome="placed",
            site=site.name,
            summary=summary,
            verdicts=verdicts,
        )
    )
    if stage(session, job, attempt, spec, site.name):
        return attempt  # offered once its inputs are at the site
    if notifier is not None:
        site_id = site.id
        after_commit(session, lambda: notifier.notify(site_id))
    return attempt


def place_queued(
    session: Session, notifier: Notifier | None, now: datetime | None = None, limit: int = 10_000, bulk: bool = True
) -> int:
    """One broker pass over queued, unplaced jobs, highest priority and oldest first.

    Jobs with no failed or refused attempt go through the batch placer; the others through
    ``place_job``, which applies their avoid rules. Both reserve on the same views. The batch
    placer's attempts and decisions are written in bulk (``hub.broker.writes``); ``bulk=False``
    writes them one ORM object each, as before (kept to show both write the same rows)."""
    with BROKER_SECONDS.labels("sweep").time(), _collector_paused():
        return _place_queued(session, notifier, now, limit, PassWrites() if bulk else None)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """A pass over 10,000 jobs makes hundreds of thousands of short-lived dicts and lists, and
    Python's cyclic collector, started by allocations, walked every object of the process
    again and again meanwhile (a tenth of the pass). Nothing the pass makes needs it to be
    freed (reference counting frees it); the collector runs again when the pass ends."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _place_queued(
    session: Session, notifier: Notifier | None, now: datetime | None, limit: int, writes: PassWrites | None
) -> int:
    now = now or utcnow()
    session.flush()  # what this transaction changed through the ORM (jobs requeued by the sweep) is read below
    jobs, last, with_history = read_queue(session.connection(), limit)
    if not jobs:
        return 0
    views = load_site_views(session, now)
    ids = [j.id for j in jobs]
    loaded = {} if writes else {j.id: j for j in session.exec(select(Job).where(col(Job.id).in_(ids)))}

    def orm(q: Queued) -> Job:
        job = loaded.get(q.id) or session.get(Job, q.id)
        assert job is not None
        return job

    placed = 0
    pending: list[Queued] = []

    specs_by_needs: dict[str, JobSpec] = {}

    def flush() -> None:
        nonlocal placed
        # Per batch: its results keep the dicts alive, so no id is reused while they are keys.
        grouped: dict[int, list[dict[str, Any]]] = {}
        specs = [_placement_spec(j, specs_by_needs) for j in pending]
        for job, spec, result in zip(
            pending,
            specs,
            place_batch([(sp, j.institution) for sp, j in zip(specs, pending, strict=True)], views, now),
            strict=True,
        ):
            counts: dict[str, int] = defaultdict(int)  # for a job left waiting: how many sites, for what reason
            for reason, names in (*result.never.items(), *result.not_now.items()) if result.verdict is None else ():
                counts[reason] += len(names)
            summary = _summary(result.verdict, counts, bool(result.never) and not result.not_now)
            own = [_as_dict(result.verdict)] if result.verdict else []
            shared = (_grouped_once(result.not_now, grouped), _grouped_once(result.never, grouped))
            if result.site is not None and result.verdict is not None:
                if writes is None or spec.inputs:  # inputs may need staging: the ORM path
                    verdicts = own + shared[0] + shared[1]
                    _offer(session, orm(job), spec, result.site, result.verdict, now, notifier, summary, verdicts)
                else:
                    writes.offer(job.id, job.attempt, spec, result.site, result.verdict, now, summary, own, shared)
                placed += 1
            elif summary != last.get(job.id):
                outcome = "impossible" if not result.not_now else "waiting"
                if writes is not None:
                    writes.decision(job.id, job.attempt, now, outcome, summary, own, shared)
                else:
                    session.add(
                        PlacementRecord(
                            job_id=job.id, attempt=job.attempt, decided_at=now, outcome=outcome, summary=summary,
                            verdicts=own + shared[0] + shared[1],
                        )
                    )  # fmt: skip
        pending.clear()

    for job in jobs:
        if job.id in with_history:
            flush()
            if place_job(session, orm(job), views, now, notifier, last.get(job.id)) is not None:
                placed += 1
        else:
            pending.append(job)
    flush()
    if writes is not None:
        writes.write(session, notifier)
    session.flush()
    return placed
