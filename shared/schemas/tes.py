"""GA4GH TES 1.1: what a client sends (``TesTaskCreate``), the work an agent receives for it
(``TesWork``, carried in ``JobSpec.tes``) and what the agent reports back (``TesResult``).

A TES task becomes a ``generic.command`` job: the broker, leases, site policies, usage and
placement explanations are the job's. Names follow the TES 1.1 OpenAPI
(ga4gh/task-execution-schemas, tests/data/ga4gh/ holds the copy the tests validate against).
"""

from __future__ import annotations

import posixpath
import re
from enum import StrEnum
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, FiniteFloat, field_validator, model_validator

from shared.schemas.common import Int64, SafeStr, StrictModel

#: Inline input ``content`` accepted per input (TES asks servers for at least 128 KiB).
MAX_CONTENT_BYTES = 256 * 1024


class TesState(StrEnum):
    UNKNOWN = "UNKNOWN"
    QUEUED = "QUEUED"
    INITIALIZING = "INITIALIZING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETE = "COMPLETE"
    EXECUTOR_ERROR = "EXECUTOR_ERROR"
    SYSTEM_ERROR = "SYSTEM_ERROR"
    CANCELED = "CANCELED"
    PREEMPTED = "PREEMPTED"
    CANCELING = "CANCELING"


class TesFileType(StrEnum):
    FILE = "FILE"
    DIRECTORY = "DIRECTORY"


def check_task_path(path: str) -> str:
    """A path inside the task: absolute, normalised, no '..' (it is placed under the task's root)."""
    if not path.startswith("/") or len(path) > 1024:
        raise ValueError(f"{path!r} must be an absolute path of at most 1024 characters")
    if any(ord(c) < 0x20 or c == "\x7f" for c in path):
        raise ValueError(f"{path!r} contains control characters")
    if ".." in path.split("/") or posixpath.normpath(path) != path.rstrip("/") or path == "/":
        raise ValueError(f"{path!r} must be a normalised path below '/' without '..'")
    return path.rstrip("/")


#: An S3 bucket name as S3 allows it for new buckets (lower case, digits, '.', '-').
_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def check_bucket(name: str) -> str:
    if not _S3_BUCKET.fullmatch(name) or ".." in name:
        raise ValueError(f"{name!r} is not an S3 bucket name")
    return name


def s3_location(url: str) -> tuple[str, str]:
    """(bucket, key) of ``s3://bucket/key``. The endpoint is not in the URL: it is the one
    each site is configured for, so a bucket name means the same bucket at every site that
    lists it (docs/workflows.md)."""
    if not url.startswith("s3://"):
        raise ValueError(f"{url!r} is not an s3:// URL")
    bucket, _, key = url.removeprefix("s3://").partition("/")
    try:
        check_bucket(bucket)
    except ValueError as exc:
        raise ValueError(f"{url!r}: {exc}") from None
    key = key.rstrip("/")
    if not key or len(key.encode()) > 1024 or any(ord(c) < 0x20 for c in key):
        raise ValueError(f"{url!r} must name an object or prefix (s3://bucket/key) of at most 1024 bytes")
    return bucket, key


#: A new dataset's name: a TES output ``drs://<hub host>/new/<name>``.
DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
NEW_DATASET_PATH = "/new/"


