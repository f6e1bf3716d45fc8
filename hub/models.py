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
from hub.costs.models import Budget
from hub.datasets.models import Dataset, DatasetFile, DatasetUpload, DatasetUploadFile, Replica
from hub.datasets.shares import ShareEventRow, SharePolicyRow, ShareRequest
from hub.estimates.models import RuntimeStat
from hub.ga4gh.models import TesTagRow, TesTaskRow
from hub.jobs.models import Attempt, Job, PlacementRecord, SitePolicyRow, UsageEntry
from hub.pictures.models import Picture
from hub.sites.models import PartitionRow, Site, SoftwareRow, StorageRow
from hub.transfers.models import Transfer

__all__ = [
    "Attempt",
    "AuthVersion",
    "AuthorizationCodeRow",
    "Budget",
    "CapacityBucket",
    "CapacityLatest",
    "Dataset",
    "DatasetFile",
    "DatasetUpload",
    "DatasetUploadFile",
    "DeviceCodeRow",
    "EnrollmentCodeRow",
    "EnrollmentRow",
    "ExternalSignIn",
    "Job",
    "OAuthClient",
    "PartitionRow",
    "Picture",
    "PlacementRecord",
    "Replica",
    "RuntimeStat",
    "ShareEventRow",
    "SharePolicyRow",
    "ShareRequest",
    "SignInSession",
    "SigningKey",
    "Site",
    "SitePolicyRow",
    "SoftwareRow",
    "StorageRow",
    "TesTagRow",
    "TesTaskRow",
    "Transfer",
    "UsageEntry",
    "UsedAssertion",
]
