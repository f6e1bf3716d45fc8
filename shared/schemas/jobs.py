"""Jobs: cryo-EM job specs, GA4GH TES states, placements, reports, usage."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from pydantic import BaseModel, Field, FiniteFloat, field_validator, model_validator

from shared.schemas.common import Int64, Page, SafeStr, StrictModel
from shared.schemas.datasets import ExperimentType, Visibility, check_relative_path
from shared.schemas.presign import PresignRequest
from shared.schemas.relion import RelionRun
from shared.schemas.tes import TesResult, TesWork


class JobKind(StrEnum):
    RELION_MOTIONCORR = "relion.motioncorr"
    RELION_CTFFIND = "relion.ctffind"
    RELION_AUTOPICK = "relion.autopick"
    RELION_EXTRACT = "relion.extract"
    RELION_CLASS2D = "relion.class2d"
    RELION_CLASS3D = "relion.class3d"
    RELION_REFINE3D = "relion.refine3d"
    RELION_CTFREFINE = "relion.ctfrefine"
    RELION_POLISH = "relion.polish"
    CRYOSPARC_JOB = "cryosparc.job"
    MOTIONCOR2 = "motioncor2"
    GENERIC_COMMAND = "generic.command"


#: The package each kind needs at the site (checked against the site's software list).
KIND_SOFTWARE: dict[JobKind, str | None] = {
    **{k: "relion" for k in JobKind if k.value.startswith("relion.")},
    JobKind.CRYOSPARC_JOB: "cryosparc",
    JobKind.MOTIONCOR2: "motioncor2",
    JobKind.GENERIC_COMMAND: None,
}


class JobState(StrEnum):
    """GA4GH TES task states."""

    QUEUED = "QUEUED"
    INITIALIZING = "INITIALIZING"
    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    EXECUTOR_ERROR = "EXECUTOR_ERROR"
    SYSTEM_ERROR = "SYSTEM_ERROR"
    CANCELING = "CANCELING"
    CANCELED = "CANCELED"
    PREEMPTED = "PREEMPTED"

    @property
    def final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({JobState.COMPLETE, JobState.EXECUTOR_ERROR, JobState.SYSTEM_ERROR, JobState.CANCELED})

_ARCH = re.compile(r"^\d{1,2}\.\d$")


class Resources(StrictModel):
    cpus: Int64 = Field(default=1, ge=1, le=100_000, description="CPU cores in all")
    gpus: Int64 = Field(default=0, ge=0, le=1024)
    gpu_model: SafeStr | None = Field(default=None, max_length=100, description="e.g. 'a100'; lower case")
    min_cuda_arch: SafeStr | None = Field(default=None, description="Minimum CUDA compute capability, e.g. '8.0'")
    memory_gb: FiniteFloat = Field(default=4, gt=0, le=100_000)
    scratch_gb: FiniteFloat = Field(default=0, ge=0, le=1_000_000)
    walltime_s: Int64 = Field(default=3600, ge=1, le=30 * 86_400)
    mpi_ranks: Int64 = Field(default=1, ge=1, le=100_000)
    threads_per_rank: Int64 = Field(default=1, ge=1, le=1024)

    @field_validator("gpu_model")
    @classmethod
    def _lower(cls, v: str | None) -> str | None:
        return v.strip().lower() if v else v

    @field_validator("min_cuda_arch")
    @classmethod
    def _arch(cls, v: str | None) -> str | None:
        if v is not None and not _ARCH.match(v):
            raise ValueError("min_cuda_arch must look like '8.0'")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Resources:
        if (self.gpu_model or self.min_cuda_arch) and self.gpus == 0:
            raise ValueError("gpu_model and min_cuda_arch need gpus > 0")
        if self.mpi_ranks * self.threads_per_rank > self.cpus:
            raise ValueError(
                f"mpi_ranks x threads_per_rank ({self.mpi_ranks} x {self.threads_per_rank}) exceeds cpus ({self.cpus})"
            )
        return self


class SoftwareRequirement(StrictModel):
    name: SafeStr = Field(min_length=1, max_length=100)
    version: SafeStr = Field(default="", max_length=100, description="A version range, e.g. '>=5.0,<6'")
    cuda_arch: SafeStr | None = Field(default=None, description="Build for this CUDA architecture, e.g. '8.6'")

    @field_validator("version")
    @classmethod
    def _spec(cls, v: str) -> str:
        try:
            SpecifierSet(v)
        except InvalidSpecifier as exc:
            raise ValueError(f"{v!r} is not a version range (e.g. '>=5.0,<6')") from exc
        return v


_DATASET_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")


class DatasetRef(StrictModel):
    """An input dataset: the job runs where it is AVAILABLE, or waits while it is copied there."""

    dataset: SafeStr = Field(description="Dataset id, e.g. 'ds-1234' or 'EMPIAR-10028'")
    paths: list[SafeStr] = Field(default_factory=list, max_length=1000, description="Files or globs within it; all if empty")

    @field_validator("dataset")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _DATASET_REF.match(v):
            raise ValueError("dataset must be an id like 'ds-1234' or 'EMPIAR-10028'")
        return v

    @field_validator("paths")
    @classmethod
    def _relative(cls, v: list[str]) -> list[str]:
        for p in v:
            if p.startswith("/") or ".." in p.split("/"):
                raise ValueError(f"paths must be relative and stay inside the dataset: {p!r}")
        return v


class PlacementConstraints(StrictModel):
    allowed_sites: list[SafeStr] | None = Field(default=None, max_length=1000, description="Only these sites")
    excluded_sites: list[SafeStr] = Field(default_factory=list, max_length=1000)
    countries: list[SafeStr] | None = Field(
        default=None, max_length=300, description="Data residency: only sites in these countries (ISO 3166-1 alpha-2)"
    )
    preemptible: bool = Field(
        default=True,
        description="May run on spot partitions (cheaper; a node may be taken away mid-run and the job requeued)",
    )

    @field_validator("countries")
    @classmethod
    def _iso(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        out = [c.upper() for c in v]
        bad = [c for c in out if not re.fullmatch(r"[A-Z]{2}", c)]
        if bad:
            raise ValueError(f"not ISO country codes: {', '.join(bad)}")
        return out


class OutputDataset(StrictModel):
    """Register what the job leaves in ``$CRYOMESH_OUTPUT_DIR`` as a dataset of the running site,
    with provenance: its input datasets and this job."""

    title: SafeStr = Field(min_length=1, max_length=500)
    description: SafeStr | None = Field(default=None, max_length=20_000)
    experiment_type: ExperimentType = ExperimentType.OTHER
    visibility: Visibility = Visibility.PRIVATE
    path: SafeStr = Field(default="output", description="Directory inside the job's work dir")

    @field_validator("path")
    @classmethod
    def _inside(cls, v: str) -> str:
        return check_relative_path(v)


class Workload(StrictModel):
    """What the broker reads to estimate a job's run time. Filled at submission from the input
    datasets' metadata (particle stacks: particle count, box size, pixel size) where left out."""

    particles: Int64 | None = Field(default=None, ge=1, le=10**9, description="Particles the job processes")
    box_px: Int64 | None = Field(default=None, ge=8, le=4096, description="Particle box size in pixels")
    pixel_size_a: FiniteFloat | None = Field(default=None, gt=0, le=100, description="Pixel size in Å")


