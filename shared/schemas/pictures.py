"""Small pictures of results: a classification's 2D class averages, a dataset's particles.

Made at the site by its agent (``site_agent.pictures``) and sent as small PNGs, so people
can look at results in the dashboard without any bulk data passing through the hub.
The hub bounds them (``hub.pictures.service``: count, bytes, pixels).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, FiniteFloat

from shared.schemas.common import SafeStr

#: What the hub accepts (and what the agent makes fit): pictures per job or dataset, bytes
#: and pixels per side of each PNG. A full set (base64) stays under the hub's default body
#: limit of 1 MiB.
MAX_PICTURES = 16
MAX_PNG_BYTES = 40 * 1024
MAX_SIDE_PX = 256


class PictureUpload(BaseModel):
    """One PNG as the agent sends it (tolerant: written by a program)."""

    name: SafeStr = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$", description="e.g. 'class-001', 'particle-003'")
    caption: SafeStr | None = Field(default=None, max_length=300)
    share: FiniteFloat | None = Field(default=None, ge=0, le=1, description="A class's share of the particles")
    pixel_size_a: FiniteFloat | None = Field(default=None, gt=0, le=1000, description="Of the images shown, Å/pixel")
    png_base64: str = Field(max_length=(MAX_PNG_BYTES * 4) // 3 + 8)


class PictureSet(BaseModel):
    """The body of ``PUT .../pictures``: replaces the subject's pictures whole."""

    pictures: list[PictureUpload] = Field(max_length=MAX_PICTURES)


class PicturePublic(BaseModel):
    name: str
    caption: str | None
    share: float | None
    pixel_size_a: float | None
    width: int
    height: int
    bytes: int
    site: str = Field(description="The site whose agent made it")
    url: str = Field(description="Where the PNG is (same access rules as its job or dataset)")
    created_at: datetime
