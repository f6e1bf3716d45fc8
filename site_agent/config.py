"""Agent settings: a ``site.toml`` file, overridable by ``CRYOMESH_AGENT_*`` variables.

[agent]
hub_url = "https://hub.example.org"
state_dir = "/var/lib/cryomesh-agent"   # credentials and private key (0700)
heartbeat_interval_s = 15

[discovery]
backend = "slurm"          # or "local"
partitions = ["gpu", "cpu"]  # slurm: which partitions to report (default: all)

[[storage]]
name = "scratch"
path = "/data/cryomesh"

[software]
relion_dirs = ["/opt/relion-5.0-cuda/bin"]  # RELION installs beside the one on PATH

[policy]
generic_commands = "listed"      # RELION queue jobs may also run these (default "none")
generic_programs = ["ctffind4"]

A key that is not a setting (a typo) is refused with the key probably meant.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import tomllib
from pathlib import Path
from typing import Annotated, Literal

import platformdirs
from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from shared.schemas.common import StrictModel
from shared.schemas.relion import PROGRAM_NAME, RELION_PROGRAM
from shared.schemas.tes import check_bucket
from shared.validation import describe_errors
from site_agent import containers


class ConfigError(ValueError):
    """A site.toml the agent cannot use, said in one line that names the file and the key."""


class AgentSection(StrictModel):
    hub_url: str | None = Field(default=None, description="Hub URL; default: the one saved at enrollment")
    state_dir: Path = Field(
        default_factory=lambda: Path(platformdirs.user_state_dir("cryomesh-agent", appauthor=False)),
        description="Holds credentials.json and the private key; created 0700",
    )
    heartbeat_interval_s: float = Field(default=15, gt=0, le=3600)
    request_timeout_s: float = Field(default=10, gt=0)
    max_backoff_s: float = Field(default=60, gt=0, description="Longest wait between retries while the hub is away")
    metrics_address: str | None = Field(
        default=None, pattern=r"^[^:]*:\d+$", description="host:port for Prometheus metrics (default: none served)"
    )


class DeclaredPartition(StrictModel):
    """A partition whose nodes exist only while work runs (a cloud queue scaling from zero)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    max_nodes: int = Field(ge=0)
    cpus_per_node: int = Field(ge=1)
    memory_gb_per_node: float = Field(ge=0)
    gpu_model: str | None = None
    gpus_per_node: int = Field(default=0, ge=0)


class DiscoverySection(StrictModel):
    backend: Literal["local", "slurm", "declared"] = "local"
    declared: list[DeclaredPartition] = Field(
        default_factory=list, description="declared: the partitions and their scaling limits"
    )
    partition: str = Field(default="local", description="local: the name the machine is reported under")
    partitions: list[str] | None = Field(default=None, description="slurm: partitions to report (default all)")
    spot_partitions: list[str] | None = Field(
        default=None,
        description="slurm: partitions of spot capacity, whose nodes may be taken away mid-job "
        "(default: those named '...-spot', as GoToCloud names them)",
    )
    slurm_conf: Path | None = Field(default=None, description="slurm: SLURM_CONF for the Slurm commands")
    slurm_bin_dir: Path | None = Field(default=None, description="slurm: where sinfo/scontrol/squeue live")
    gpu: Literal["auto", "nvml", "nvidia-smi", "none"] = Field(default="auto", description="local: how to find GPUs")


class ExecutorSection(StrictModel):
    type: Literal["local", "slurm"] = Field(default="local", description="Where jobs run")
    workdir: Path | None = Field(default=None, description="Base directory of job work dirs (default: <state_dir>/work)")
    max_concurrent: int = Field(default=4, ge=1, description="local: jobs run at once on this machine")
    partition: str | None = Field(default=None, description="slurm: partition for CPU jobs (default: the cluster's)")
    gpu_partition: str | None = Field(default=None, description="slurm: partition for GPU jobs")
    slurm_conf: Path | None = Field(default=None, description="slurm: SLURM_CONF for sbatch/squeue/scancel")
    slurm_bin_dir: Path | None = None
    poll_interval_s: float = Field(default=1.0, gt=0, description="How often running jobs are checked")
    cancel_grace_s: float = Field(default=10, ge=0, description="local: SIGTERM, then SIGKILL after this long")


