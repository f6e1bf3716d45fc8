"""The pictures table: small PNGs, kept in the database (bounded; see ``shared.schemas.pictures``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, ForeignKey, Integer, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel

from hub.types import UTCDateTime, utcnow


class Picture(SQLModel, table=True):
    __tablename__ = "pictures"
    __table_args__ = (UniqueConstraint("subject", "subject_id", "name"),)

    id: int | None = Field(default=None, primary_key=True)
    subject: str = Field(max_length=10, description="'job' or 'dataset'")
    subject_id: str = Field(max_length=40, index=True)
    name: str = Field(max_length=63)
    caption: str | None = Field(default=None, max_length=300)
    share: float | None = None
    pixel_size_a: float | None = None
    width: int
    height: int
    png: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    site_id: int = Field(sa_column=Column(Integer, ForeignKey("sites.id", ondelete="CASCADE"), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
