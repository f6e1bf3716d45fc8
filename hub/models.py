"""Imports every table so ``SQLModel.metadata`` is complete (for Alembic)."""

from hub.auth.models import EnrollmentCodeRow, EnrollmentRow, OAuthClient, SigningKey, UsedAssertion
from hub.capacity.models import CapacityBucket, CapacityLatest
from hub.jobs.models import Attempt, Job, PlacementRecord, SitePolicyRow, UsageEntry
from hub.sites.models import PartitionRow, Site, SoftwareRow, StorageRow

__all__ = [
    "Attempt",
    "CapacityBucket",
    "CapacityLatest",
    "EnrollmentCodeRow",
    "EnrollmentRow",
    "Job",
    "OAuthClient",
    "PartitionRow",
    "PlacementRecord",
    "SigningKey",
    "Site",
    "SitePolicyRow",
    "SoftwareRow",
    "StorageRow",
    "UsageEntry",
    "UsedAssertion",
]
