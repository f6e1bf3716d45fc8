"""Presigned S3 URLs a site's agent makes for the hub's DRS access calls.

The hub holds no storage credentials (docs/security.md). When a DRS client asks for the
``https`` access of a file whose replica is in a site's S3 bucket, the hub asks that site's
agent, through the agent's long-poll for work (``AssignmentBatch.presign``), to sign a GET
URL for the object; the agent signs it with its own credentials, if its admin listed the
bucket (``[drs] presign_buckets``), and answers; the hub hands the URL to the client.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, model_validator

from shared.schemas.common import Int64, SafeStr


class PresignRequest(BaseModel):
    """One object the hub asks the agent to sign a GET URL for (tolerant wire)."""

    id: str
    url: str = Field(description="s3://bucket/key of the object")
    ttl_s: Int64 = Field(description="Life the hub asks for; the agent may give less")


class PresignAnswer(BaseModel):
    """The agent's answer: the signed URL, or why it will not sign (tolerant wire)."""

    url: SafeStr | None = Field(default=None, max_length=8000, description="The presigned GET URL")
    expires_at: datetime | None = None
    refused: SafeStr | None = Field(default=None, max_length=2000, description="Why the site does not sign it")

    @model_validator(mode="after")
    def _one(self) -> PresignAnswer:
        if (self.url is None) == (self.refused is None):
            raise ValueError("give exactly one of url or refused")
        if self.url is not None and self.expires_at is None:
            raise ValueError("a signed url needs its expires_at")
        return self
