"""``s3://`` inputs and outputs of GA4GH TES tasks, moved by the task's runner (``site_agent.tes_run``).

The site reaches S3 the way its transfers do: ``[transfers]``'s endpoint, region, profile,
part size and concurrency (``site_agent.transfers.exchange.s3_client``) and the agent's usual
AWS credential chain, which the runner inherits from the agent's environment. Which buckets
tasks may name is the site's ``[tes] s3_buckets`` (checked before the task is claimed).

boto3's managed transfers move the bytes: ranged GetObject for inputs, PutObject or a
multipart upload for outputs larger than one part, so only calls real S3 supports are made
(HeadBucket, HeadObject, GetObject, ListObjectsV2, PutObject, CreateMultipartUpload,
UploadPart, CompleteMultipartUpload, AbortMultipartUpload).

Every object is verified against what S3 says of it: its size always, then the strongest
whole-object checksum S3 gives: CRC64NVME, SHA-256 or CRC32 stored with the object, else
its ETag where the ETag is an MD5 (one-part uploads without KMS or customer keys, and for
outputs, multipart uploads of the part size used here). A mismatch fails the task's staging.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from awscrt import checksums
from boto3.exceptions import S3TransferFailedError, S3UploadFailedError
from botocore.exceptions import BotoCoreError, ClientError

from shared.schemas.datasets import check_relative_path
from shared.schemas.tes import TesFileType, s3_location
from site_agent.config import TransfersSection
from site_agent.tes_run import StagingError
from site_agent.transfers.exchange import MIB, S3_MIN_PART, s3_client

#: The ``[transfers]`` settings the runner needs (written into the task file; no secrets).
S3_SETTINGS = {"endpoint_url", "region", "profile", "part_size_mb", "concurrency"}
_READ = 4 * MIB
_MD5_ETAG = re.compile(r'^"?([0-9a-f]{32})(?:-(\d+))?"?$')
#: What boto3 raises for a refused request, an endpoint it cannot reach, missing credentials.
_S3_ERRORS = (BotoCoreError, ClientError, S3TransferFailedError, S3UploadFailedError, OSError)
T = TypeVar("T")


class S3StagingError(StagingError):
    """An s3:// input or output could not be moved or did not verify."""


