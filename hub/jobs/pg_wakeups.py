"""Wake long-polls, and hear of revocations, across hub processes with PostgreSQL ``LISTEN/NOTIFY``.

Each hub process on PostgreSQL keeps two connections of its own (psycopg, autocommit): one
``LISTEN``s on ``cryomesh_work`` and ``cryomesh_auth``, one sends.

``cryomesh_auth`` carries the auth version, sent by the transaction that raised it
(``hub.auth.version``) and delivered when it commits: the process's principal cache
advances at once, so a token revoked through any process is refused on this one too.

``cryomesh_work``: The sites this process's notifier is told about
(after their transactions commit) are sent, coalesced, as ``<process>:<id>,<id>,…``; every
other process wakes its polls for those sites. A process skips its own messages, having
woken its polls already.

If a connection drops, the bridge reconnects with back-off and, once listening again, wakes
every waiting poll (each re-reads the database once) and has the auth version re-read
before the next request: messages sent meanwhile were lost. Nothing depends on a message
arriving: the per-process re-checks find the work and the version within a second anyway
(``hub.jobs.notify``, ``hub.auth.revocation``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Coroutine

import psycopg
from sqlalchemy.engine import make_url

from hub.auth import version
from hub.auth.revocation import PrincipalCache
from hub.jobs.notify import Notifier

log = logging.getLogger("cryomesh.hub.notify")

CHANNEL = "cryomesh_work"
#: PostgreSQL refuses payloads of 8,000 bytes or more.
MAX_PAYLOAD = 7900


def conninfo(database_url: str) -> str:
    """The SQLAlchemy URL as psycopg takes it (``postgresql+psycopg://`` → ``postgresql://``)."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def payloads(sender: str, site_ids: set[int]) -> list[str]:
    """``site_ids`` as few messages as fit PostgreSQL's payload limit."""
    out, ids = [], [str(i) for i in sorted(site_ids)]
    while ids:
        chunk: list[str] = []
        size = len(sender) + 1
        while ids and size + len(ids[0]) + 1 <= MAX_PAYLOAD:
            size += len(ids[0]) + 1
            chunk.append(ids.pop(0))
        out.append(f"{sender}:{','.join(chunk)}")
    return out


def parse(payload: str) -> tuple[str, list[int]]:
    sender, _, ids = payload.partition(":")
    return sender, [int(i) for i in ids.split(",") if i.isdigit()]


async def bridge(notifier: Notifier, principals: PrincipalCache, database_url: str, max_backoff_s: float = 10) -> None:
    """Run until cancelled: relay this process's wakes out and the others' in; advance
    ``principals`` to every auth version announced."""
    me = uuid.uuid4().hex[:12]
    ready = notifier.start_outbox()
    backoff = 0.2
    while True:
        try:
            async with (
                await psycopg.AsyncConnection.connect(conninfo(database_url), autocommit=True) as listener,
                await psycopg.AsyncConnection.connect(conninfo(database_url), autocommit=True) as sender,
            ):
                await listener.execute(f"LISTEN {CHANNEL}")
                await listener.execute(f"LISTEN {version.CHANNEL}")
                notifier.wake_all()  # whatever was sent while we were not listening
                principals.reread_soon()
                backoff = 0.2
                await _first_to_fail(_receive(listener, notifier, principals, me), _send(sender, notifier, ready, me))
        except (psycopg.Error, OSError) as exc:
            log.warning("LISTEN/NOTIFY connection lost (%s); reconnecting in %.1f s", str(exc).strip(), backoff)
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, max_backoff_s)


async def _first_to_fail(*loops: Coroutine[object, object, None]) -> None:
    """Run ``loops`` until one raises; cancel the others and raise that error."""
    tasks = [asyncio.create_task(loop) for loop in loops]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        task.result()


async def _receive(conn: psycopg.AsyncConnection[object], notifier: Notifier, principals: PrincipalCache, me: str) -> None:
    async for message in conn.notifies():
        if message.channel == version.CHANNEL:
            if message.payload.isdigit():
                principals.advance(int(message.payload))
            continue
        sender, site_ids = parse(message.payload)
        if sender != me:
            notifier.wake(site_ids)


async def _send(conn: psycopg.AsyncConnection[object], notifier: Notifier, ready: asyncio.Event, me: str) -> None:
    while True:
        await ready.wait()
        ready.clear()
        for payload in payloads(me, notifier.take_outbox()):
            await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
