"""What the broker reads of past and current transfers (hub/broker/views.py): each pair's rate
net of the set-up its copy estimate adds back, and the bytes still to move on each pair."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import create_engine
from sqlmodel import Session, SQLModel

import hub.models  # noqa: F401  (every table, for create_all)
from hub.broker.rules import COPY_SETUP_S
from hub.broker.views import transfer_rates, transfers_in_flight
from hub.transfers.links import in_flight_to, rates_to
from hub.transfers.models import Transfer

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def _transfer(n: int, src: int, dst: int, state: str, size: int, seconds: float = 0.0, fetched: int = 0) -> Transfer:
    return Transfer(id=f"tr-{n}", requested_by="t", dataset_id="d", source_site_id=src, dest_site_id=dst, source_location="",
                    state=state, max_attempts=3, files_total=1, bytes_total=size, fetched_bytes=fetched,
                    created_at=NOW - timedelta(seconds=seconds), finished_at=NOW if state == "DONE" else None)  # fmt: skip


def test_rates_are_net_of_the_set_up_and_transfers_under_way_are_counted() -> None:
    engine = create_engine("sqlite://")
    SQLModel.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all([
            _transfer(1, 1, 2, "DONE", 26 * 10**9, COPY_SETUP_S + 104),  # 250 MB/s past the set-up
            _transfer(2, 1, 2, "DONE", 10**9, COPY_SETUP_S / 2),  # all set-up: no time moving bytes
            _transfer(3, 1, 3, "DONE", 10**9, COPY_SETUP_S / 2),  # the pair's only transfer: nothing learned
            _transfer(4, 1, 2, "FETCHING", 4 * 10**12, fetched=10**12),
            _transfer(5, 1, 2, "QUEUED", 10**12),
            _transfer(6, 2, 1, "FAILED", 10**12),
        ])  # fmt: skip
        session.commit()
        assert transfer_rates(session, NOW) == {(1, 2): 27 * 10**9 / 104}
        assert transfers_in_flight(session) == {(1, 2): [3 * 10**12, 10**12]}
        # A transfer's start reads the same of the links into its destination (hub/transfers/links.py).
        assert rates_to(session, 2, NOW) == {(1, 2): 27 * 10**9 / 104} and rates_to(session, 3, NOW) == {}
        assert in_flight_to(session, 2) == {(1, 2): [3 * 10**12, 10**12]} and in_flight_to(session, 1) == {}
