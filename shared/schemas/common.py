"""Schemas used by every domain: errors, pages, names."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, GetJsonSchemaHandler, StringConstraints
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

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


def _fits_bigint(value: int) -> int:
    if not -MAX_INT64 - 1 <= value <= MAX_INT64:
        raise ValueError(f"must be between {-MAX_INT64 - 1} and {MAX_INT64} (a 64-bit integer)")
    return value


class _BigintBounds:
    """Publishes the 64-bit bounds in the JSON schema where the field sets none of its own.

    (A ``Field(ge=, le=)`` in the alias would replace the field's own bounds, not add to them.)"""

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        js = handler(schema)
        for raw, name in (("ge", "minimum"), ("gt", "exclusiveMinimum"), ("le", "maximum"), ("lt", "exclusiveMaximum")):
            if raw in js:
                js[name] = js.pop(raw)
        if "minimum" not in js and "exclusiveMinimum" not in js:
            js["minimum"] = -MAX_INT64 - 1
        if "maximum" not in js and "exclusiveMaximum" not in js:
            js["maximum"] = MAX_INT64
        return js


#: Every integer the API accepts: it fits the database (tighter bounds go on the field).
Int64 = Annotated[int, AfterValidator(_fits_bigint), _BigintBounds()]
#: Every string the API accepts: valid Unicode without NUL (lengths go on the field).
SafeStr = Annotated[str, AfterValidator(refuse_unsafe_text)]

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
    total: Int64 = Field(description="How many items match the filter, over all pages.")
    limit: Int64
    offset: Int64
