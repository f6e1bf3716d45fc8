"""A TES task as a cryomesh job spec: resources, zones, backend parameters, images, inputs.

What TES lacks (GPUs, walltime, cryo-EM kind, software) comes in ``backend_parameters``;
``BACKEND_PARAMETERS`` is the list service-info publishes. An unknown key is refused (400)
when the client set ``backend_parameters_strict``, else it becomes a warning in the task's
``system_logs``. A malformed value is always refused: a wrong walltime must not run as the
default.

Images: a site runs the images of its ``image:<name or pattern>`` software entries. Its
agent reports them (measured software: version the container runtime, e.g. ``podman``, for
its ``[tes] container_images``, ``host`` for its ``host_images``), with the container
runtimes it found; an admin may also declare them in the site's description. The broker
matches a task's ``image:<image>`` against the patterns and rules out the other sites, and a
task no site can run is refused with each site's verdict (which names its runtimes).

New datasets: an output whose URL is ``drs://<this hub's host>/new/<name>`` becomes a dataset
at the site the task ran at, named ``<name>``, owned by the task's submitter and institution
(private until the site's admin shares it); the task's logs then name its files' drs:// URIs.

S3: a site lists the buckets its agent reaches (with the site's S3 settings) as software
named ``s3:<bucket>``. A task's ``s3://`` inputs and outputs require those entries, so the
broker places it only where every bucket it names is reachable; a bucket no site lists is
refused at once with 400 naming the URL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from pydantic import ValidationError
from sqlmodel import Session, col, select

from hub.auth.principal import Principal
from hub.datasets.service import get_visible as get_visible_dataset
from hub.errors import BadRequest, NotFound
from hub.ga4gh.drs import find_path
from hub.sites.models import Site, SoftwareRow
from shared.schemas.jobs import DatasetRef, JobKind, JobSpec, PlacementConstraints, Resources, SoftwareRequirement
from shared.schemas.software import IMAGE_PREFIX
from shared.schemas.tes import TesTaskCreate, TesWork, TesWorkInput, new_dataset_name, s3_location
from shared.validation import describe_errors

#: backend_parameters cryomesh reads: key -> what it means (published in service-info).
BACKEND_PARAMETERS: dict[str, str] = {
    "gpus": "GPUs per task (integer)",
    "gpu_model": "GPU model, e.g. 'a100' (needs gpus)",
    "min_cuda_arch": "minimum CUDA compute capability, e.g. '8.0' (needs gpus)",
    "walltime_s": "longest run time in seconds (default 3600)",
    "kind": "cryo-EM job kind, e.g. 'relion.class2d' (default 'generic.command'); site policies on kinds apply",
    "software": "required packages, ';'-separated, each a name and an optional version range: 'relion>=5.0;ctffind'",
    "priority": "-100..100, higher runs first",
    "exclude_sites": "','-separated sites never to use",
}
S3_PREFIX = "s3:"
_SOFTWARE_ITEM = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9_.+-]{0,99})\s*([<>=!~].*)?$")


@dataclass
class Mapped:
    spec: JobSpec
    warnings: list[str] = field(default_factory=list)


def _int(key: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f"backend_parameters.{key}: {value!r} is not an integer") from None


def _software(value: str) -> list[SoftwareRequirement]:
    out = []
    for item in filter(None, (s.strip() for s in value.split(";"))):
        m = _SOFTWARE_ITEM.match(item)
        if not m:
            raise BadRequest(f"backend_parameters.software: {item!r} is not 'name' or 'name<version range>'")
        out.append(SoftwareRequirement(name=m.group(1), version=(m.group(2) or "").strip()))
    return out


def _zones(session: Session, zones: list[str]) -> tuple[list[str] | None, list[str] | None]:
    """(allowed sites, countries): a zone is a site name or a country code; either matches (OR)."""
    if not zones:
        return None, None
    names = {s.name: s.country for s in session.exec(select(Site).where(col(Site.name).in_(zones)))}
    countries = [z.upper() for z in zones if z not in names and re.fullmatch(r"[A-Za-z]{2}", z)]
    unknown = [z for z in zones if z not in names and not re.fullmatch(r"[A-Za-z]{2}", z)]
    if unknown:
        raise BadRequest(f"resources.zones: {', '.join(unknown)} is neither a site of this network nor a country code")
    if names and countries:  # one list of sites: those named and those in the countries
        in_countries = session.exec(select(Site.name).where(col(Site.country).in_(countries))).all()
        return sorted(set(names) | set(in_countries)), None
    return (sorted(names) or None), (countries or None)


def _bucket(what: str, url: str, buckets: dict[str, str]) -> None:
    """Note the bucket of an s3:// URL (the first URL naming each bucket, for the refusal)."""
    try:
        bucket, _ = s3_location(url)
    except ValueError as exc:
        raise BadRequest(f"{what}: {exc}") from None
    buckets.setdefault(bucket, url)


def _reachable(session: Session, buckets: dict[str, str]) -> list[SoftwareRequirement]:
    """The software requirement of each bucket; 400 naming the URL of a bucket no site reaches."""
    names = [S3_PREFIX + b for b in buckets]
    listed = set(session.exec(select(SoftwareRow.name).where(col(SoftwareRow.name).in_(names))).all())
    for bucket, url in buckets.items():
        if S3_PREFIX + bucket not in listed:
            raise BadRequest(
                f"{url}: no site of this network reaches S3 bucket {bucket!r} "
                f"(a site lists the buckets it reaches as software '{S3_PREFIX}<bucket>')"
            )
    return [SoftwareRequirement(name=n) for n in names]


