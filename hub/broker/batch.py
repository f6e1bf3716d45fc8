"""Placing many jobs at once, exactly as one-by-one placement would, but fast.

Jobs with the same requirements (kind, resources, software, constraints, inputs, sizes)
share one pass of the static filters: inputs and sizes too, because a site's score
(earliest completion) depends on where the job's data is and how long the job runs. Each
such group keeps a heap of its candidate sites by score. A site's score only falls as work is reserved on it, so a popped entry is
re-scored and taken only if it still beats the next one (lazy greedy): the result is the
same site the full scan picks, with ties broken by name, at a fraction of the cost.
"""

from __future__ import annotations

import heapq
import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from hub.broker.rules import SiteView, Verdict, evaluate_now, institution_refused, reserve, static_verdict
from shared.schemas.jobs import JobSpec


@dataclass
class BatchResult:
    site: SiteView | None
    verdict: Verdict | None
    never: dict[str, list[str]] = field(default_factory=dict)  # reason -> sites ruled out for good
    not_now: dict[str, list[str]] = field(default_factory=dict)  # reason -> sites ruled out for now


def signature(spec: JobSpec) -> str:
    return json.dumps(
        [
            spec.kind.value,
            spec.resources.model_dump(),
            [s.model_dump() for s in spec.software],
            spec.placement.model_dump(),
            spec.max_cost,
            spec.deadline.isoformat() if spec.deadline else None,
            [i.model_dump() for i in spec.inputs],
            spec.workload.model_dump(),
            sorted(spec.parameters.items()),
        ],
        sort_keys=True,
    )


class _Group:
    """Jobs with the same requirements: one static pass, one heap of candidate sites."""

    def __init__(self, spec: JobSpec, views: list[SiteView], now: datetime) -> None:
        self.never: dict[str, list[str]] = defaultdict(list)
        self.not_now: dict[str, list[str]] = defaultdict(list)
        self.heap: list[tuple[float, str, int]] = []
        self.models: dict[int, list[str]] = {}
        self.by_institution: dict[str, dict[str, list[str]]] = {}
        self._views = views
        for i, v in enumerate(views):
            reason, models = static_verdict(spec, None, v)
            if reason:
                self.never[reason].append(v.name)
                continue
            self.models[i] = models
            verdict = evaluate_now(spec, v, models, now, set())
            if verdict.eligible:
                heapq.heappush(self.heap, (-(verdict.score or 0.0), v.name, i))
            else:
                self.not_now[verdict.reasons[0]].append(v.name)

    def never_for(self, institution: str) -> dict[str, list[str]]:
        """Ruled out for good for this institution: the group's reasons plus site policies."""
        cached = self.by_institution.get(institution)
        if cached is None:
            cached = {k: list(v) for k, v in self.never.items()}
            for i in self.models:
                refused = institution_refused(institution, self._views[i])
                if refused:
                    cached.setdefault(refused, []).append(self._views[i].name)
            self.by_institution[institution] = cached
        return cached


def place_batch(jobs: list[tuple[JobSpec, str]], views: list[SiteView], now: datetime) -> list[BatchResult]:
    """Place ``(spec, institution)`` pairs in order; views are reserved as jobs are placed."""
    groups: dict[str, _Group] = {}
    keys: dict[int, str] = {}  # signature by spec object: callers often pass one spec for many jobs
    out = []
    for spec, institution in jobs:
        key = keys.get(id(spec)) or keys.setdefault(id(spec), signature(spec))
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group(spec, views, now)
        chosen: tuple[SiteView, Verdict] | None = None
        set_aside: list[tuple[float, str, int]] = []
        while group.heap:
            entry = heapq.heappop(group.heap)
            _, name, i = entry
            if institution_refused(institution, views[i]):
                set_aside.append(entry)  # still a candidate for other institutions' jobs
                continue
            fresh = evaluate_now(spec, views[i], group.models[i], now, set())
            if not fresh.eligible:
                group.not_now[fresh.reasons[0]].append(name)
                continue
            entry = (-(fresh.score or 0.0), name, i)
            if group.heap and group.heap[0] < entry:
                heapq.heappush(group.heap, entry)  # stale: another site is now better
                continue
            chosen = (views[i], fresh)
            heapq.heappush(group.heap, entry)
            break
        for entry in set_aside:
            heapq.heappush(group.heap, entry)
        never = group.never_for(institution)
        if chosen is None:
            out.append(BatchResult(None, None, never, dict(group.not_now)))
            continue
        site, verdict = chosen
        reserve(site, spec, verdict.gpu_model)
        out.append(BatchResult(site, verdict, never, dict(group.not_now)))
    return out