class S3Staging:
    def __init__(self, settings: dict[str, Any]) -> None:
        from boto3.s3.transfer import TransferConfig

        cfg = TransfersSection.model_validate({k: v for k, v in settings.items() if k in S3_SETTINGS})
        self.part_size = max(int(cfg.part_size_mb * MIB), S3_MIN_PART)
        self.s3 = s3_client(cfg)
        self.config = TransferConfig(
            multipart_threshold=self.part_size, multipart_chunksize=self.part_size, max_concurrency=cfg.concurrency
        )
        self.log: list[str] = []

    # -- inputs -------------------------------------------------------------------

    def fetch(self, url: str, dest: Path, kind: TesFileType) -> None:
        """The object at ``url`` to ``dest``; a DIRECTORY is every object below ``url``'s key + '/'."""
        bucket, key = s3_location(url)
        if kind is TesFileType.FILE:
            checked = self._get(url, bucket, key, dest)
            self.log.append(f"s3: fetched {url} ({dest.stat().st_size} bytes, {checked} verified)")
            return
        count = total = 0
        for obj in self._listing(url, bucket, key + "/"):
            rel = obj["Key"][len(key) + 1 :]
            if (not rel or rel.endswith("/")) and obj["Size"] == 0:
                continue  # a "folder" marker some tools write
            try:
                check_relative_path(rel)
            except ValueError as exc:
                raise S3StagingError(f"{url}: object {obj['Key']!r} cannot be a file of the directory: {exc}") from None
            self._get(url, bucket, obj["Key"], dest / rel)
            count, total = count + 1, total + int(obj["Size"])
        if count == 0:
            self._bucket_exists(url, bucket)
            raise S3StagingError(f"{url}: no objects below s3://{bucket}/{key}/")
        self.log.append(f"s3: fetched {url} ({count} objects, {total} bytes, each verified)")

    def _get(self, url: str, bucket: str, key: str, dest: Path) -> str:
        head = self._head(url, bucket, key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        self._call(url, lambda: self.s3.download_file(bucket, key, str(dest), Config=self.config))
        try:
            return _verify(f"s3://{bucket}/{key}", dest, head, part_size=None)
        except S3StagingError:
            dest.unlink(missing_ok=True)
            raise

    def _listing(self, url: str, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        yield from (obj for page in self._call(url, lambda: list(pages)) for obj in page.get("Contents", []))

    # -- outputs ------------------------------------------------------------------

    def put(self, src: Path, url: str) -> None:
        """``src`` to the object ``url``: one PutObject up to the part size, else a multipart upload."""
        bucket, key = s3_location(url)
        self._call(url, lambda: self.s3.upload_file(str(src), bucket, key, Config=self.config))
        checked = _verify(url, src, self._head(url, bucket, key), part_size=self.part_size)
        self.log.append(f"s3: wrote {url} ({src.stat().st_size} bytes, {checked} verified)")

    # -- errors -------------------------------------------------------------------

    def _head(self, url: str, bucket: str, key: str) -> dict[str, Any]:
        try:
            return dict(self.s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED"))
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                self._bucket_exists(url, bucket)
                raise S3StagingError(f"{url}: no object s3://{bucket}/{key} at this site's S3 endpoint") from None
            raise S3StagingError(f"{url}: S3 refused HeadObject: {_code(exc)} {exc}") from None
        except _S3_ERRORS as exc:
            raise _wrapped(url, exc) from None

    def _bucket_exists(self, url: str, bucket: str) -> None:
        try:
            self.s3.head_bucket(Bucket=bucket)
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchBucket", "NotFound"):
                raise S3StagingError(f"{url}: bucket {bucket!r} does not exist at this site's S3 endpoint") from None
            raise S3StagingError(f"{url}: S3 refused HeadBucket on {bucket!r}: {_code(exc)}") from None
        except _S3_ERRORS as exc:
            raise _wrapped(url, exc) from None

    def _call(self, url: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except _S3_ERRORS as exc:
            raise _wrapped(url, exc) from None


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _wrapped(url: str, exc: Exception) -> S3StagingError:
    """A refused request, an endpoint out of reach, missing credentials: one line naming the URL."""
    if isinstance(exc, ClientError):
        return S3StagingError(f"{url}: S3 answered {_code(exc) or 'an error'}: {exc}")
    return S3StagingError(f"{url}: {exc}")


def _verify(url: str, path: Path, head: dict[str, Any], part_size: int | None) -> str:
    """Check ``path`` against the object's HeadObject answer; the checks made, e.g. 'size and CRC64NVME'."""
    size = path.stat().st_size
    if size != int(head["ContentLength"]):
        raise S3StagingError(f"{url}: {size} bytes here, {head['ContentLength']} in S3")
    etag = _MD5_ETAG.fullmatch(str(head.get("ETag", "")))
    one_part = etag is not None and etag.group(2) is None
    # A stored checksum is of the whole object when S3 says so, or when the object went up in one part
    # (older answers give no ChecksumType; a multipart object's may be a checksum of its parts' checksums).
    whole = head.get("ChecksumType") == "FULL_OBJECT" or (head.get("ChecksumType") is None and one_part)
    stored = {name: head.get(f"Checksum{name}") for name in ("CRC64NVME", "SHA256", "CRC32")}
    for name, value in stored.items():
        if value and "-" not in value and (whole or name == "CRC64NVME"):  # CRC64NVME is always of the whole
            got = base64.b64encode(_digest(path, name)).decode()
            if got != value:
                raise S3StagingError(f"{url}: {name} here is {got}, S3 has {value}")
            return f"size and {name}"
    encrypted = head.get("ServerSideEncryption", "").startswith("aws:kms") or head.get("SSECustomerAlgorithm")
    if etag is None or encrypted:
        return "size"
    parts = int(etag.group(2) or 0)
    if parts and (part_size is None or parts != math.ceil(size / part_size)):
        return "size"  # a multipart upload of unknown part size: its ETag cannot be recomputed
    got = _etag(path, part_size if parts and part_size else None)
    if got != etag.group(1):
        raise S3StagingError(f"{url}: the MD5 here ({got}) differs from the object's ETag ({etag.group(1)})")
    return "size and MD5" + (" of parts" if parts else "")


def _chunks(path: Path, size: int) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while block := fh.read(size):
            yield block


def _digest(path: Path, name: str) -> bytes:
    if name == "SHA256":
        h = hashlib.sha256()
        for block in _chunks(path, _READ):
            h.update(block)
        return h.digest()
    crc = 0
    for block in _chunks(path, _READ):
        crc = checksums.crc64nvme(block, crc) if name == "CRC64NVME" else zlib.crc32(block, crc)
    return crc.to_bytes(8 if name == "CRC64NVME" else 4, "big")


def _etag(path: Path, part_size: int | None) -> str:
    """The MD5 ETag S3 gives: of the bytes, or (multipart) of the parts' MD5s concatenated."""
    if part_size is None:
        h = hashlib.md5(usedforsecurity=False)
        for block in _chunks(path, _READ):
            h.update(block)
        return h.hexdigest()
    md5s = b"".join(hashlib.md5(part, usedforsecurity=False).digest() for part in _chunks(path, part_size))
    return hashlib.md5(md5s, usedforsecurity=False).hexdigest()
