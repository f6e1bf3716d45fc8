"""Transfers: how an approved share request becomes a verified replica.

The source site's agent publishes the dataset's files to its exchange store, the
destination site's agent fetches them, checks every file against the manifest and only
then reports the copy. The hub holds the state and the progress; bulk data never passes
through it.

QUEUED -> PUBLISHING -> FETCHING -> DONE, or SUSPENDED (no progress, or failures, too many
times) or CANCELLED (the share request was revoked or expired).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field, FiniteFloat, field_validator

from shared.schemas.common import Int64, SafeStr
from shared.schemas.datasets import Manifest, check_relative_path


class TransferState(StrEnum):
    QUEUED = "QUEUED"
    PUBLISHING = "PUBLISHING"
    FETCHING = "FETCHING"
    DONE = "DONE"
    SUSPENDED = "SUSPENDED"
    CANCELLED = "CANCELLED"

    @property
    def final(self) -> bool:
        return self in (TransferState.DONE, TransferState.SUSPENDED, TransferState.CANCELLED)


ACTIVE_TRANSFER_STATES = (TransferState.QUEUED, TransferState.PUBLISHING, TransferState.FETCHING)


class ExchangeAccess(BaseModel):
    """How the destination reads what the source published.

    ``fs``: a directory both sites see (one machine, a shared filesystem). ``s3``: one
    short-lived presigned GET URL per object, so the destination needs no credentials for
    the source's bucket."""

    kind: Literal["fs", "s3"]
    root: SafeStr | None = Field(default=None, max_length=4000, description="fs: the published directory")
    urls: dict[SafeStr, SafeStr] = Field(
        default_factory=dict, max_length=1_000_000, description="s3: manifest path -> presigned GET URL"
    )
    expires_at: datetime | None = Field(default=None, description="s3: when the URLs stop working")

    @field_validator("urls")
    @classmethod
    def _paths(cls, v: dict[str, str]) -> dict[str, str]:
        for path in v:
            check_relative_path(path)
        return v


class FileError(BaseModel):
    path: SafeStr = Field(max_length=1024)
    error: SafeStr = Field(max_length=2000)
    at: datetime | None = None


class TransferProgress(BaseModel):
    """An agent's report on its side of a transfer. Reports for an older attempt are refused."""

    attempt: Int64 = Field(ge=1)
    bytes_done: Int64 = Field(ge=0, description="Bytes of the dataset this side has finished (resumed parts included)")
    files_done: Int64 = Field(ge=0)
    rate_bps: FiniteFloat = Field(default=0, ge=0, description="Recent throughput, bytes per second")
    resent_bytes: Int64 = Field(default=0, ge=0, description="Bytes sent again after a restart (parts started, not recorded)")
    done: bool = Field(default=False, description="source: all files published; destination: all verified and in place")
    access: ExchangeAccess | None = Field(default=None, description="source: how to read the published files")
    republished: list[SafeStr] = Field(default_factory=list, max_length=100_000, description="source: files sent again")
    corrupt: list[SafeStr] = Field(default_factory=list, max_length=100_000, description="destination: files that failed checks")
    location: SafeStr | None = Field(default=None, max_length=2000, description="destination: where the replica now lives")
    file_errors: list[FileError] = Field(default_factory=list, max_length=1000)

    @field_validator("republished", "corrupt")
    @classmethod
    def _paths(cls, v: list[str]) -> list[str]:
        for path in v:
            check_relative_path(path)
        return v


class TransferFailure(BaseModel):
    """An agent gives up on this attempt; the hub retries or suspends."""

    attempt: Int64 = Field(ge=1)
    reason: SafeStr = Field(min_length=1, max_length=2000)
    file_errors: list[FileError] = Field(default_factory=list, max_length=1000)


class TransferPublic(BaseModel):
    id: str
    share_request: str | None
    job: str | None
    dataset: str
    source_site: str
    dest_site: str
    state: TransferState
    attempt: int
    max_attempts: int
    files_total: int
    bytes_total: int
    published_files: int
    published_bytes: int
    fetched_files: int
    fetched_bytes: int
    rate_bps: float
    resent_bytes: int
    republish: list[str] = Field(description="Files the destination found corrupt, waiting to be sent again")
    resent_files: dict[str, int] = Field(description="How many times the source sent each file again")
    file_errors: list[FileError]
    reason: str | None
    created_at: datetime
    updated_at: datetime
    last_progress_at: datetime
    finished_at: datetime | None


class TransferWork(BaseModel):
    """What an agent needs to do its side of a transfer."""

    transfer: TransferPublic
    role: Literal["source", "dest"]
    manifest: Manifest
    source_location: str | None = Field(default=None, description="source: where the files are at the site")
    access: ExchangeAccess | None = Field(default=None, description="destination: how to read the published files")
    cleanup: bool = Field(default=False, description="source: the transfer ended; remove the published copy")