def new_dataset_name(url: str, host: str) -> str:
    """The dataset name of an output URL ``drs://<host>/new/<name>``; ValueError saying what is wrong."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "drs" or parts.netloc != host or not parts.path.startswith(NEW_DATASET_PATH):
        raise ValueError(f"{url!r}: a drs:// output asks for a new dataset as drs://{host}/new/<name>")
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r}: a new dataset's URL takes no query or fragment")
    name = parts.path.removeprefix(NEW_DATASET_PATH)
    if not DATASET_NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a dataset name: 1 to 100 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


class TesInput(StrictModel):
    name: SafeStr | None = Field(default=None, max_length=500)
    description: SafeStr | None = Field(default=None, max_length=5000)
    url: SafeStr | None = Field(
        default=None, max_length=4000,
        description="http(s)://, file:// (a directory the site exports), drs://, s3://bucket/key (a bucket a site reaches)",
    )  # fmt: skip
    path: SafeStr
    type: TesFileType = TesFileType.FILE
    content: SafeStr | None = Field(default=None, description=f"Inline file content (up to {MAX_CONTENT_BYTES} bytes)")
    streamable: bool | None = None

    @field_validator("path")
    @classmethod
    def _inside(cls, v: str) -> str:
        return check_task_path(v)

    @model_validator(mode="after")
    def _source(self) -> TesInput:
        if (self.url is None) == (self.content is None):
            raise ValueError(f"input {self.path}: give exactly one of url or content")
        if self.content is not None:
            if len(self.content.encode()) > MAX_CONTENT_BYTES:
                raise ValueError(f"input {self.path}: content is larger than {MAX_CONTENT_BYTES} bytes")
            if self.type is TesFileType.DIRECTORY:
                raise ValueError(f"input {self.path}: inline content makes a FILE, not a DIRECTORY")
        return self


class TesOutput(StrictModel):
    name: SafeStr | None = Field(default=None, max_length=500)
    description: SafeStr | None = Field(default=None, max_length=5000)
    url: SafeStr = Field(
        max_length=4000,
        description="file:// inside a directory the site exports, s3://bucket/key of a bucket a site reaches, or "
        "drs://<hub host>/new/<name>: a new dataset at the site the task ran at",
    )
    path: SafeStr
    path_prefix: SafeStr | None = Field(default=None, description="With a glob in path: the part cut from each match")
    type: TesFileType = TesFileType.FILE

    @field_validator("path")
    @classmethod
    def _inside(cls, v: str) -> str:
        return check_task_path(v)

    @field_validator("path_prefix")
    @classmethod
    def _prefix(cls, v: str | None) -> str | None:
        return None if v is None else check_task_path(v)


class TesExecutor(StrictModel):
    image: SafeStr = Field(min_length=1, max_length=300)
    command: list[SafeStr] = Field(min_length=1, max_length=1000)
    workdir: SafeStr | None = None
    stdin: SafeStr | None = None
    stdout: SafeStr | None = None
    stderr: SafeStr | None = None
    env: dict[SafeStr, SafeStr] | None = Field(default=None, max_length=500)
    ignore_error: bool = False

    @field_validator("workdir", "stdin", "stdout", "stderr")
    @classmethod
    def _paths(cls, v: str | None) -> str | None:
        return None if v is None else check_task_path(v)


class TesResources(StrictModel):
    cpu_cores: Int64 | None = Field(default=None, ge=1, le=100_000)
    preemptible: bool | None = None
    ram_gb: FiniteFloat | None = Field(default=None, gt=0, le=100_000)
    disk_gb: FiniteFloat | None = Field(default=None, ge=0, le=1_000_000)
    zones: list[SafeStr] | None = Field(default=None, max_length=300, description="Site names or ISO country codes")
    backend_parameters: dict[SafeStr, SafeStr] | None = Field(default=None, max_length=100)
    backend_parameters_strict: bool | None = False


class TesTaskCreate(StrictModel):
    """``POST /tasks``. The read-only fields a client may echo back (id, state, logs,
    creation_time) are accepted and ignored; any other unknown field is refused."""

    id: SafeStr | None = None
    state: TesState | None = None
    name: SafeStr | None = Field(default=None, max_length=200)
    description: SafeStr | None = Field(default=None, max_length=20_000)
    inputs: list[TesInput] | None = Field(default=None, max_length=1000)
    outputs: list[TesOutput] | None = Field(default=None, max_length=1000)
    resources: TesResources | None = None
    executors: list[TesExecutor] = Field(min_length=1, max_length=100)
    volumes: list[SafeStr] | None = Field(default=None, max_length=100)
    tags: dict[SafeStr, SafeStr] | None = Field(default=None, max_length=50)
    logs: list[dict[str, object]] | None = None
    creation_time: SafeStr | None = None

    @field_validator("volumes")
    @classmethod
    def _volumes(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [check_task_path(p) for p in v]

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v and any(len(k) > 200 or len(x) > 1000 for k, x in v.items()):
            raise ValueError("tag keys are at most 200 characters and values at most 1000")
        return v


class TesWorkInput(BaseModel):
    """An input as the agent stages it: inline content, a URL, or a file of an input dataset."""

    path: str
    type: TesFileType = TesFileType.FILE
    content: str | None = None
    url: str | None = None
    dataset: str | None = Field(default=None, description="drs:// inputs: the dataset id (an input of the job)")
    dataset_path: str | None = Field(default=None, description="drs:// inputs: the file inside it; '' for all of it")


class TesWork(StrictModel):
    """What a TES task asks of the site that runs it (``JobSpec.tes``)."""

    executors: list[TesExecutor] = Field(min_length=1, max_length=100)
    inputs: list[TesWorkInput] = Field(default_factory=list, max_length=1000)
    outputs: list[TesOutput] = Field(default_factory=list, max_length=1000)
    volumes: list[SafeStr] = Field(default_factory=list, max_length=100)


class TesExecutorLog(BaseModel):
    start_time: str | None = None
    end_time: str | None = None
    stdout: str = ""
    stderr: str = ""
    exit_code: int


class TesOutputFileLog(BaseModel):
    url: str
    path: str
    size_bytes: str = Field(description="A string, as TES 1.1 has it (int64 as string)")


class TesResult(BaseModel):
    """What the agent's TES runner reports with the attempt's end (tolerant wire)."""

    executors: list[TesExecutorLog] = Field(default_factory=list)
    outputs: list[TesOutputFileLog] = Field(default_factory=list)
    system_logs: list[str] = Field(default_factory=list)
