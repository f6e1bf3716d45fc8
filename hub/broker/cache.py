"""The site views submissions are placed with, kept by each hub process between requests.

Loading every site's registry rows, policy, capacity and work for each submission made
submit latency grow with the network (2.5 s at 10,000 sites). A process keeps the views
and, for each submission, reads only:

- the registry's change counter (hub/broker/changes.py: one row, raised by every transaction
  that writes sites, partitions, software, policies, replicas or run-time statistics).
  Only when it moves (or the views are older than ``max_age_s``), a registry version:
  sites by status and reachability with their newest edit and id, the lending policies'
  count and newest edit, the available replicas' count and newest id, the newest run-time
  statistics (a finished run changes estimates) and the software rows (an agent reports a
  RELION build it measured); and per-site stamps (``RegistryStamps``: name and last edit,
  status and reachability, policy edit, software rows) say which sites changed, and only
  their views are read again (``_edit``; a full reload took 2.5 s of CPU at 10,000 sites),
  so a site suspended, marked unreachable, edited or added, a changed policy or a new copy
  of a dataset is seen by the very next submission at the cost of the sites it touched.
  The version and the stamps read every site (a grouped scan took 20 ms of a 50 ms
  submission at 10,000 sites): an unchanged registry no longer pays them;
- the capacity snapshots received since the newest one already read, and the status and
  reachability of the sites among them the views did not hold online (a heartbeat marks its
  site online without moving the counter: a site heard from again);
- the active attempts (federated work holding resources: staging, offered, claimed), and
  recounts the sites that held work at the last refresh or have an attempt in the session
  of the last placement (every site after a failed one).

Kept with the views: each kind of job's checks for good (``search.Fixed``: constraints,
policy, software, hardware), so a submission scores only the sites that could win instead
of every site. They depend on the registry alone and are dropped with every registry change,
and when a site judged by what its agent reports reports other partitions. Kept too: the
search's ``Board`` of the views (per-site arrays that took 60 % of a submission at 10,000
sites to rebuild). Each refresh tells it the sites that changed: those with a new snapshot
and those whose counted work (active attempts, or a placement reserved since) differs, so
a submission recounts those alone (``Board.at``), and the views a registry change read
again (``Board.replace``); it is built anew from the kept views when a site is added,
removed or renamed (the sites' order changes), and with every full reload.

What changes with time alone (each site's reliability over the last week, transfer rates,
dataset sizes) and reachability swaps the version cannot see are re-read at least every
``max_age_s``, for the sites it changed, without a full reload. Staleness bound: a snapshot
committed late with an older ``received_at`` than one already read (clock skew between hub
processes, a slow transaction) is missed until then, at most ``max_age_s`` later (its
``sampled_at`` differs from the one read). Only placement at submission uses these views;
the broker's pass (the sweep) loads fresh ones for every queued job, and an agent may refuse
an offer its site cannot run (the broker then avoids that site).

Submissions in one process are placed one at a time on the shared views (a lock): a
placement reserves on them, and the next refresh recounts the reservations from the
database, so a rolled-back submission holds nothing. The lock is held across the
submission's reads and its writes, so a transaction must not write before taking it
(submit writes nothing before): then whoever holds the lock waits for no one who waits
for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from itertools import chain
from typing import Any

from sqlalchemy import func, text
from sqlmodel import Session, col, select

from hub.broker.changes import registry_changes
from hub.broker.rules import SiteView
from hub.broker.search import Board, Fixed
from hub.broker.views import (
    active_attempts,
    apply_attempts,
    apply_snapshot,
    holders,
    load_views,
    owners,
    reliability,
    transfer_rates,
    transfers_in_flight,
)
from hub.capacity.models import CapacityLatest
from hub.datasets.models import Dataset
from hub.datasets.shares import relays
from hub.estimates.service import stats_by_site
from hub.jobs.models import Attempt
from hub.sites.models import Site

_REGISTRY_VERSION = (
    "SELECT status, reachability, count(*), max(id), max(updated_at) FROM sites GROUP BY status, reachability "
    "ORDER BY status, reachability",
    "SELECT count(*), max(updated_at) FROM site_policies",
    "SELECT count(*), max(id) FROM replicas WHERE state = 'AVAILABLE'",
    "SELECT count(*), max(updated_at) FROM runtime_stats",
    "SELECT count(*), max(id) FROM site_software",
)
_SITE_STAMPS = "SELECT id, name, updated_at, status, reachability FROM sites"
_POLICY_STAMPS = "SELECT site_id, updated_at FROM site_policies"
_SOFTWARE_STAMPS = "SELECT site_id, count(*), max(id) FROM site_software GROUP BY site_id"


def registry_version(session: Session) -> tuple[Any, ...]:
    conn = session.connection()
    return tuple(tuple(tuple(row) for row in conn.execute(text(sql))) for sql in _REGISTRY_VERSION)


class SiteViewCache:
    def __init__(self, max_age_s: float) -> None:
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._views: dict[int, SiteView] = {}
        self._sampled_at: dict[int, datetime] = {}
        self._described: set[int] = set()
        self._version: tuple[Any, ...] | None = None
        self._loaded = 0.0
        self._newest: datetime | None = None
        self.reloads = 0
        self.fixed: dict[str, Fixed] = {}  # by search.needs_key, for these views; use while holding ``views``
        self._board: Board | None = None
        self._changed: set[int] = set()  # sites whose views changed since the board last saw them
        self._edited: dict[int, SiteView] = {}  # registry changes the board has not taken yet (Board.replace)
        self._stamps: RegistryStamps | None = None
        self.edits = 0  # registry changes applied site by site, without a full reload
        self._changes = -1  # the registry's change counter when the views were last compared with it
        self._list: list[SiteView] | None = None  # the views, as ``views`` gives them
        # The sites whose views hold counted work (active attempts, placements reserved since):
        # the only ones a refresh recounts. None: not known (after a reload or a failed placement).
        self._held: set[int] | None = None
        self.compared = 0  # registry versions read (the counter moved, or the views aged)
        self._heard = False  # a view holds a state read by ``_states`` since the stamps were read

    @contextmanager
    def views(self, session: Session, now: datetime) -> Iterator[list[SiteView]]:
        """Current views, for one placement at a time in this process (the list is the cache's:
        read it, do not change it). A placement on them reserves on a view and adds an attempt
        to ``session``: the sites of the session's attempts are recounted at the next refresh."""
        with self._lock:
            self._refresh(session, now)
            if self._list is None:
                self._list = list(self._views.values())
            try:
                yield self._list
            except BaseException:
                self._held = None  # it may have reserved before failing: the next refresh recounts every site
                raise
            if self._held is not None:
                objects = chain(session.new, session.identity_map.values())
                self._held.update(a.site_id for a in objects if isinstance(a, Attempt))

    def board(self, now: datetime) -> Board:
        """The search board of the current views at ``now``; use while holding ``views``."""
        if self._board is None:
            self._board = Board(self._views.values(), now, self.fixed)
        else:
            if self._edited:
                self._board.replace(self._edited.values())
            self._board.at(now, self._changed)
        self._changed, self._edited = set(), {}
        return self._board

    def _refresh(self, session: Session, now: datetime) -> None:
        changes = registry_changes(session)  # read first: a change committed after it moves it again
        aged = time.monotonic() - self._loaded >= self.max_age_s
        if changes != self._changes or aged:  # aged: also writes the counter cannot see (module docstring)
            version = registry_version(session)
            self.compared += 1
            # A moved counter is compared site by site even when the version looks alike if the
            # views hold a state a heartbeat left (``_states``), which the version never saw.
            moved = version != self._version or (changes != self._changes and self._heard)
            if moved and not self._edit(session, now, version):
                self.reload(session, now, version, changes)
                return
            self._changes = changes
        if aged:
            self._age(session, now)
        fresh = select(CapacityLatest)
        if self._newest is not None:
            fresh = fresh.where(col(CapacityLatest.received_at) > self._newest)
        heard = []
        for snap in session.exec(fresh):
            self._apply(snap)
            if (v := self._views.get(snap.site_id)) is not None and v.reachability != "online":
                heard.append(snap.site_id)
        if heard:  # a heartbeat marks its site online without moving the counter: read the state it left
            self._states(session, heard)
        # Recounted from the database, with any placement since (committed or not): the sites that
        # held work at the last recount or were reserved on since (every site when unknown; a
        # scan of every view took 11 ms at 10,000 sites on a busy machine).
        held = {
            i: _work(v)
            for i in (self._views.keys() if self._held is None else self._held)
            if (v := self._views.get(i)) is not None and (v.fed_cpus or v.unseen_cpus or v.fed_gpus or v.unseen_gpus)
        }
        for i in held:
            v = self._views[i]
            v.fed_cpus = v.unseen_cpus = 0
            v.fed_gpus, v.unseen_gpus = {}, {}
            for part in v.part_now.values():
                part.unseen_cpus, part.unseen_gpus = 0, {}
        touched = apply_attempts(self._views, active_attempts(session), self._sampled_at)
        self._changed.update(i for i in held.keys() | touched if held.get(i) != _work(self._views[i]))
        self._held = touched

    def _states(self, session: Session, site_ids: list[int]) -> None:
        """The status and reachability of these sites as committed (the stamps follow)."""
        for site_id, status, reachability in session.exec(
            select(Site.id, Site.status, Site.reachability).where(col(Site.id).in_(site_ids))
        ):
            assert site_id is not None
            v = self._views[site_id]
            if (v.status, v.reachability) != (status, reachability):
                v.status, v.reachability = status, reachability
                self._changed.add(site_id)
                self._heard = True
            if self._stamps is not None:  # so a registry change compares with what the views hold
                self._stamps.states[site_id] = (status, reachability)

    def reload(self, session: Session, now: datetime, version: tuple[Any, ...] | None = None, changes: int | None = None) -> None:
        """Every site's view read afresh (the first time, and when there are no views to keep)."""
        self._changes = registry_changes(session) if changes is None else changes
        self._newest = session.exec(select(func.max(CapacityLatest.received_at))).one()
        self._views, self._sampled_at, self._described = load_views(session, now)
        self._stamps, self._heard = RegistryStamps.read(session), False
        self.fixed, self._board, self._changed, self._edited = {}, None, set(), {}
        self._list, self._held = None, None  # the loaded views hold their attempts: recounted at the next refresh
        self._version = version or registry_version(session)
        self._loaded, self.reloads = time.monotonic(), self.reloads + 1

    def _edit(self, session: Session, now: datetime, version: tuple[Any, ...]) -> bool:
        """A registry change applied to the sites it touched: their views are read afresh
        (``load_views(only=...)``), the others are kept. What the version moved says what to
        compare: each site's name and last edit (an edit of its record, partitions or software,
        or of its status, bumps ``updated_at``) and its status and reachability; and, as those
        parts moved, each site's policy edit and software rows, the run-time statistics and the
        available replicas. A site added, removed or renamed changes the sites' order: the
        board is built anew from the kept views. False when there are no views to keep."""
        old, stamps = self._version, self._stamps
        if old is None or stamps is None or not self._views:
            return False
        fresh = RegistryStamps.read(session, policies=version[1] != old[1], software=version[4] != old[4], previous=stamps)
        edited = fresh.differ(stamps)
        removed = stamps.sites.keys() - fresh.sites.keys()
        reordered = bool(removed) or any(fresh.sites[i][0] != stamps.sites.get(i, ("",))[0] for i in edited)
        for site_id, (status, reachability) in fresh.states.items() - stamps.states.items():  # the sweep's marks: no edit
            if (v := self._views.get(site_id)) is not None:
                v.status, v.reachability = status, reachability
                self._changed.add(site_id)
        network = next(iter(self._views.values())).network
        if version[2] != old[2]:  # available replicas: where the data is
            network.holders = holders(session)
            network.dataset_bytes = dict(session.exec(select(Dataset.id, Dataset.total_bytes)).all())
            network.owners, network.relays = owners(session), relays(session)  # who may serve a copy
            held: dict[int, set[str]] = {}
            for dataset_id, sites_with in network.holders.items():
                for site_id in sites_with:
                    held.setdefault(site_id, set()).add(dataset_id)
            for site_id, v in self._views.items():
                if v.datasets != held.get(site_id, set()):
                    v.datasets = held.get(site_id, set())
                    self._edited[site_id] = v
        if version[3] != old[3]:  # a finished run changed what was learned
            stats = stats_by_site(session)
            for site_id, v in self._views.items():
                if v.runtime_stats != stats.get(site_id, {}):
                    v.runtime_stats = stats.get(site_id, {})
                    self._edited[site_id] = v
        for site_id in removed:
            del self._views[site_id]
            self._edited.pop(site_id, None)
            network.names.pop(site_id, None)
        for site_id in removed | edited:
            self._sampled_at.pop(site_id, None)
            self._described.discard(site_id)
        if removed or edited:
            self._list = None
        if edited:
            views, sampled_at, described = load_views(session, now, only=edited, network=network)
            self._views.update(views)  # an edited site keeps its place in the order; a new one goes last
            if self._held is not None:  # loaded with their attempts: recounted at the next refresh
                self._held.update(views)
            self._edited.update(views)
            self._sampled_at.update(sampled_at)
            self._described.update(described)
        if edited or removed:
            self.fixed.clear()  # the checks for good read the registry (the board holds this same dict)
        if reordered:  # in the order a full reload gives (the database's, by name)
            order = session.exec(select(Site.id).order_by(col(Site.name))).all()
            self._views = {i: self._views[i] for i in order if i in self._views}
            self._list = None
            self._board, self._edited, self._changed = None, {}, set()
        self._stamps, self._version, self.edits, self._heard = fresh, version, self.edits + 1, False
        return True

    def _apply(self, snap: CapacityLatest) -> None:
        v = self._views.get(snap.site_id)
        if v is not None:
            partitions = v.partitions
            apply_snapshot(v, snap, snap.site_id in self._described)
            if v.partitions != partitions:
                self.fixed.clear()  # the board holds this same dict
            self._sampled_at[snap.site_id] = snap.sampled_at
            self._changed.add(snap.site_id)
        self._newest = max(self._newest or snap.received_at, snap.received_at)

    def _age(self, session: Session, now: datetime) -> None:
        """What changes with time and not with the registry, read without a full reload (which
        took seconds at 10,000 sites, landing on one submission every ``max_age_s``): each
        site's status and reachability, its reliability, the transfer rates and dataset sizes, and
        the snapshots committed late (their ``sampled_at`` differs from the one read). Per site it
        reads a few columns and compares them; it recounts only the sites that changed."""
        for site_id, status, reachability in session.exec(select(Site.id, Site.status, Site.reachability)):
            assert site_id is not None
            v = self._views.get(site_id)  # a swap of states between two sites leaves the version alike
            if v is not None and (v.status, v.reachability) != (status, reachability):
                v.status, v.reachability = status, reachability
                self._changed.add(site_id)
                if self._stamps is not None:  # so a registry change compares with what the views hold
                    self._stamps.states[site_id] = (status, reachability)
        ran = reliability(session, now)
        for site_id, v in self._views.items():
            if v.reliability != ran.get(site_id, 1.0):
                v.reliability = ran.get(site_id, 1.0)
                self._changed.add(site_id)
        if self._views:
            network = next(iter(self._views.values())).network  # shared by every view
            network.dataset_bytes = dict(session.exec(select(Dataset.id, Dataset.total_bytes)).all())
            rates = transfer_rates(session, now)
            if rates != network.pair_bps:
                network.pair_bps, self._board = rates, None  # the board keeps which sites have measured transfers
            network.in_flight = transfers_in_flight(session)  # only lengthens copies: the board's bounds stay bounds
            network.relays = relays(session)  # share policies, embargoes, holders online (Board.special counts every holder)
        sampled = session.exec(select(CapacityLatest.site_id, CapacityLatest.sampled_at)).all()
        late = [site_id for site_id, at in sampled if self._sampled_at.get(site_id) != at]
        if late:
            for snap in session.exec(select(CapacityLatest).where(col(CapacityLatest.site_id).in_(late))):
                self._apply(snap)
        self._loaded = time.monotonic()


