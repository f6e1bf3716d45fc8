"""Imports every table so ``SQLModel.metadata`` is complete (for Alembic)."""

from hub.auth.models import (
    AuthorizationCodeRow,
    AuthVersion,
    DeviceCodeRow,
    EnrollmentCodeRow,
    EnrollmentRow,
    ExternalSignIn,
    OAuthClient,
    SigningKey,
    SignInSession,
    UsedAssertion,
)
from hub.capacity.models import CapacityBucket, CapacityLatest
from hub.datasets.models import Dataset, DatasetManifest, Replica
from hub.datasets.shares import ShareEventRow, SharePolicyRow, ShareRequest
from hub.jobs.models import Attempt, Job, PlacementRecord, SitePolicyRow, UsageEntry
from hub.sites.models import PartitionRow, Site, SoftwareRow, StorageRow
from hub.transfers.models import Transfer

__all__ = [
    "Attempt",
    "AuthVersion",
    "AuthorizationCodeRow",
    "CapacityBucket",
    "CapacityLatest",
    "Dataset",
    "DatasetManifest",
    "DeviceCodeRow",
    "EnrollmentCodeRow",
    "EnrollmentRow",
    "ExternalSignIn",
    "Job",
    "OAuthClient",
    "PartitionRow",
    "PlacementRecord",
    "Replica",
    "ShareEventRow",
    "SharePolicyRow",
    "ShareRequest",
    "SignInSession",
    "SigningKey",
    "Site",
    "SitePolicyRow",
    "SoftwareRow",
    "StorageRow",
    "Transfer",
    "UsageEntry",
    "UsedAssertion",
]