class JobSpec(StrictModel):
    name: SafeStr = Field(min_length=1, max_length=200)
    kind: JobKind
    command: list[SafeStr] | None = Field(default=None, min_length=1, max_length=1000, description="argv; no shell")
    parameters: dict[SafeStr, SafeStr | bool | Int64 | FiniteFloat] = Field(
        default_factory=dict, max_length=200, description="Kind parameters, passed as --key value"
    )
    resources: Resources = Field(default_factory=Resources)
    software: list[SoftwareRequirement] = Field(default_factory=list, max_length=20)
    inputs: list[DatasetRef] = Field(default_factory=list, max_length=100)
    outputs: OutputDataset | None = Field(default=None, description="Register the job's output as a derived dataset")
    relion: RelionRun | None = Field(
        default=None, description="RELION commands from a researcher's project (`cryomesh relion submit`); replaces command"
    )
    placement: PlacementConstraints = Field(default_factory=PlacementConstraints)
    priority: Int64 = Field(default=0, ge=-100, le=100, description="Higher runs first")
    max_cost: FiniteFloat | None = Field(
        default=None, ge=0, le=1e9, description="Run only where the job's estimated cost stays within this (network currency)"
    )
    deadline: datetime | None = Field(default=None, description="Run only where the job is expected to finish by then")
    workload: Workload = Field(default_factory=Workload, description="Sizes for run-time estimates")
    tags: list[SafeStr] = Field(default_factory=list, max_length=20)
    idempotency_key: SafeStr | None = Field(default=None, min_length=1, max_length=200)
    tes: TesWork | None = Field(default=None, description="A GA4GH TES task's executors, inputs and outputs (hub/ga4gh)")

    @model_validator(mode="after")
    def _runnable(self) -> JobSpec:
        if self.kind is JobKind.GENERIC_COMMAND and not self.command and self.tes is None:
            raise ValueError("a generic.command job needs a command (argv)")
        if self.tes is not None and (self.command or self.parameters):
            raise ValueError("a TES task runs its executors: it has no command or parameters of its own")
        if self.relion is not None and (self.command or self.parameters or not self.kind.value.startswith("relion.")):
            raise ValueError("a job with relion commands is of a relion.* kind and has no command or parameters")
        if self.command is not None and any(not isinstance(a, str) or "\x00" in a for a in self.command):
            raise ValueError("command arguments must be strings without NUL bytes")
        for key, value in self.parameters.items():
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,63}", key):
                raise ValueError(f"parameter names are words like 'i' or 'nr_iter': {key!r}")
            if not isinstance(value, str | int | float | bool):
                raise ValueError(f"parameter {key} must be a string, number or boolean")
        if self.deadline is not None and self.deadline.tzinfo is None:
            raise ValueError("deadline needs a time zone, e.g. 2027-01-31T18:00:00Z")
        if len(set(self.tags)) != len(self.tags) or any(len(t) > 50 for t in self.tags):
            raise ValueError("tags must be unique and at most 50 characters")
        return self


