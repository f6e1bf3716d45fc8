"""Wakes long-polling agents when work for their site appears.

A poll that finds nothing waits here, on an event of its own, instead of re-reading the
database. It is woken:

- at once, by this process, when a transaction that offered work (or asked a running
  attempt to cancel) has committed: the services call ``notify(site_id)`` after commit;
- within a second (``long_poll_recheck_s``), by ``recheck``: one query per process per
  second for every waiting site at once (work committed by another hub process that could not tell us, or a wake that
  fell between a poll's read and its wait);
- on PostgreSQL, at once, by the other hub processes: ``hub.jobs.pg_wakeups`` sends each
  site this process notifies with ``NOTIFY`` and wakes the sites other processes send.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

log = logging.getLogger("cryomesh.hub.notify")


class Notifier:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[int, set[asyncio.Event]] = defaultdict(set)
        self.waiting_polls = 0  # for the metrics, read from other threads
        # Sites this process woke, for hub.jobs.pg_wakeups to tell the others (None: nobody listens).
        self._outbox: set[int] | None = None
        self._outbox_lock = threading.Lock()
        self._outbox_ready: asyncio.Event | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def notify(self, site_id: int) -> None:
        """Work for ``site_id`` was committed. Thread-safe: called from request threads and the sweep."""
        with self._outbox_lock:
            if self._outbox is not None:
                self._outbox.add(site_id)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._committed, site_id)

    def _committed(self, site_id: int) -> None:
        self.wake([site_id])
        if self._outbox_ready is not None:
            self._outbox_ready.set()

    # ------------------------------------------------------------ on the event loop

    def wake(self, site_ids: Iterable[int]) -> None:
        """Wake every poll waiting for one of ``site_ids``."""
        for site_id in site_ids:
            for event in self._waiters.get(site_id, ()):
                event.set()

    def wake_all(self) -> None:
        self.wake(list(self._waiters))

    def waiting_sites(self) -> set[int]:
        return {site_id for site_id, events in self._waiters.items() if events}

    @contextmanager
    def waiting(self, site_id: int) -> Iterator[asyncio.Event]:
        """An event set when work for ``site_id`` may have appeared. Register before reading
        the database, so a commit between the read and the wait is not missed."""
        event = asyncio.Event()
        self._waiters[site_id].add(event)
        self.waiting_polls += 1
        try:
            yield event
        finally:
            self.waiting_polls -= 1
            self._waiters[site_id].discard(event)
            if not self._waiters[site_id]:
                del self._waiters[site_id]

    # ------------------------------------------------------------ for pg_wakeups

    def start_outbox(self) -> asyncio.Event:
        """From now on, remember the sites this process notifies; the event says there are some."""
        with self._outbox_lock:
            self._outbox = set()
        self._outbox_ready = asyncio.Event()
        return self._outbox_ready

    def take_outbox(self) -> set[int]:
        with self._outbox_lock:
            taken, self._outbox = self._outbox or set(), set()
        return taken


async def recheck(notifier: Notifier, sites_with_work: Callable[[set[int]], set[int]], period_s: float) -> None:
    """Every ``period_s``: one query (in a worker thread) for all sites with a waiting poll;
    wake those that have work. Runs until cancelled."""
    while True:
        await asyncio.sleep(period_s)
        waiting = notifier.waiting_sites()
        if not waiting:
            continue
        try:
            found = await asyncio.to_thread(sites_with_work, waiting)
        except Exception:  # the database is away: the polls time out and the agents retry
            log.warning("re-checking for work failed", exc_info=True)
            continue
        notifier.wake(found)
