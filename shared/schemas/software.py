"""Software an agent measured at its site: what it found installed, not what someone wrote.

Sent in the heartbeat (``Heartbeat.software``) when it changes; the hub keeps it beside
the software the site's admin declared, each entry marked with where it came from.
Tolerant like the rest of the heartbeat: a newer agent may report more about a build.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from shared.schemas.common import SafeStr

#: Container runtimes an agent looks for (``site_agent.containers``), reported as software by these names.
CONTAINER_RUNTIMES = ("apptainer", "singularity", "podman", "docker")
#: A site lists the images it runs as software ``image:<name or shell pattern>``; a TES task needs ``image:<image>``.
IMAGE_PREFIX = "image:"


class MeasuredSoftware(BaseModel):
    name: SafeStr = Field(min_length=1, max_length=100, description="Package, lower case, e.g. 'relion'")
    version: SafeStr = Field(min_length=1, max_length=50, description="As the program printed it, e.g. '3.1.3'")
    build: SafeStr = Field(default="cpu", max_length=20, description="'cpu', or 'cuda' for a GPU build")
    cuda_archs: list[SafeStr] = Field(
        default_factory=list, max_length=32, description="CUDA compute capabilities compiled in, e.g. ['8.0', '8.6']; "
        "empty for a CPU build, or a GPU build whose architectures could not be read"
    )  # fmt: skip
    mpi: bool = Field(default=False, description="An MPI build (e.g. relion_refine_mpi) and an MPI launcher were found")
    path: SafeStr = Field(max_length=1000, description="Directory of the programs at the site")
    notes: SafeStr | None = Field(default=None, max_length=500, description="How it was measured, what is unknown")
