"""Imports every table so ``SQLModel.metadata`` is complete (for Alembic)."""

from hub.auth.models import EnrollmentCodeRow, EnrollmentRow, OAuthClient, SigningKey, UsedAssertion
from hub.capacity.models import CapacityBucket, CapacityLatest
from hub.sites.models import PartitionRow, Site, SoftwareRow, StorageRow

__all__ = [
    "CapacityBucket",
    "CapacityLatest",
    "EnrollmentCodeRow",
    "EnrollmentRow",
    "OAuthClient",
    "PartitionRow",
    "SigningKey",
    "Site",
    "SoftwareRow",
    "StorageRow",
    "UsedAssertion",
]