@dataclass
class RegistryStamps:
    """What tells which sites a registry change touched: per site its name and last edit, its
    status and reachability, its policy's last edit and its software rows (count, newest id).
    Times as the database driver gives them: only compared with one another."""

    sites: dict[int, tuple[str, Any]]
    states: dict[int, tuple[str, str]]
    policies: dict[int, Any]
    software: dict[int, tuple[int, int]]

    @classmethod
    def read(
        cls, session: Session, policies: bool = True, software: bool = True, previous: RegistryStamps | None = None
    ) -> RegistryStamps:
        """Read afresh; ``policies`` or ``software`` False: those kept from ``previous``."""
        conn = session.connection()
        sites: dict[int, tuple[str, Any]] = {}
        states: dict[int, tuple[str, str]] = {}
        for site_id, name, updated_at, status, reachability in conn.execute(text(_SITE_STAMPS)).all():
            sites[site_id], states[site_id] = (name, updated_at), (status, reachability)
        return cls(
            sites,
            states,
            {i: at for i, at in conn.execute(text(_POLICY_STAMPS))} if policies or previous is None else previous.policies,
            {i: (n, top) for i, n, top in conn.execute(text(_SOFTWARE_STAMPS))}
            if software or previous is None
            else previous.software,
        )

    def differ(self, other: RegistryStamps) -> set[int]:
        """The sites, of these, whose record, policy or software differs from ``other``'s."""
        out = {i for i, _ in self.sites.items() - other.sites.items()}
        for mine, theirs in ((self.policies, other.policies), (self.software, other.software)):
            if mine is not theirs:
                out.update(i for i, _ in mine.items() ^ theirs.items())
        return out & self.sites.keys()


def _work(v: SiteView) -> tuple[object, ...]:
    """The work counted at a site and its partitions: what a recount of the active attempts may change."""
    parts = tuple((name, p.unseen_cpus, dict(p.unseen_gpus)) for name, p in v.part_now.items())
    return v.fed_cpus, v.unseen_cpus, dict(v.fed_gpus), dict(v.unseen_gpus), parts
