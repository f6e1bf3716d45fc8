"""What the transfers into one site tell of its links: the measured throughput from each
source (``rules.copy_rate`` over the last ``TRANSFER_WINDOW``) and the bytes each transfer under
way still has to move. The broker reads the same of every pair (hub/broker/views.py); a
transfer's start reads it for its destination alone, to copy from the holder the broker's
estimate assumed (``rules.fastest_source``).

With ``HubSettings.transfer_rate_shared_per_uplink`` a copy from a holder shares its rate with
every transfer under way out of that holder, to any site (``rules.Network.uplinks``): the
broker's network says so (hub/broker/views.py reads ``uplinks_shared``) and a transfer's start
reads the transfers out of each holder (``in_flight_from``) instead of those into its
destination. The setting rides on the hub's engine as an execution option (``share_uplinks``,
set where the app makes its engine), so every session of the hub, a request's or a sweep's,
reads the same."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Engine
from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from hub.broker.rules import copy_rate
from hub.transfers.models import Transfer
from shared.schemas.transfers import ACTIVE_TRANSFER_STATES

TRANSFER_WINDOW = timedelta(days=30)
#: Engine execution option: copies out of a site share its uplink.
UPLINKS_OPTION = "cryomesh_uplinks"


def share_uplinks(engine: Engine, on: bool) -> None:
    """Whether the sessions on ``engine`` (and on its ``hub.db.reader``, made after this) count
    the transfers out of a holder as sharing its rate (``HubSettings.transfer_rate_shared_per_uplink``)."""
    engine.update_execution_options(**{UPLINKS_OPTION: on})


def uplinks_shared(session: Session) -> bool:
    return bool(session.get_bind().get_execution_options().get(UPLINKS_OPTION, False))


def rates_to(session: Session, dest: int, now: datetime) -> dict[tuple[int, int], float]:
    """(source, ``dest``) -> bytes/s, from the transfers into ``dest`` done in the window."""
    samples: dict[int, list[tuple[int, float]]] = defaultdict(list)
    done = session.execute(
        sa_select(col(Transfer.source_site_id), col(Transfer.bytes_total), col(Transfer.created_at), col(Transfer.finished_at))
        .where(col(Transfer.dest_site_id) == dest, col(Transfer.state) == "DONE",
               col(Transfer.finished_at) >= now - TRANSFER_WINDOW)
    )  # fmt: skip
    for src, size, started, finished in done:
        seconds = (finished - started).total_seconds() if finished else 0
        if size > 0 and seconds > 0:
            samples[src].append((size, seconds))
    rates = {(src, dest): copy_rate(sizes) for src, sizes in samples.items()}
    return {pair: rate for pair, rate in rates.items() if rate is not None}


def in_flight_to(session: Session, dest: int) -> dict[tuple[int, int], list[int]]:
    """(source, ``dest``) -> the bytes each transfer under way into ``dest`` still has to move."""
    return _left(session, col(Transfer.dest_site_id) == dest, dest)


def in_flight_from(session: Session, sources: Collection[int], dest: int) -> dict[tuple[int, int], list[int]]:
    """(source, ``dest``) -> the bytes each transfer under way out of each of ``sources``, to any
    site, still has to move: with uplinks shared, a copy from it to ``dest`` shares its rate with
    them all (``rules.Network.sharing``)."""
    return _left(session, col(Transfer.source_site_id).in_(list(sources)), dest) if sources else {}


def _left(session: Session, which: ColumnElement[bool], dest: int) -> dict[tuple[int, int], list[int]]:
    """(source, ``dest``) -> the bytes each transfer under way of those ``which`` selects still has to move."""
    ahead: dict[tuple[int, int], list[int]] = defaultdict(list)
    for src, total, fetched in session.execute(
        sa_select(col(Transfer.source_site_id), col(Transfer.bytes_total), col(Transfer.fetched_bytes))
        .where(which, col(Transfer.state).in_([s.value for s in ACTIVE_TRANSFER_STATES]))
    ):  # fmt: skip
        if total > fetched:
            ahead[(src, dest)].append(total - fetched)
    return dict(ahead)
