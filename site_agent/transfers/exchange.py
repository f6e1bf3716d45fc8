"""Exchange stores: where a source agent publishes files and a destination agent reads them.

- ``FsExchange``: a directory (one machine, or a filesystem both sites mount). Parts are
  written in place with ``pwrite``; the destination reads the directory directly.
- ``S3Exchange``: a bucket in AWS S3 or any S3-compatible store, with the site's usual
  AWS credentials. Files larger than one part go up as multipart uploads whose upload id
  and part ETags are in the journal, so a restart continues the same upload. The other
  site gets one short-lived presigned GET URL per object and reads byte ranges with it;
  it needs no credentials for this bucket. Only calls real S3 supports are used:
  PutObject, CreateMultipartUpload, UploadPart, CompleteMultipartUpload,
  AbortMultipartUpload, HeadObject, ListObjectsV2, DeleteObjects and presigned GetObject.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import urllib3

from shared.schemas.datasets import check_relative_path
from shared.schemas.transfers import ExchangeAccess
from site_agent.config import TransfersSection

MIB = 2**20
#: S3's smallest part (all but the last).
S3_MIN_PART = 5 * MIB


class TransferError(Exception):
    """A failure of one file or part; recorded per file, the transfer goes on or retries."""


def safe_join(root: Path, rel: str) -> Path:
    """``root/rel``, refusing a path that is absolute, has '..', or leads outside ``root``
    through a symbolic link. The agent checks this itself: it does not trust a manifest
    just because the hub passed it on."""
    try:
        check_relative_path(rel)
    except ValueError as exc:
        raise TransferError(str(exc)) from None
    root = root.resolve()
    full = root / rel
    if not full.parent.resolve().is_relative_to(root) or full.is_symlink():
        raise TransferError(f"{rel!r} leads outside {root}")
    return full


class Publisher(Protocol):
    part_size: int

    def begin(self, path: str, size: int, upload_id: str | None) -> str | None:
        """Prepare a file of ``size`` bytes; returns the upload id to journal (S3 multipart)."""
        ...

    def put_part(self, path: str, upload_id: str | None, part: int, offset: int, data: bytes) -> str:
        """Store one part; returns its ETag ("" where none)."""
        ...

    def finish(self, path: str, size: int, upload_id: str | None, etags: dict[int, str]) -> None: ...

    def access(self, paths: list[str]) -> ExchangeAccess: ...

    def remove(self) -> None: ...


class Reader(Protocol):
    def read(self, path: str, offset: int, length: int) -> bytes: ...

    def close(self) -> None: ...


# -- filesystem ----------------------------------------------------------------------


class FsPublisher:
    def __init__(self, root: Path, transfer_id: str, part_size: int) -> None:
        self.dir = root / transfer_id
        self.part_size = part_size

    def _target(self, path: str) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        target = safe_join(self.dir, path)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def begin(self, path: str, size: int, upload_id: str | None) -> str | None:
        target = self._target(path)
        if upload_id is None or not target.exists():  # a fresh file: make it the right size
            with target.open("wb") as fh:
                fh.truncate(size)
        return upload_id or "fs"

    def put_part(self, path: str, upload_id: str | None, part: int, offset: int, data: bytes) -> str:
        fd = os.open(self._target(path), os.O_WRONLY | os.O_NOFOLLOW)
        try:
            os.pwrite(fd, data, offset)
        finally:
            os.close(fd)
        return ""

    def finish(self, path: str, size: int, upload_id: str | None, etags: dict[int, str]) -> None:
        if self._target(path).stat().st_size != size:
            raise TransferError(f"{path}: published copy has the wrong size")

    def access(self, paths: list[str]) -> ExchangeAccess:
        return ExchangeAccess(kind="fs", root=str(self.dir.resolve()))

    def remove(self) -> None:
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


def pread_exact(path: Path, offset: int, length: int) -> bytes:
    """``length`` bytes at ``offset`` (the last component is never followed as a link)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise TransferError(f"{path.name}: {exc.strerror}") from None
    try:
        data = os.pread(fd, length, offset)
    finally:
        os.close(fd)
    if len(data) != length:
        raise TransferError(f"{path.name}: shorter than the manifest says")
    return data


class FsReader:
    def __init__(self, root: str) -> None:
        self.root = Path(root)

    def read(self, path: str, offset: int, length: int) -> bytes:
        return pread_exact(safe_join(self.root, path), offset, length)

    def close(self) -> None:
        pass


# -- S3 ------------------------------------------------------------------------------


def s3_client(cfg: TransfersSection) -> Any:
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(profile_name=cfg.profile, region_name=cfg.region)
    return session.client(
        "s3",
        endpoint_url=cfg.endpoint_url,
        config=Config(
            signature_version="s3v4",
            max_pool_connections=max(10, cfg.concurrency * 2),
            retries={"mode": "standard", "max_attempts": 5},
        ),
    )


