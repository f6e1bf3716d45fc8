"""Heartbeats written together (group commit).

A heartbeat's own database work is small and fixed (a site update and a snapshot upsert).
What cost more, measured with a sampling profiler at 64 concurrent senders
(docs/benchmarks.md, "Heartbeats written together"), was everything around them: each
request's hop to a handler thread and back (about 40 % of the hub's busy time went to
waking threads and the event loop), and a ``BEGIN IMMEDIATE`` … ``COMMIT`` of its own,
queued behind every other writer.

So heartbeats are not written by the request's handler. The handler (``async``, on the
event loop) hands its heartbeat to this process's writer thread and waits; the writer takes
every heartbeat waiting and writes them in one transaction (``record_heartbeats``), then
wakes their handlers with one call. There is no timer: a lone heartbeat is written at
once, and batches form only while a write is under way, so latency stays that of one write
while throughput follows the load. A heartbeat is answered only after the transaction that
holds it has committed, so a 2xx still means the sign of life is durable.

If a batch fails, every heartbeat in it gets that error (a database lock not granted within
the busy timeout answers 503 with Retry-After, as before) — except a batch holding a
heartbeat of a site that is gone, which is written again one heartbeat at a time so only
that one is refused.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine

from hub.capacity.history_buffer import HistoryBuffer
from hub.capacity.service import Beat, SiteGone, record_heartbeats
from hub.db import transaction
from hub.settings import HubSettings
from shared.schemas.capacity import HeartbeatAck

log = logging.getLogger(__name__)

#: Most heartbeats in one transaction (more only lengthen the write lock each one holds).
MAX_BATCH = 256


@dataclass
class _Waiting:
    beat: Beat
    future: asyncio.Future[HeartbeatAck]
    loop: asyncio.AbstractEventLoop = field(repr=False)


class HeartbeatWriter:
    """One writer thread per hub process; ``write`` may be awaited from any event loop."""

    def __init__(self, engine: Engine, settings: HubSettings, history: HistoryBuffer) -> None:
        self._engine = engine
        self._settings = settings
        self._history = history
        self._waiting: list[_Waiting] = []
        self._ready = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._writing = 0  # heartbeats in the transaction under way
        #: Transactions written and heartbeats in them, since start (for tests and metrics).
        self.batches = 0
        self.beats = 0

    @property
    def pending(self) -> int:
        """Heartbeats accepted but not yet answered: waiting, or in the transaction under way."""
        with self._ready:
            return len(self._waiting) + self._writing

    def start(self) -> None:
        with self._ready:
            if self._thread is None:
                self._stopping = False
                self._thread = threading.Thread(target=self._run, name="heartbeat-writer", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        """Write what is waiting, then stop the thread."""
        with self._ready:
            self._stopping = True
            self._ready.notify()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()

    async def write(self, beat: Beat) -> HeartbeatAck:
        """Store ``beat`` with whatever else is waiting; returns once that has committed."""
        if self._thread is None:
            self.start()  # an app served without its lifespan (some test clients)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[HeartbeatAck] = loop.create_future()
        with self._ready:
            self._waiting.append(_Waiting(beat, future, loop))
            if len(self._waiting) == 1:  # the writer may be asleep; later ones find it awake
                self._ready.notify()
        return await future

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._waiting and not self._stopping:
                    self._ready.wait()
                if not self._waiting:
                    return
                batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                self._writing = len(batch)
            results = self._store(batch)
            with self._ready:
                self._writing = 0
            self._settle(batch, results)

    def _store(self, batch: list[_Waiting]) -> list[HeartbeatAck | BaseException]:
        try:
            return list(self._transaction([w.beat for w in batch]))
        except SiteGone:
            return [self._alone(w.beat) for w in batch]
        except Exception as exc:  # the database is away or locked: each handler answers it
            return [exc] * len(batch)

    def _alone(self, beat: Beat) -> HeartbeatAck | BaseException:
        try:
            return self._transaction([beat])[0]
        except Exception as exc:
            return exc

    def _transaction(self, beats: list[Beat]) -> list[HeartbeatAck]:
        with transaction(self._engine) as session:
            acks = record_heartbeats(session, beats, self._settings, self._history)
        self.batches += 1
        self.beats += len(beats)
        return acks

    @staticmethod
    def _settle(batch: list[_Waiting], results: list[HeartbeatAck | BaseException]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[HeartbeatAck], HeartbeatAck | BaseException]]] = {}
        for w, result in zip(batch, results, strict=True):
            by_loop.setdefault(w.loop, []).append((w.future, result))
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve, settled)  # one wake-up of the loop per batch
            except RuntimeError:  # that loop has closed: nobody is waiting any more
                log.debug("heartbeats answered after their event loop closed")


def _resolve(settled: list[tuple[asyncio.Future[HeartbeatAck], HeartbeatAck | BaseException]]) -> None:
    for future, result in settled:
        if future.done():  # the request was cancelled (client gone)
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
