"""Referring to a dataset by its EMPIAR or EMDB accession as well as by its ``ds-…`` id.

Wherever a dataset id is accepted (API paths, job spec inputs, share requests, filters),
``EMPIAR-10028`` or ``EMD-2660`` names the dataset whose ``cross_references`` list that
accession, among the datasets the caller may see. Spellings are forgiving: case, ``-``,
``_`` or ``:`` between prefix and number, ``EMDB-`` for ``EMD-``, and leading zeros do
not matter; a bare number in the metadata's ``empiar``/``emdb`` list counts as that
archive's accession. One match resolves to its id; none is 404; several are 409 listing
the candidate ids, because guessing would pick someone else's data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import String, cast
from sqlmodel import Session, col, select

from hub.datasets.models import Dataset
from hub.errors import Conflict, NotFound

_ACCESSION = re.compile(r"^(EMPIAR|EMDB|EMD)[-_:]?0*(\d{1,12})$", re.IGNORECASE)
_ARCHIVE = {"EMPIAR": "empiar", "EMDB": "emdb", "EMD": "emdb"}


def parse_accession(text: str) -> tuple[str, int] | None:
    """('empiar', 10028) for 'EMPIAR-10028'; None for anything that is not an accession."""
    m = _ACCESSION.match(text.strip())
    return (_ARCHIVE[m.group(1).upper()], int(m.group(2))) if m else None


def _listed(meta: Mapping[str, Any], archive: str, number: int) -> bool:
    refs = (meta.get("cross_references") or {}).get(archive) or []
    for ref in refs:
        parsed = parse_accession(ref) if not str(ref).strip().isdigit() else (archive, int(str(ref).strip()))
        if parsed == (archive, number):
            return True
    return False


def matching(session: Session, visible: Any, archive: str, number: int) -> list[str]:
    """Ids of the datasets the caller may see (``visible``: a where-clause or None) listing the accession."""
    stmt = select(Dataset.id, Dataset.meta).where(cast(Dataset.meta, String).like(f"%{number}%"))
    if visible is not None:
        stmt = stmt.where(visible)
    rows: Iterable[tuple[str, Mapping[str, Any]]] = session.exec(stmt.order_by(col(Dataset.created_at), col(Dataset.id)))
    return [ds_id for ds_id, meta in rows if _listed(meta, archive, number)]


def resolve(session: Session, visible: Any, ref: str) -> str:
    """The id ``ref`` names: itself unless it is an accession (then 404 if no visible dataset lists it, 409 if several do)."""
    parsed = parse_accession(ref)
    if parsed is None:
        return ref
    ids = matching(session, visible, *parsed)
    if len(ids) > 1:
        raise Conflict(f"{ref} is listed by {len(ids)} datasets: {', '.join(ids)}; use one of these ids")
    if not ids:
        raise NotFound(f"no dataset {ref!r}: no dataset you may see lists it in its cross-references")
    return ids[0]
