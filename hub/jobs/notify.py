"""Wakes long-polling agents when work for their site appears in this hub process.

Other hub processes sharing the database are not woken; their pollers re-read the
database every ``fallback_s``, which bounds dispatch latency across processes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict


class Notifier:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: dict[int, asyncio.Event] = defaultdict(asyncio.Event)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def notify(self, site_id: int) -> None:
        """Thread-safe: callable from request threads and the sweep."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._events[site_id].set)

    async def wait(self, site_id: int, timeout: float) -> None:
        event = self._events[site_id]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        event.clear()
