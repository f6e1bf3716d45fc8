"""A dataset whose files are objects in one of this site's S3 buckets (``s3://bucket/prefix``).

``cryomesh datasets register --s3 s3://bucket/prefix`` registers every object below
``prefix/`` as a file of the dataset (its key below the prefix is its path), through the same
paged upload as a directory (``site_agent.dataset_upload``): listed in key order (S3 lists
keys in UTF-8 byte order, which is the manifest's path order) and checksummed by reading
each object once. The replica's location is the ``s3://`` URL: DRS clients reach it through
the ``https`` access the agent signs (``site_agent.presign``). The agent reaches S3 with the
site's ``[transfers]`` settings and its usual AWS credentials.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

from awscrt import checksums

from shared.schemas.datasets import ChecksumAlgorithm, check_relative_path
from shared.schemas.tes import s3_location
from site_agent.config import TransfersSection
from site_agent.datasets import crc64nvme_b64
from site_agent.transfers.exchange import MIB, s3_client


class S3Source:
    def __init__(self, cfg: TransfersSection, url: str) -> None:
        self.bucket, prefix = s3_location(url)  # ValueError for a malformed URL
        self.prefix = prefix.rstrip("/") + "/"
        self.location = f"s3://{self.bucket}/{self.prefix.rstrip('/')}"
        self.s3: Any = s3_client(cfg)

    def files(self) -> Iterator[tuple[str, int]]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(self.prefix) :]
                if (not rel or rel.endswith("/")) and obj["Size"] == 0:
                    continue  # a "folder" marker some tools write
                yield check_relative_path(rel), int(obj["Size"])

    def checksum(self, rel: str, algorithm: ChecksumAlgorithm) -> str:
        body = self.s3.get_object(Bucket=self.bucket, Key=self.prefix + rel)["Body"]
        h, crc = hashlib.sha256(), 0
        for chunk in body.iter_chunks(4 * MIB):
            if algorithm is ChecksumAlgorithm.SHA256:
                h.update(chunk)
            else:
                crc = checksums.crc64nvme(chunk, crc)
        return h.hexdigest() if algorithm is ChecksumAlgorithm.SHA256 else crc64nvme_b64(crc)