def _input(
    session: Session, principal: Principal, i: TesWorkInput, url: str, refs: dict[str, DatasetRef], buckets: dict[str, str]
) -> TesWorkInput:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return i.model_copy(update={"url": url})
    if scheme == "s3":
        _bucket(f"input {i.path}", url, buckets)
        return i.model_copy(update={"url": url})
    if scheme == "file" or (not scheme and url.startswith("/")):
        path = parts.path if scheme else url
        if not path.startswith("/") or ".." in path.split("/"):
            raise BadRequest(f"input {i.path}: {url!r} must be an absolute path without '..'")
        return i.model_copy(update={"url": f"file://{path}"})
    if scheme == "drs":
        object_id = parts.path.lstrip("/")
        dataset_id, _, _ = object_id.partition("_")
        try:
            ds = get_visible_dataset(session, principal, dataset_id)
        except NotFound:
            raise BadRequest(f"input {i.path}: {url} names no dataset you may see") from None
        rel = ""
        if "_" in object_id:
            found = find_path(session, ds.id, object_id)
            if found is None:
                raise BadRequest(f"input {i.path}: dataset {ds.id} has no file or directory with DRS id {object_id}")
            rel = found.rstrip("/")
        refs.setdefault(ds.id, DatasetRef(dataset=ds.id))
        return i.model_copy(update={"dataset": ds.id, "dataset_path": rel, "url": None})
    raise BadRequest(f"input {i.path}: {scheme or 'this'}:// URLs are not supported (use http(s)://, file://, drs:// or s3://)")


def _new_dataset(field: str, url: str, host: str) -> None:
    """A ``drs://`` output must ask for a new dataset of this hub: ``drs://<host>/new/<name>``."""
    try:
        new_dataset_name(url, host)
    except ValueError as exc:
        raise BadRequest(f"{field}: {exc}") from None


def to_spec(session: Session, principal: Principal, task: TesTaskCreate, host: str) -> Mapped:
    """The job spec for ``task``; 400 names what cannot be mapped."""
    res = task.resources
    params = dict(res.backend_parameters or {}) if res else {}
    warnings = []
    unknown = sorted(k for k in params if k not in BACKEND_PARAMETERS)
    if unknown:
        if res is not None and res.backend_parameters_strict:
            raise BadRequest(
                f"backend_parameters: unknown key(s) {', '.join(unknown)} (backend_parameters_strict is set); "
                f"cryomesh reads {', '.join(BACKEND_PARAMETERS)}"
            )
        warnings.append(f"backend_parameters ignored (cryomesh does not read them): {', '.join(unknown)}")
    preemptible = bool(res and res.preemptible)
    warnings.append(
        "preemptible: may run on spot partitions (a node taken away requeues the task)"
        if preemptible
        else "not preemptible: spot partitions are not used"
    )
    allowed, countries = _zones(session, list(res.zones or [])) if res else (None, None)
    software = _software(params.get("software", ""))
    for image in dict.fromkeys(e.image for e in task.executors):
        if len(image) + len(IMAGE_PREFIX) > 100:
            raise BadRequest(f"executor image {image[:60]!r}...: image names are at most {100 - len(IMAGE_PREFIX)} characters")
        software.append(SoftwareRequirement(name=IMAGE_PREFIX + image.lower()))
    refs: dict[str, DatasetRef] = {}
    buckets: dict[str, str] = {}
    inputs = []
    for i in task.inputs or []:
        base = TesWorkInput(path=i.path, type=i.type, content=i.content)
        inputs.append(base if i.url is None else _input(session, principal, base, i.url, refs, buckets))
    for n, o in enumerate(task.outputs or []):
        scheme = urlsplit(o.url).scheme.lower()
        if scheme == "s3":
            _bucket(f"output {o.path}", o.url, buckets)
        elif scheme == "drs":
            _new_dataset(f"outputs[{n}].url", o.url, host)
        elif scheme != "file":
            raise BadRequest(
                f"outputs[{n}].url (output {o.path}): only file:// (into a directory the site exports), s3:// and "
                f"drs://{host}/new/<name> (a new dataset) outputs are supported"
            )
    software += _reachable(session, buckets)
    kind = params.get("kind", JobKind.GENERIC_COMMAND.value)
    if kind not in {k.value for k in JobKind}:
        raise BadRequest(f"backend_parameters.kind: {kind!r} is not one of {', '.join(k.value for k in JobKind)}")
    try:
        gpus = _int("gpus", params["gpus"]) if "gpus" in params else 0
        resources = Resources(
            cpus=(res.cpu_cores or 1) if res else 1, memory_gb=(res.ram_gb if res and res.ram_gb else 4),
            scratch_gb=(res.disk_gb if res and res.disk_gb else 0), gpus=gpus, gpu_model=params.get("gpu_model"),
            min_cuda_arch=params.get("min_cuda_arch"),
            walltime_s=_int("walltime_s", params["walltime_s"]) if "walltime_s" in params else 3600,
        )  # fmt: skip
        excluded = [s.strip() for s in params.get("exclude_sites", "").split(",") if s.strip()]
        spec = JobSpec(
            name=task.name or "tes-task", kind=JobKind(kind), resources=resources, software=software, inputs=list(refs.values()),
            placement=PlacementConstraints(
                allowed_sites=allowed, excluded_sites=excluded, countries=countries, preemptible=preemptible
            ),
            priority=_int("priority", params["priority"]) if "priority" in params else 0,
            tes=TesWork(executors=task.executors, inputs=inputs, outputs=task.outputs or [], volumes=task.volumes or []),
        )  # fmt: skip
    except ValidationError as exc:
        raise BadRequest("the task cannot run as a cryomesh job: " + describe_errors(exc, JobSpec)) from None
    return Mapped(spec, warnings)
