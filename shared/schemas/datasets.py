"""Datasets: EMPIAR-style metadata, checksummed manifests, replicas."""

from __future__ import annotations

import hashlib
import re
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, field_validator, model_validator

from shared.schemas.common import Int64, Page, SafeStr, StrictModel


class ExperimentType(StrEnum):
    SPA = "spa"
    TOMOGRAPHY = "tomography"
    SUBTOMOGRAM_AVERAGING = "subtomogram_averaging"
    HELICAL = "helical"
    MICROED = "microed"
    OTHER = "other"


class Visibility(StrEnum):
    PRIVATE = "private"  # the owner site's institution only
    NETWORK = "network"  # anyone signed in to the network
    PUBLIC = "public"


class ReplicaState(StrEnum):
    AVAILABLE = "AVAILABLE"
    COPYING = "COPYING"
    UNAVAILABLE = "UNAVAILABLE"
    BAD = "BAD"
    DELETING = "DELETING"


class ChecksumAlgorithm(StrEnum):
    CRC64NVME = "crc64nvme"
    SHA256 = "sha256"


class Sample(StrictModel):
    name: SafeStr = Field(min_length=1, max_length=300)
    organism: SafeStr | None = Field(default=None, max_length=300)
    molecular_weight_kda: FiniteFloat | None = Field(default=None, gt=0)


class Instrument(StrictModel):
    microscope: SafeStr | None = Field(default=None, max_length=200, description="e.g. 'Titan Krios G4'")
    voltage_kv: FiniteFloat | None = Field(default=None, gt=0, le=3000)
    cs_mm: FiniteFloat | None = Field(default=None, ge=0, le=100)
    energy_filter: SafeStr | None = Field(default=None, max_length=200)


class Detector(StrictModel):
    model: SafeStr | None = Field(default=None, max_length=200, description="e.g. 'Falcon 4i', 'K3'")
    mode: SafeStr | None = Field(default=None, pattern=r"^(counting|super-resolution|eer|integrating)$")


class Acquisition(StrictModel):
    pixel_size_a: FiniteFloat | None = Field(default=None, gt=0, le=100, description="Ångström per pixel")
    total_dose_e_per_a2: FiniteFloat | None = Field(default=None, gt=0)
    dose_per_frame: FiniteFloat | None = Field(default=None, gt=0)
    exposure_s: FiniteFloat | None = Field(default=None, gt=0)
    defocus_min_um: FiniteFloat | None = None
    defocus_max_um: FiniteFloat | None = None
    tilt_min_deg: FiniteFloat | None = Field(default=None, ge=-90, le=90)
    tilt_max_deg: FiniteFloat | None = Field(default=None, ge=-90, le=90)
    tilt_step_deg: FiniteFloat | None = Field(default=None, gt=0, le=90)


class ImageSet(StrictModel):
    category: SafeStr = Field(pattern=r"^(raw_movies|micrographs|particle_stacks|maps|tilt_series|other)$")
    format: SafeStr = Field(pattern=r"^(mrc|mrcs|tiff|eer|star|other)$")
    count: Int64 = Field(ge=0)
    frames_per_image: Int64 | None = Field(default=None, ge=1)
    width: Int64 | None = Field(default=None, ge=1)
    height: Int64 | None = Field(default=None, ge=1)
    pixel_size_a: FiniteFloat | None = Field(default=None, gt=0)
    file_pattern: SafeStr | None = Field(default=None, max_length=500)
    particles: Int64 | None = Field(
        default=None, ge=0, description="Particles in all stacks (RELION: rows of the particles STAR)"
    )


class CrossReferences(StrictModel):
    emdb: list[SafeStr] = Field(default_factory=list, max_length=50)
    empiar: list[SafeStr] = Field(default_factory=list, max_length=50)
    pdb: list[SafeStr] = Field(default_factory=list, max_length=50)


_BAD_SEGMENT = {"", ".", ".."}