class S3Publisher:
    def __init__(self, cfg: TransfersSection, transfer_id: str, part_size: int, client: Any | None = None) -> None:
        if not cfg.bucket:
            raise ValueError("[transfers] exchange = 's3' needs a bucket")
        self.bucket = cfg.bucket
        self.prefix = f"{cfg.prefix.strip('/')}/{transfer_id}/"
        self.ttl = cfg.presign_ttl_s
        self.part_size = max(part_size, S3_MIN_PART)
        self.s3 = client or s3_client(cfg)

    def key(self, path: str) -> str:
        return self.prefix + check_relative_path(path)

    def begin(self, path: str, size: int, upload_id: str | None) -> str | None:
        if size <= self.part_size:
            return None  # one PutObject
        if upload_id:
            return upload_id
        return str(self.s3.create_multipart_upload(Bucket=self.bucket, Key=self.key(path))["UploadId"])

    def put_part(self, path: str, upload_id: str | None, part: int, offset: int, data: bytes) -> str:
        if upload_id is None:
            return str(self.s3.put_object(Bucket=self.bucket, Key=self.key(path), Body=data)["ETag"])
        r = self.s3.upload_part(Bucket=self.bucket, Key=self.key(path), UploadId=upload_id, PartNumber=part + 1, Body=data)
        return str(r["ETag"])

    def finish(self, path: str, size: int, upload_id: str | None, etags: dict[int, str]) -> None:
        if upload_id is None:
            return
        from botocore.exceptions import ClientError

        parts = [{"PartNumber": k + 1, "ETag": etags[k]} for k in sorted(etags)]
        try:
            self.s3.complete_multipart_upload(
                Bucket=self.bucket, Key=self.key(path), UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except ClientError as exc:
            # Completed before a kill, but not journaled: the object is there and whole.
            if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                raise
            head = self.s3.head_object(Bucket=self.bucket, Key=self.key(path))
            if int(head["ContentLength"]) != size:
                raise TransferError(f"{path}: the upload is gone and the object is incomplete") from exc

    def access(self, paths: list[str]) -> ExchangeAccess:
        expires = datetime.now(UTC) + timedelta(seconds=self.ttl)
        urls = {
            p: str(
                self.s3.generate_presigned_url(
                    "get_object", Params={"Bucket": self.bucket, "Key": self.key(p)}, ExpiresIn=self.ttl
                )
            )
            for p in paths
        }
        return ExchangeAccess(kind="s3", urls=urls, expires_at=expires)

    def remove(self) -> None:
        token: str | None = None
        while True:
            kw: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix}
            if token:
                kw["ContinuationToken"] = token
            page = self.s3.list_objects_v2(**kw)
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                self.s3.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]


class UrlReader:
    """Byte ranges through presigned GET URLs (no credentials for the other site's bucket).

    urllib3 rather than httpx here: for bodies of tens of megabytes it is about a third
    faster (bench/transfer.py), and it is what botocore itself uses."""

    def __init__(self, urls: dict[str, str], concurrency: int) -> None:
        self.urls = urls
        self.http = urllib3.PoolManager(
            maxsize=concurrency * 2, timeout=urllib3.Timeout(connect=10, read=60), retries=urllib3.Retry(2, redirect=False)
        )

    def read(self, path: str, offset: int, length: int) -> bytes:
        url = self.urls.get(path)
        if url is None:
            raise TransferError(f"{path}: no URL for it in the published copy")
        if length == 0:
            return b""
        try:
            r = self.http.request("GET", url, headers={"Range": f"bytes={offset}-{offset + length - 1}"})
        except urllib3.exceptions.HTTPError as exc:
            raise TransferError(f"{path}: {exc}") from None
        if r.status == 403:
            raise TransferError(f"{path}: the exchange store refused the URL (expired?): {r.data[:200]!r}")
        if r.status not in (200, 206):
            raise TransferError(f"{path}: the exchange store answered {r.status}")
        data = bytes(r.data) if r.status == 206 else bytes(r.data[offset : offset + length])
        if len(data) != length:
            raise TransferError(f"{path}: got {len(data)} bytes of a {length}-byte part")
        return data

    def close(self) -> None:
        self.http.clear()


def publisher_for(cfg: TransfersSection, state_dir: Path, transfer_id: str) -> Publisher:
    part_size = int(cfg.part_size_mb * MIB)
    if cfg.exchange == "s3":
        return S3Publisher(cfg, transfer_id, part_size)
    return FsPublisher(cfg.path or state_dir / "exchange", transfer_id, part_size)


def reader_for(access: ExchangeAccess, concurrency: int) -> Reader:
    if access.kind == "s3":
        return UrlReader(access.urls, concurrency)
    if not access.root:
        raise TransferError("the published copy names no directory")
    return FsReader(access.root)