class JobPublic(BaseModel):
    id: str
    name: str
    kind: JobKind
    state: JobState
    site: str | None = Field(description="Where the current attempt is placed or runs")
    attempt: int = Field(description="Number of the current attempt (0: never placed)")
    owner: str
    institution: str
    priority: int
    tags: list[str]
    spec: JobSpec
    state_reason: str | None
    exit_code: int | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    warnings: list[str] = Field(
        default_factory=list, description="Said once, when the job is accepted (e.g. its institution's budget nearly spent)"
    )


JobPage = Page[JobPublic]


class SiteVerdict(BaseModel):
    site: str
    eligible: bool
    reasons: list[str] = Field(description="Why the site was ruled out, or what counted for it")
    score: float | None = None
    score_parts: dict[str, float] = Field(default_factory=dict)
    partition: str | None = Field(default=None, description="The partition of the site the job would run on (eligible sites)")


class RuntimeEstimate(BaseModel):
    p10: float = Field(description="Seconds: 1 run in 10 is shorter")
    p50: float = Field(description="Seconds: the median")
    p90: float = Field(description="Seconds: 9 runs in 10 are shorter")
    runs: int = Field(description="Finished runs of this kind at this site the estimate learned from")
    basis: str = Field(description="What the estimate was built from")


class SiteEstimate(BaseModel):
    """What the job would take at one site, without submitting it."""

    site: str
    eligible: bool = Field(description="Whether the broker could place it there now")
    reasons: list[str] = Field(description="Why the site is ruled out, or what counted for it")
    runtime: RuntimeEstimate | None = Field(description="None where the site could never run it")
    cost: float | None = Field(description="At the run time's p50, in the network's currency; None where it could never run")
    startup_s: float = Field(
        default=0, description="Start-up of a powered-down cloud node, charged and waited for when the job needs one"
    )


class JobEstimate(BaseModel):
    currency: str
    spec: JobSpec = Field(description="The spec as the broker reads it (inputs resolved, workload filled)")
    sites: list[SiteEstimate] = Field(description="Eligible sites first, soonest finish first")


class PlacementDecision(BaseModel):
    decided_at: datetime
    attempt: int
    outcome: str = Field(description="'placed', 'waiting' (no site can take it now) or 'impossible'")
    site: str | None
    summary: str
    verdicts: list[SiteVerdict]