class PolicySection(StrictModel):
    """The site's own last word: assignments outside these limits are refused with a reason."""

    allowed_kinds: list[str] | None = None
    allowed_institutions: list[str] | None = None
    max_walltime_s: int | None = Field(default=None, ge=1)
    max_cpus: int | None = Field(default=None, ge=1)
    max_gpus: int | None = Field(default=None, ge=0)
    generic_commands: Literal["none", "listed", "any"] = Field(
        default="none",
        description="RELION queue jobs from other sites' projects: 'none' runs only RELION programs; 'listed' also "
        "the programs of generic_programs; 'any' any program on this agent's PATH (a shell included: only for "
        "partners you trust with a login here)",
    )
    generic_programs: list[str] = Field(
        default_factory=list, max_length=200, description="With generic_commands = 'listed': the program names allowed"
    )

    @model_validator(mode="after")
    def _generic(self) -> PolicySection:
        if self.generic_commands == "listed" and not self.generic_programs:
            raise ValueError("generic_commands = 'listed' needs the programs in generic_programs")
        if self.generic_programs and self.generic_commands != "listed":
            raise ValueError(f"generic_programs is read only with generic_commands = 'listed' (it is {self.generic_commands!r})")
        bad = [p for p in self.generic_programs if not PROGRAM_NAME.match(p) or RELION_PROGRAM.match(p)]
        if bad:
            raise ValueError(f"generic_programs: {', '.join(map(repr, bad))}: a program name without a path, "
                             "not a RELION program (those always run)")  # fmt: skip
        return self


class TransfersSection(StrictModel):
    """How this site moves dataset copies: the exchange store it publishes to, where copies land."""

    exchange: Literal["fs", "s3"] = Field(default="fs", description="fs: a directory the other site can read; s3: a bucket")
    path: Path | None = Field(default=None, description="fs: the exchange directory (default: <state_dir>/exchange)")
    endpoint_url: str | None = Field(default=None, description="s3: endpoint of an S3-compatible store (default: AWS)")
    bucket: str | None = Field(default=None, description="s3: the bucket published copies go to")
    prefix: str = Field(default="cryomesh-exchange", description="s3: key prefix inside the bucket")
    region: str | None = Field(default=None, description="s3: region (default: the AWS configuration's)")
    profile: str | None = Field(default=None, description="s3: AWS profile (default: the usual credential chain)")
    presign_ttl_s: int = Field(default=900, ge=60, le=7 * 86_400, description="s3: life of each presigned GET URL")
    incoming: Path | None = Field(
        default=None, description="Where copies of datasets are written (default: <state_dir>/datasets)"
    )
    part_size_mb: float = Field(
        default=32, gt=0, le=5120, description="Part size; a file up to this size goes as one request; s3: at least 5 MiB"
    )
    concurrency: int = Field(default=8, ge=1, le=256, description="Parts moved at once")
    bandwidth_mb_s: float | None = Field(default=None, gt=0, description="Cap on this agent's transfer rate, MB/s")
    poll_interval_s: float = Field(default=5, gt=0, description="How often the agent asks the hub for transfer work")
    progress_interval_s: float = Field(default=2, gt=0, description="How often progress is reported while moving data")


class AuditSection(StrictModel):
    """Periodic integrity audits of the replicas at this site."""

    enabled: bool = True
    interval_s: float = Field(default=86_400, gt=0, description="Time between audit rounds")
    first_after_s: float = Field(default=300, ge=0, description="Delay before the first round after start")
    sample_fraction: float = Field(default=0.05, ge=0, le=1, description="Share of files whose checksum is recomputed")
    min_sample: int = Field(default=3, ge=0, description="At least this many files are checksummed per replica")


#: An image name or shell pattern; reported to the hub as software 'image:<pattern>' (at most 100 characters;
#: with the RELION builds and the runtimes, the images fit the heartbeat's 200 software entries).
ImagePattern = Annotated[str, Field(min_length=1, max_length=94)]