def check_relative_path(path: str) -> str:
    """A manifest path must stay inside its dataset: relative, no '..', no odd bytes."""
    if not path or len(path) > 1024:
        raise ValueError("a file path must be 1 to 1024 characters")
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path) or "\\" in path:
        raise ValueError(f"{path!r} is not a relative POSIX path")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or 0xD800 <= ord(c) <= 0xDFFF for c in path):
        raise ValueError(f"{path!r} contains control characters (C0, DEL or C1) or a lone surrogate")
    if any(seg in _BAD_SEGMENT for seg in path.split("/")):
        raise ValueError(f"{path!r} has an empty, '.' or '..' segment; paths must stay inside the dataset")
    return path


class ManifestFile(BaseModel):
    path: SafeStr
    size: Int64 = Field(ge=0)
    checksum: SafeStr = Field(min_length=1, max_length=200, description="base64 CRC64NVME (S3's form) or hex SHA-256")

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return check_relative_path(v)


class ManifestDigest:
    """``manifest_digest`` computed a file at a time, for manifests too large to hold at once.

    Files must be added in path order (Python's ``str`` order: by code point, which is also
    UTF-8 byte order and PostgreSQL's ``COLLATE "C"``); one out of order or listed twice
    raises ValueError rather than giving a digest that matches nothing."""

    def __init__(self, algorithm: str) -> None:
        self._h = hashlib.sha256(f"cryomesh-manifest-v1 {algorithm}\n".encode())
        self._last: str | None = None
        self.file_count = 0
        self.total_bytes = 0

    def add(self, path: str, size: int, checksum: str) -> None:
        if self._last is not None and path <= self._last:
            raise ValueError(f"{path!r} comes after {self._last!r}: files must be added once each, in path order")
        self._last = path
        self._h.update(f"{path}\t{size}\t{checksum}\n".encode())
        self.file_count += 1
        self.total_bytes += size

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def manifest_digest(algorithm: str, files: list[ManifestFile]) -> str:
    """SHA-256 over the sorted manifest lines: one value that names exactly this content."""
    digest = ManifestDigest(algorithm)
    for f in sorted(files, key=lambda f: f.path):
        digest.add(f.path, f.size, f.checksum)
    return digest.hexdigest()


class Manifest(BaseModel):
    algorithm: ChecksumAlgorithm = ChecksumAlgorithm.CRC64NVME
    files: list[ManifestFile] = Field(min_length=1, max_length=1_000_000)
    digest: SafeStr = Field(description="manifest_digest(algorithm, files); checked by the hub")
    # (One request holds at most 1,000,000 files; larger manifests are registered in pages:
    # DatasetUploadCreate, ManifestPageIn.)

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        paths = [f.path for f in self.files]
        if len(set(paths)) != len(paths):
            raise ValueError("a path is listed twice in the manifest")
        if manifest_digest(self.algorithm.value, self.files) != self.digest:
            raise ValueError("the manifest digest does not match its files")
        return self

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


class DatasetMetadata(StrictModel):
    title: SafeStr = Field(min_length=1, max_length=500)
    description: SafeStr | None = Field(default=None, max_length=20_000)
    experiment_type: ExperimentType = ExperimentType.SPA
    sample: Sample | None = None
    instrument: Instrument = Field(default_factory=Instrument)
    detector: Detector = Field(default_factory=Detector)
    acquisition: Acquisition = Field(default_factory=Acquisition)
    image_sets: list[ImageSet] = Field(default_factory=list, max_length=100)
    owner_group: SafeStr | None = Field(default=None, max_length=200, description="The lab or group at the owner site")
    visibility: Visibility = Visibility.PRIVATE
    embargo_until: date | None = None
    cross_references: CrossReferences = Field(default_factory=CrossReferences)


class DatasetCreate(DatasetMetadata):
    """Sent by a site's agent: the owner site is the agent's own; the first replica is there."""

    manifest: Manifest
    location: SafeStr = Field(min_length=1, max_length=2000, description="Where the replica lives at the site")
    source_datasets: list[SafeStr] = Field(
        default_factory=list, max_length=100, description="Provenance: datasets it derives from"
    )
    source_job: SafeStr | None = Field(default=None, max_length=40, description="Provenance: the job that produced it")