class JobPlacement(BaseModel):
    job: str
    state: JobState
    site: str | None
    explanation: str = Field(description="Why the job is where it is, or why it is still queued")
    latest: PlacementDecision | None
    history: list[PlacementDecision]


class Assignment(BaseModel):
    """What an agent receives from the long-poll: an attempt to claim, or one to cancel."""

    attempt_id: str
    job_id: str
    attempt: int
    action: str = Field(description="'run' or 'cancel'")
    spec: JobSpec
    lease_s: float
    institution: str
    inputs: dict[str, str] = Field(default_factory=dict, description="Input dataset id -> its location at this site")
    partition: str | None = Field(
        default=None,
        description="The partition the broker chose, one the agent reported: submit there (sbatch -p). None: the "
        "agent's own default (an older hub, or a site whose scheduler does not name the registry's partitions)",
    )


class AssignmentBatch(BaseModel):
    assignments: list[Assignment]
    presign: list[PresignRequest] = Field(
        default_factory=list, description="S3 objects to sign GET URLs for (DRS access; shared.schemas.presign)"
    )


class AttemptReport(BaseModel):
    """An agent's report on one attempt; ``seq`` increases with each report of the attempt."""

    seq: Int64 = Field(ge=1)
    state: JobState
    local_id: SafeStr | None = Field(default=None, max_length=100, description="e.g. the Slurm job id")
    exit_code: Int64 | None = None
    reason: SafeStr | None = Field(default=None, max_length=2000)
    stdout_tail: SafeStr | None = Field(default=None, max_length=65_536)
    stderr_tail: SafeStr | None = Field(default=None, max_length=65_536)
    started_at: datetime | None = None
    ended_at: datetime | None = None
    tes: TesResult | None = Field(default=None, description="TES tasks: executors' logs and outputs, with the end")
    node_started: bool | None = Field(
        default=None,
        description="Whether a node had to be started for the job (a powered-down cloud node): the ledger charges "
        "the node's start-up only then. None: not known (yet)",
    )

    @model_validator(mode="after")
    def _reportable(self) -> AttemptReport:
        if self.state in (JobState.QUEUED, JobState.CANCELING):
            raise ValueError(f"an agent cannot report {self.state.value}")
        return self


class ReportAck(BaseModel):
    attempt_id: str
    seq: int
    job_state: JobState
    duplicate: bool = Field(description="True when this seq was already applied (nothing changed)")
    cancel: bool = Field(description="True when the job should be stopped")


class Refusal(BaseModel):
    reason: SafeStr = Field(min_length=1, max_length=2000)


class JobLogs(BaseModel):
    job: str
    attempt: int
    site: str | None
    stdout_tail: str
    stderr_tail: str


class UsageRow(BaseModel):
    key: str = Field(description="The institution or site the row is about")
    attempts: int
    wall_hours: float
    cpu_hours: float
    gpu_hours: dict[str, float] = Field(description="GPU model -> GPU-hours")
    cost: float = Field(default=0.0, description="What it cost, in the report's currency")


class InstitutionBalance(BaseModel):
    """What an institution lent to others and borrowed from others. A job an institution's own
    site ran for its own people is own use: neither lent nor borrowed."""

    institution: str
    lent_cpu_hours: float = Field(description="CPU-hours its sites gave to other institutions' jobs")
    lent_gpu_hours: float = Field(description="GPU-hours its sites gave to other institutions' jobs")
    borrowed_cpu_hours: float = Field(description="CPU-hours its jobs used at other institutions' sites")
    borrowed_gpu_hours: float = Field(description="GPU-hours its jobs used at other institutions' sites")
    own_cpu_hours: float = Field(description="CPU-hours its jobs used at its own sites")
    own_gpu_hours: float = Field(description="GPU-hours its jobs used at its own sites")


class UsageReport(BaseModel):
    since: datetime
    until: datetime
    currency: str = Field(default="USD", description="ISO 4217 code of every cost in the report")
    consumed_by_institution: list[UsageRow] = Field(description="Everything each institution's jobs used, own use included")
    provided_by_site: list[UsageRow] = Field(description="Everything each site ran, its own institution's jobs included")
    balance_by_institution: list[InstitutionBalance] = Field(
        description="Lent, borrowed and own use per institution (network admins: all; others: their own institution)"
    )
