"""Schemas used by every domain: errors, pages, names."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from pydantic import BaseModel, Field, StringConstraints

T = TypeVar("T")

#: Sites, partitions and storage endpoints are named by short slugs.
Slug = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", strip_whitespace=True),
]


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