#: Most files in one page of a paged upload or a paged manifest.
MAX_PAGE_FILES = 10_000
#: Most files in one manifest (one-shot or paged).
MAX_MANIFEST_FILES = 10_000_000
#: Digests are lowercase hex SHA-256.
Digest = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="manifest_digest over every file, hex SHA-256")]


class DatasetUploadCreate(DatasetMetadata):
    """Starts a paged registration (a site's agent): everything ``DatasetCreate`` says except
    the files, which follow in pages; the hub checks the count and bytes announced here, and
    the digest given at completion, against the files it received."""

    location: SafeStr = Field(min_length=1, max_length=2000, description="Where the replica lives at the site")
    source_datasets: list[SafeStr] = Field(
        default_factory=list, max_length=100, description="Provenance: datasets it derives from"
    )
    source_job: SafeStr | None = Field(default=None, max_length=40, description="Provenance: the job that produced it")
    algorithm: ChecksumAlgorithm = ChecksumAlgorithm.CRC64NVME
    file_count: Int64 = Field(ge=1, le=MAX_MANIFEST_FILES, description="How many files the pages will list")
    total_bytes: Int64 = Field(ge=0, description="The sum of their sizes")


class ManifestPageIn(StrictModel):
    """One page of a paged upload. Pages are numbered from 0 and sent in order; sending a page
    again (say, after a lost answer) is accepted if it lists the same files."""

    page: Int64 = Field(ge=0, le=MAX_MANIFEST_FILES, description="This page's number, from 0")
    files: list[ManifestFile] = Field(min_length=1, max_length=MAX_PAGE_FILES)

    @model_validator(mode="after")
    def _distinct(self) -> ManifestPageIn:
        seen: set[str] = set()
        for f in self.files:
            if f.path in seen:
                raise ValueError(f"{f.path!r} is listed twice in the page")
            seen.add(f.path)
        return self


class UploadComplete(StrictModel):
    digest: Digest


class DatasetUploadPublic(BaseModel):
    """Where a paged upload stands; ``next_page`` is the page to send next (resume there)."""

    id: str
    location: str
    algorithm: ChecksumAlgorithm
    file_count: int
    total_bytes: int
    received_files: int
    received_bytes: int
    next_page: int
    max_page_files: int = Field(description="Most files a page may list")
    max_page_bytes: int = Field(description="Largest page body the hub accepts, in bytes")
    expires_at: datetime = Field(description="Discarded if no page arrives before then (each page extends it)")
    created_at: datetime


class ManifestFilesPage(BaseModel):
    """A slice of a dataset's manifest in path order; pass ``next_after`` as ``after`` for the next."""

    dataset: str
    algorithm: ChecksumAlgorithm
    digest: str
    file_count: int
    total_bytes: int
    files: list[ManifestFile]
    next_after: str | None = Field(description="The last path of this page, or null at the end")


class ReplicaPublic(BaseModel):
    site: str
    state: ReplicaState
    location: str
    verified_at: datetime | None
    created_at: datetime
    state_reason: str | None = None


class ReplicaWork(BaseModel):
    """A replica at the agent's site, with what an audit needs to check it."""

    dataset: str
    state: ReplicaState
    location: str
    verified_at: datetime | None
    manifest: Manifest


class AuditReport(BaseModel):
    """What an agent found comparing a replica on storage with the catalog."""

    files_checked: Int64 = Field(ge=0, description="Files whose presence and size were checked (all of them)")
    checksums_verified: Int64 = Field(ge=0, description="Files in the sample whose checksum was recomputed")
    missing: list[SafeStr] = Field(default_factory=list, max_length=10_000)
    unexpected: list[SafeStr] = Field(default_factory=list, max_length=10_000)
    wrong_size: list[SafeStr] = Field(default_factory=list, max_length=10_000)
    corrupt: list[SafeStr] = Field(default_factory=list, max_length=10_000)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_size or self.corrupt)

    def summary(self) -> str:
        parts = [
            f"{len(v)} {k.replace('_', ' ')} (e.g. {v[0]})"
            for k, v in (("missing", self.missing), ("unexpected", self.unexpected), ("wrong_size", self.wrong_size),
                         ("corrupt", self.corrupt))
            if v
        ]  # fmt: skip
        return "; ".join(parts) if parts else "all files present, sizes and sampled checksums match"