class TesSection(StrictModel):
    """GA4GH TES tasks: which images run here (in a container runtime, or on the hosts) and
    which directories and buckets tasks may read and write (``site_agent.containers``)."""

    runtime: Literal["auto", "apptainer", "singularity", "podman", "docker", "none"] = Field(
        default="auto",
        description="The container runtime container_images run in: 'auto' the first installed (apptainer, "
        "singularity, podman, docker), or one by name; a runtime named here that is not installed stops the agent",
    )
    container_images: list[ImagePattern] = Field(
        default_factory=list, max_length=80,
        description="Images (shell patterns, e.g. 'docker.io/library/python:3.*') whose executors run in the "
        "container runtime, one container each; checked before host_images",
    )  # fmt: skip
    image_files: dict[str, Path] = Field(
        default_factory=dict,
        description="Image name -> a local file, for sites without registry access: an OCI or docker archive, or "
        "a root file system tarball (podman/docker), a .sif (apptainer/singularity); runs then never pull",
    )
    container_network: bool = Field(default=False, description="Containers may use the network (default: none)")
    _runtime: containers.Runtime | None = PrivateAttr(default=None)
    host_images: list[ImagePattern] = Field(
        default_factory=list, max_length=60,
        description="Images whose tasks run directly on this site's hosts (no container runtime); '*' for any",
    )  # fmt: skip
    exported_dirs: list[Path] = Field(
        default_factory=list, description="Directories file:// inputs may come from and outputs may go to"
    )
    image_env: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Image pattern -> environment variables its executors get on top of the agent's, e.g. a PATH "
        "that starts with the bin directory of the environment that plays the image (first matching pattern wins)",
    )
    isolation: Literal["none", "unshare"] = Field(
        default="none",
        description="'unshare': each executor runs in its own user and mount namespace (unshare -rm, no privileges "
        "needed) where /tmp is the task's own directory, as in a container; 'none': on the host as it is",
    )

    @field_validator("isolation")
    @classmethod
    def _runtime_present(cls, v: str) -> str:
        if v == "unshare" and shutil.which("unshare") is None:
            raise ValueError("isolation 'unshare' needs util-linux's unshare on PATH")
        return v

    s3_buckets: list[str] = Field(
        default_factory=list, max_length=1000,
        description="Buckets s3:// inputs may come from and outputs may go to, reached with [transfers]'s endpoint_url, "
        "region and profile and the agent's AWS credentials; list each in the site description as software 's3:<bucket>'",
    )  # fmt: skip

    @field_validator("s3_buckets")
    @classmethod
    def _buckets(cls, v: list[str]) -> list[str]:
        return [check_bucket(b) for b in v]

    @model_validator(mode="after")
    def _containers(self) -> TesSection:
        if not self.container_images:
            if self.image_files:
                raise ValueError("image_files needs container_images: the images to run in the container runtime")
            if self.runtime in ("auto", "none"):
                return self
        elif self.runtime == "none":
            raise ValueError("container_images need a container runtime (runtime is 'none')")
        stray = [i for i in self.image_files if not any(fnmatch.fnmatchcase(i, p) for p in self.container_images)]
        if stray:
            raise ValueError(f"image_files: {', '.join(stray)} is not in container_images")
        missing = [str(f) for f in self.image_files.values() if not f.is_file()]
        if missing:
            raise ValueError(f"image_files: {', '.join(missing)} is not a file")
        try:
            self._runtime = containers.choose(self.runtime)
        except ValueError as exc:
            what = "no container runtime is installed" if self.runtime == "auto" else f"{self.runtime} cannot be used"
            raise ValueError(f"runtime {self.runtime!r}: {what} ({exc})") from None
        return self

    @property
    def container_runtime(self) -> containers.Runtime | None:
        """The runtime container_images run in (found when the settings were read); None: none is used."""
        return self._runtime


class DrsSection(StrictModel):
    """GA4GH DRS access to this site's replicas in S3: which buckets the agent signs GET URLs for."""

    presign_buckets: list[str] = Field(
        default_factory=list, max_length=1000,
        description="Buckets holding dataset replicas (locations s3://<bucket>/...) whose objects the agent signs "
        "short-lived GET URLs for, when a DRS client who may see the dataset asks the hub; none: no https access",
    )  # fmt: skip
    presign_ttl_s: int = Field(default=300, ge=60, le=3600, description="Longest life of a URL signed for a DRS client")

    @field_validator("presign_buckets")
    @classmethod
    def _buckets(cls, v: list[str]) -> list[str]:
        return [check_bucket(b) for b in v]


