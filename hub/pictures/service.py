"""Pictures: who may upload them (the agent of the site that ran the job or owns the
dataset), what is accepted (real PNGs within ``shared.schemas.pictures`` bounds), who may
see them (whoever may see the job or dataset)."""

from __future__ import annotations

import base64
import binascii
import io
from typing import Literal

from PIL import Image
from sqlalchemy import delete
from sqlmodel import Session, col, select

from hub.auth.principal import Principal
from hub.datasets import service as datasets
from hub.datasets.models import Dataset
from hub.errors import BadRequest, Forbidden, NotFound
from hub.jobs import service as jobs
from hub.jobs.models import Job
from hub.pictures.models import Picture
from hub.sites.models import Site
from shared.schemas.pictures import MAX_PNG_BYTES, MAX_SIDE_PX, PicturePublic, PictureSet, PictureUpload

Subject = Literal["job", "dataset"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png(p: PictureUpload) -> tuple[bytes, int, int]:
    """The PNG's bytes and size, or 400 saying what is wrong with it."""
    try:
        data = base64.b64decode(p.png_base64, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"picture {p.name}: png_base64 is not base64") from None
    if len(data) > MAX_PNG_BYTES:
        raise BadRequest(f"picture {p.name}: {len(data)} bytes; at most {MAX_PNG_BYTES} are accepted")
    if not data.startswith(PNG_SIGNATURE):
        raise BadRequest(f"picture {p.name}: not a PNG")
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            if width > MAX_SIDE_PX or height > MAX_SIDE_PX:
                raise BadRequest(f"picture {p.name}: {width}x{height} pixels; at most {MAX_SIDE_PX} a side")
            im.verify()
    except BadRequest:
        raise
    except Exception as exc:  # Pillow raises many kinds for a damaged file
        raise BadRequest(f"picture {p.name}: not a readable PNG ({type(exc).__name__})") from None
    return data, width, height


def _uploadable(session: Session, principal: Principal, subject: Subject, subject_id: str) -> None:
    if subject == "job":
        job = session.get(Job, subject_id)
        if job is None:
            raise NotFound(f"no job {subject_id!r}")
        if job.site_id != principal.site_id:
            raise Forbidden(f"job {subject_id} is not at site {principal.site}: only its site's agent adds its pictures")
    else:
        ds = session.get(Dataset, subject_id)
        if ds is None:
            raise NotFound(f"no dataset {subject_id!r}")
        if ds.owner_site_id != principal.site_id:
            raise Forbidden(
                f"dataset {subject_id} is not owned by site {principal.site}: only its owner's agent adds its pictures"
            )


def replace(
    session: Session, principal: Principal, subject: Subject, subject_id: str, body: PictureSet, base: str
) -> list[PicturePublic]:
    """Replace the subject's pictures whole (an agent that made them again sends them again)."""
    _uploadable(session, principal, subject, subject_id)
    names = [p.name for p in body.pictures]
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        raise BadRequest(f"picture names given twice: {', '.join(dupes)}")
    decoded = [(p, *_png(p)) for p in body.pictures]
    session.execute(delete(Picture).where(col(Picture.subject) == subject, col(Picture.subject_id) == subject_id))
    assert principal.site_id is not None
    for p, data, width, height in decoded:
        session.add(
            Picture(subject=subject, subject_id=subject_id, name=p.name, caption=p.caption, share=p.share,
                    pixel_size_a=p.pixel_size_a, width=width, height=height, png=data, site_id=principal.site_id)
        )  # fmt: skip
    session.flush()
    return listing(session, subject, subject_id, base)


def ensure_visible(session: Session, principal: Principal, subject: Subject, subject_id: str) -> str:
    """404 unless the caller may see the job or dataset; returns its id (an accession resolved)."""
    if subject == "job":
        return jobs.get_visible(session, principal, subject_id).id
    return datasets.get_visible(session, principal, subject_id).id


def listing(session: Session, subject: Subject, subject_id: str, base: str) -> list[PicturePublic]:
    """The subject's pictures: largest share first (a classification's classes), then by name."""
    names = {s.id: s.name for s in session.exec(select(Site))}
    rows = session.exec(select(Picture).where(Picture.subject == subject, Picture.subject_id == subject_id)).all()
    # Classes with the largest share of the particles first; pictures without a share by name.
    rows = sorted(rows, key=lambda r: (r.share is None, -(r.share or 0.0), r.name))
    return [
        PicturePublic(name=r.name, caption=r.caption, share=r.share, pixel_size_a=r.pixel_size_a, width=r.width,
                      height=r.height, bytes=len(r.png), site=names.get(r.site_id, "?"),
                      url=f"{base}/api/v1/{subject}s/{subject_id}/pictures/{r.name}", created_at=r.created_at)
        for r in rows
    ]  # fmt: skip


def png(session: Session, subject: Subject, subject_id: str, name: str) -> bytes:
    row = session.exec(
        select(Picture).where(Picture.subject == subject, Picture.subject_id == subject_id, Picture.name == name)
    ).first()
    if row is None:
        raise NotFound(f"{subject} {subject_id} has no picture {name!r}")
    return row.png
