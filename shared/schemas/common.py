"""Schemas used by every domain: errors, pages, names."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

T = TypeVar("T")

#: Sites, partitions and storage endpoints are named by short slugs.
Slug = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", strip_whitespace=True),
]


class StrictModel(BaseModel):
    """Input a person writes (job specs, site descriptions, policies, dataset metadata,
    config files): an unknown field is refused, never silently dropped, so a typo such as
    ``allowed_institution`` cannot quietly mean "everyone". Messages that name the unknown
    field and the one probably meant come from :func:`shared.validation.describe_errors`.

    Wire payloads an agent or hub writes stay plain ``BaseModel`` (tolerant of a newer
    peer's new fields); readers of responses that embed strict models validate them with
    ``extra="ignore"``. docs/architecture.md lists which payload is which and why."""

    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    """The one shape of every refusal the API makes."""

    error: str = Field(description="Name of the error class, e.g. 'NotFound'.")
    detail: str = Field(description="What was wrong, in words a person can act on.")


class Page(BaseModel, Generic[T]):
    """One page of a list, newest first unless the endpoint says otherwise."""

    items: list[T]
    total: int = Field(description="How many items match the filter, over all pages.")
    limit: int
    offset: int