class RelionSection(StrictModel):
    """How this site runs RELION jobs sent from other sites' projects (``cryomesh relion submit``).

    Which RELION runs them is not set here: it is the build the agent measured
    (``[software]``) that fits the job, as for every RELION job."""

    bin_dir: Path | None = Field(
        default=None,
        description="Deprecated: list the install in [software] relion_dirs (read as one of them until then)",
    )
    mpirun: str = Field(default="mpirun", description="The MPI launcher for relion_*_mpi programs (run as: mpirun -n N ...)")
    exchanges: list[Path] = Field(
        default_factory=list,
        description="Exchange directories of home sites this site reads project files from and returns results to "
        "(a shared filesystem); a job naming another is refused",
    )
    cache_dir: Path | None = Field(
        default=None,
        description="Project files kept by checksum, so a later job needs no copy (default: <state_dir>/relion-cache)",
    )


class SoftwareSection(StrictModel):
    """Where the agent looks for the software it measures and reports (``site_agent.software``)."""

    probe: bool = Field(default=True, description="Measure installed software and report it with the capacity")
    search_path: bool = Field(default=True, description="Look for RELION on the agent's PATH")
    relion_dirs: list[Path] = Field(
        default_factory=list, max_length=50, description="RELION install dirs (their bin/, or the prefix above it)"
    )
    probe_interval_s: float = Field(default=600, gt=0, description="How often installs are measured again")


class StorageSection(StrictModel):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    path: Path


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CRYOMESH_AGENT_", env_nested_delimiter="__", extra="forbid")

    agent: AgentSection = Field(default_factory=AgentSection)
    discovery: DiscoverySection = Field(default_factory=DiscoverySection)
    storage: list[StorageSection] = Field(default_factory=list)
    executor: ExecutorSection = Field(default_factory=ExecutorSection)
    policy: PolicySection = Field(default_factory=PolicySection)
    transfers: TransfersSection = Field(default_factory=TransfersSection)
    audit: AuditSection = Field(default_factory=AuditSection)
    tes: TesSection = Field(default_factory=TesSection)
    drs: DrsSection = Field(default_factory=DrsSection)
    relion: RelionSection = Field(default_factory=RelionSection)
    software: SoftwareSection = Field(default_factory=SoftwareSection)

    @model_validator(mode="after")
    def _one_place_for_relion(self) -> AgentSettings:
        # [relion] bin_dir was the queue runner's own RELION; the measured builds of
        # [software] are now the one place. An old site.toml keeps working: its bin_dir
        # joins relion_dirs (see deprecations(), which the agent logs at start).
        old = self.relion.bin_dir
        if old is not None and old not in self.software.relion_dirs:
            self.software.relion_dirs.append(old)
        return self

    def deprecations(self) -> list[str]:
        """Settings that still work but will not for long, each said with what replaces it."""
        if self.relion.bin_dir is None:
            return []
        return [
            f'[relion] bin_dir is deprecated and will be removed: write relion_dirs = ["{self.relion.bin_dir}"] in '
            "[software] instead (read that way now); RELION jobs run with the measured build that fits them"
        ]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment variables win over the file, which is passed in as init values.
        return (env_settings, init_settings)


def load_settings(config: Path | None) -> AgentSettings:
    """Read ``config`` (a site.toml); a missing file is an error, not an empty config, and
    an unknown key (a typo) is refused with the key probably meant (:class:`ConfigError`)."""
    if config is None:
        try:
            return AgentSettings()
        except ValidationError as exc:
            raise ConfigError(f"agent settings (CRYOMESH_AGENT_*): {describe_errors(exc, AgentSettings)}") from None
    if not config.is_file():
        raise FileNotFoundError(f"agent config {config} does not exist")
    with config.open("rb") as fh:
        try:
            data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(toml_error(config, exc)) from None
    try:
        return AgentSettings(**data)
    except ValidationError as exc:
        source = str(config)
        if any(k.startswith("CRYOMESH_AGENT_") for k in os.environ):
            source += " (or the CRYOMESH_AGENT_* environment variables)"
        raise ConfigError(f"{source}: {describe_errors(exc, AgentSettings)}") from None


def toml_error(path: Path, exc: tomllib.TOMLDecodeError) -> str:
    """``<path>: line N: <what>``, from tomllib's "<what> (at line N, column C)"."""
    message = str(exc)
    if found := re.fullmatch(r"(?s)(.*) \(at line (\d+), column (\d+)\)", message):
        what, where = found[1], f"line {found[2]}"
    elif found := re.fullmatch(r"(?s)(.*) \(at end of document\)", message):
        what, where = found[1], f"line {len(path.read_bytes().splitlines()) or 1} (end of file)"
    else:
        what, where = message, "syntax error"
    return f"{path}: {where}: {what[:1].lower()}{what[1:]}"
