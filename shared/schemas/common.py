"""Schemas used by every domain: errors, pages, names."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, Field, StringConstraints

T = TypeVar("T")

#: The largest integer a database BIGINT holds; no integer the API accepts is larger.
MAX_INT64 = 2**63 - 1


def refuse_unsafe_text(value: str) -> str:
    """NUL and lone UTF-16 surrogates cannot be stored (PostgreSQL) or sent back (UTF-8): refuse them."""
    for c in value:
        if c == "\x00":
            raise ValueError("text must not contain NUL characters")
        if "\ud800" <= c <= "\udfff":
            raise ValueError("text must be valid Unicode (a lone surrogate was found)")
    return value


#: Every integer the API accepts: bounded so it fits the database (tighter bounds go on the field).
Int64 = Annotated[int, Field(ge=-MAX_INT64 - 1, le=MAX_INT64)]
#: Every string the API accepts: valid Unicode without NUL (lengths go on the field).
SafeStr = Annotated[str, AfterValidator(refuse_unsafe_text)]

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
    total: Int64 = Field(description="How many items match the filter, over all pages.")
    limit: Int64
    offset: Int64
