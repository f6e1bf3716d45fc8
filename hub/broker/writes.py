"""A broker pass's writes as three bulk statements instead of one ORM object per row.

A pass over 10,000 queued jobs offers thousands of attempts and records a decision for
each job; building and flushing an ``Attempt`` and a ``PlacementRecord`` per job was most
of the pass's time. Here the rows are plain dicts, written with one executemany each
(attempts, decisions, the placed jobs' attempt/site), on SQLite and PostgreSQL alike. The
pass reads the queued jobs as plain rows too (``hub.broker.queue``); a placed job the
session happens to hold as an ORM object is expired, so it is read back as the database
now holds it.

A decision's verdicts are the job's own (the chosen site's) followed by the sites ruled out,
grouped by reason; jobs of one kind share those groups (``service._grouped_once``). Encoding
each decision's JSON whole re-encoded the same groups 10,000 times and was a third of the
writes' time, so each shared group is encoded once and a decision's JSON is put together
from the parts: the same text ``json.dumps`` gives for the whole list.

The rows are tuples, not dicts. On SQLite each statement goes to the driver's executemany
as it is (``_Bulk``): SQLAlchemy's handling of every row's parameters (bind processors,
column defaults) cost as much as SQLite's own work, and a pass's timestamps are all one
``now``, converted once. Elsewhere (PostgreSQL) the statements go through SQLAlchemy, which
batches an executemany into multi-row statements.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Connection, bindparam, insert, update
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.types import TypeDecorator
from sqlmodel import Session, SQLModel

from hub.broker.rules import SiteView, Verdict
from hub.db import after_commit
from hub.jobs.models import Attempt, Job, PlacementRecord
from hub.jobs.notify import Notifier
from shared.schemas.jobs import JobSpec

Verdicts = list[dict[str, Any]]


def _one_shot_encoder() -> Callable[[Any], str]:
    """``json.dumps`` with its default arguments, cheaper for many small values: ``json.dumps``
    makes a new C encoder for every call, which for a decision's own verdict (one dict of a
    dozen numbers) cost three times the encoding itself. Here the encoder is made once, as
    ``JSONEncoder.iterencode`` makes it; without the check for circular references, which
    verdicts built afresh from numbers and strings cannot have."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator (not CPython)
        return json.dumps
    encode = make(None, json.JSONEncoder().default, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True)
    return lambda value: "".join(encode(value, 0))


_dumps = _one_shot_encoder()


class _EncodedJSON(TypeDecorator[str]):
    """A JSON column's value already encoded as text: written as is (the column's own type
    would encode the text again as a JSON string)."""

    impl = JSON
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> None:
        return None


class _Bulk:
    """One statement run for many rows of values (tuples, in the order of ``names``)."""

    def __init__(self, statement: UpdateBase, names: tuple[str, ...]) -> None:
        self.statement, self.names = statement, names

    def run(self, conn: Connection, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        dialect = conn.dialect
        if dialect.name == "sqlite":
            compiled = self.statement.compile(dialect=dialect, column_keys=list(self.names))
            order = compiled.positiontup or []
            if set(order) == set(self.names) and len(order) == len(self.names):  # no default of SQLAlchemy's to add
                # Column by column, in the statement's order; each value a column's type converts
                # (timestamps: the pass's one ``now``) converted once.
                columns: list[Iterable[Any]] = list(zip(*rows, strict=True))
                columns = [columns[self.names.index(name)] for name in order]
                for k, name in enumerate(order):
                    if process := compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect):
                        seen = {value: None if value is None else process(value) for value in set(columns[k])}
                        columns[k] = map(seen.__getitem__, columns[k])
                out = list(zip(*columns, strict=True))
                conn.exec_driver_sql(str(compiled), out)
                return
        conn.execute(self.statement, [dict(zip(self.names, row, strict=True)) for row in rows])