class DatasetPublic(DatasetMetadata):
    model_config = ConfigDict(extra="ignore")  # a response: readers tolerate a newer hub's fields

    id: str
    owner_site: str
    institution: str
    file_count: int
    total_bytes: int
    checksum_algorithm: ChecksumAlgorithm
    manifest_digest: str
    replicas: list[ReplicaPublic]
    source_datasets: list[str]
    source_job: str | None
    owner: str | None = Field(default=None, description="A job's output: the person or service that submitted the job")
    registered_by: str
    created_at: datetime


DatasetPage = Page[DatasetPublic]


class DatasetUpdate(BaseModel):
    """What the owner site's admin (or a network admin) may change after registration."""

    visibility: Visibility | None = Field(
        default=None, description="private: the owner's institution only; network: everyone signed in; public: everyone"
    )


class ShareState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    REVOKED = "revoked"
    EXPIRED = "expired"


class ShareSide(StrEnum):
    """The two sites that must consent to a copy: the one that owns the data and the one that receives it."""

    OWNER = "owner"
    RECEIVER = "receiver"


class ShareConsent(StrEnum):
    """One side's decision on a share request."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"


class ShareRequestCreate(StrictModel):
    dest_site: SafeStr = Field(description="The site the dataset should be copied to")
    purpose: SafeStr = Field(min_length=3, max_length=2000)
    lifetime_days: Int64 = Field(default=90, ge=1, le=3650, description="How long the copy may be kept once approved")


class ShareDecision(StrictModel):
    reason: SafeStr | None = Field(default=None, max_length=2000)


class ShareEvent(BaseModel):
    at: datetime
    actor: str
    action: str
    reason: str | None


class ShareRequestPublic(BaseModel):
    id: str
    dataset: str
    dataset_title: str
    owner_site: str
    dest_site: str
    requested_by: str
    requester_institution: str | None
    purpose: str
    lifetime_days: int
    job: str | None = Field(default=None, description="The job whose input this copy is, for a copy the broker asked for")
    state: ShareState = Field(description="approved only once both the owner and the receiving site consented")
    owner_decision: ShareConsent
    auto_approved: bool = Field(description="The owner's decision was its share policy's")
    decided_by: str | None = Field(description="Who decided for the owner site")
    decided_at: datetime | None
    decision_reason: str | None
    receiver_decision: ShareConsent
    receiver_auto_approved: bool = Field(description="The receiving site's consent was its share policy's")
    receiver_decided_by: str | None = Field(description="Who decided for the receiving site")
    receiver_decided_at: datetime | None
    receiver_decision_reason: str | None
    expires_at: datetime | None
    created_at: datetime
    events: list[ShareEvent]


class SharePolicy(StrictModel):
    """When the site decides on share requests without a person deciding: as the owner of the
    data (``auto_approve_*``), as the site receiving a copy (``accept_*``), and as a holder of
    copies of others' data (``serve_public_copies``)."""

    auto_approve_public: bool = Field(default=False, description="Owner: approve requests for this site's public datasets")
    auto_approve_institutions: list[SafeStr] = Field(
        default_factory=list, max_length=1000, description="Approve requests from these institutions"
    )
    accept_own_institution: bool = Field(
        default=True, description="Receiving: accept copies to this site asked for by people of the site's own institution"
    )
    accept_institutions: list[Annotated[SafeStr, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=1000, description="Receiving: accept copies asked for by people of these institutions"
    )
    accept_job_inputs: bool = Field(
        default=True,
        description="Receiving: accept copies of the inputs of jobs the broker placed at this site (which its lending "
        "policy admits); if false, each such copy waits for the site's admin",
    )
    serve_public_copies: bool = Field(
        default=False,
        description="Holder: public datasets this site holds (owned by other sites, not under embargo) may be copied "
        "from here to other sites without a person deciding; if false, this site never serves copies of others' data",
    )