_JOBS, _ATTEMPTS, _DECISIONS = (SQLModel.metadata.tables[m.__tablename__] for m in (Job, Attempt, PlacementRecord))
_PLACED = _Bulk(
    update(_JOBS)
    .where(_JOBS.c.id == bindparam("b_id"))
    .values(attempt=bindparam("b_attempt"), site_id=bindparam("b_site_id"), updated_at=bindparam("b_updated_at")),
    ("b_id", "b_attempt", "b_site_id", "b_updated_at"),
)
#: Every column the ORM would write for an offered attempt, defaults included.
_OFFERED = _Bulk(
    insert(_ATTEMPTS),
    ("id", "job_id", "number", "site_id", "offered_at", "cpus", "gpus", "gpu_model", "partition", "state", "last_seq"),
)
_DECIDED = _Bulk(
    insert(_DECISIONS).values(verdicts=bindparam("b_verdicts", type_=_EncodedJSON())),
    ("job_id", "attempt", "decided_at", "outcome", "site", "summary", "b_verdicts"),
)


#: A version 4 UUID's fixed bits: its variant (RFC 4122) and version, as ``uuid.UUID`` sets them.
_UUID4_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_UUID4_SET = (0x8000 << 48) | (4 << 76)


def uuid4_hex(random16: bytes) -> str:
    """``uuid.UUID(bytes=random16, version=4).hex`` (``uuid.uuid4().hex`` given ``os.urandom(16)``),
    without building a ``uuid.UUID``: a pass makes one per job placed."""
    return f"{int.from_bytes(random16) & _UUID4_CLEAR | _UUID4_SET:032x}"


class PassWrites:
    """Rows a pass will write, kept until ``write``."""

    def __init__(self) -> None:
        self.attempts: list[tuple[Any, ...]] = []  # as _OFFERED names them
        self.decisions: list[tuple[Any, ...]] = []  # as _DECIDED names them
        self.jobs: list[tuple[str, int, int, datetime]] = []  # as _PLACED names them
        self.sites: set[int] = set()
        self._encoded: dict[int, tuple[Verdicts, str]] = {}  # by id of a shared part, kept alive with its text

    def offer(
        self, job_id: str, attempts_before: int, spec: JobSpec, site: SiteView, best: Verdict, now: datetime, summary: str,
        own: Verdicts, shared: Sequence[Verdicts],
    ) -> None:  # fmt: skip
        """What ``service._offer`` does for a job without inputs to stage, as rows."""
        number = attempts_before + 1
        r = spec.resources
        self.attempts.append(
            (uuid4_hex(os.urandom(16)), job_id, number, site.id, now, r.cpus, r.gpus, best.gpu_model, best.queue, "offered", 0)
        )
        self.jobs.append((job_id, number, site.id, now))
        self.decision(job_id, number, now, "placed", summary, own, shared, site.name)
        self.sites.add(site.id)

    def decision(
        self, job_id: str, attempt: int, now: datetime, outcome: str, summary: str, own: Verdicts,
        shared: Sequence[Verdicts], site: str | None = None,
    ) -> None:  # fmt: skip
        """A decision whose verdicts are ``own`` followed by each of ``shared`` (lists other
        decisions of the pass share, unchanged until ``write``)."""
        self.decisions.append((job_id, attempt, now, outcome, site, summary, self._json(own, shared)))

    def _json(self, own: Verdicts, shared: Sequence[Verdicts]) -> str:
        """``json.dumps(own + shared[0] + ...)``, each shared part encoded once per pass."""
        items = [_dumps(own)[1:-1]] if own else []
        for part in shared:
            if part:
                kept = self._encoded.get(id(part))
                if kept is None:
                    kept = self._encoded[id(part)] = (part, _dumps(part)[1:-1])
                items.append(kept[1])
        return "[" + ", ".join(items) + "]"

    def write(self, session: Session, notifier: Notifier | None) -> None:
        """Everything kept, in one statement per table; the sites are woken once committed."""
        session.flush()  # the ORM's own pending rows (jobs placed one by one) go first
        conn = session.connection()
        if self.jobs:
            _PLACED.run(conn, self.jobs)
            placed = {row[0] for row in self.jobs}
            for held in list(session.identity_map.values()):  # a copy this session already holds would be stale
                if isinstance(held, Job) and held.id in placed:
                    session.expire(held)
        _OFFERED.run(conn, self.attempts)
        _DECIDED.run(conn, self.decisions)
        if notifier is not None and self.sites:
            wake, sites = notifier, sorted(self.sites)

            def woken() -> None:
                for site_id in sites:
                    wake.notify(site_id)

            after_commit(session, woken)
        self.attempts, self.decisions, self.jobs, self.sites, self._encoded = [], [], [], set(), {}
