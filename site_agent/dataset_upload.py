"""Registering a directory as a dataset in pages, so neither the agent nor the hub ever holds
the whole manifest (a session of 340,000 movies has a manifest of ~57 MB of JSON).

Two passes over the directory, both in path order (``site_agent.datasets.walk``):

1. a survey: how many files, how many bytes, and the image sets (MRC headers of one file per
   format); it starts the upload on the hub (``POST /api/v1/datasets/uploads``);
2. the checksums, a page at a time: each page is sent as soon as it is read, and the manifest
   digest is taken as the files go by; completing the upload sends the digest, which the hub
   checks against the files it received (a file changed between the passes shows up there).

A page whose answer is lost is sent again (the hub accepts the same page twice); if the
registration fails, the upload is cancelled so that nothing is left half-registered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from shared.schemas.datasets import ChecksumAlgorithm, DatasetUploadCreate, ManifestDigest
from site_agent.client import HubClient
from site_agent.datasets import file_checksum, image_sets_of, resolve_root, walk
from site_agent.errors import HubError, HubUnavailable

log = logging.getLogger("cryomesh.agent.datasets")

UPLOADS = "/api/v1/datasets/uploads"
#: Tries per page when the hub cannot be reached, and the first wait between them (doubling).
PAGE_TRIES = 5
PAGE_RETRY_S = 1.0
#: Room kept in a page body for the JSON around the files.
PAGE_OVERHEAD = 256


def survey_source(source: Source, location: str, meta: dict[str, Any], algorithm: ChecksumAlgorithm) -> DatasetUploadCreate:
    """The upload's head for files that are not a directory here (no image sets are read)."""
    count = total = 0
    for _, size in source.files():
        count, total = count + 1, total + size
    if count == 0:
        raise ValueError(f"{location} holds no files")
    return DatasetUploadCreate.model_validate(
        {**meta, "location": location, "algorithm": algorithm.value, "file_count": count, "total_bytes": total}
    )


def survey(root: Path, meta: dict[str, Any], algorithm: ChecksumAlgorithm) -> DatasetUploadCreate:
    """The upload's head: ``meta`` with the image sets found, the location, and how many files
    and bytes the pages will carry. Raises ValueError (pydantic's ValidationError is one) on
    bad metadata or an empty directory."""
    count = total = 0

    def paths() -> Iterator[str]:
        nonlocal count, total
        for rel, full in walk(root):
            count += 1
            total += full.stat().st_size
            yield rel

    sets = image_sets_of(root, paths())
    if count == 0:
        raise ValueError(f"{root} holds no files")
    body = {"image_sets": [s.model_dump() for s in sets], **meta}
    return DatasetUploadCreate.model_validate(
        {**body, "location": str(root), "algorithm": algorithm.value, "file_count": count, "total_bytes": total}
    )


class Source(Protocol):
    """Where a dataset's files are: a directory here, or a prefix in one of the site's buckets."""

    def files(self) -> Iterator[tuple[str, int]]:
        """(manifest path, size) of every file, in path order."""
        ...

    def checksum(self, rel: str, algorithm: ChecksumAlgorithm) -> str: ...


class LocalSource:
    def __init__(self, root: Path) -> None:
        self.root = root

    def files(self) -> Iterator[tuple[str, int]]:
        return ((rel, full.stat().st_size) for rel, full in walk(self.root))

    def checksum(self, rel: str, algorithm: ChecksumAlgorithm) -> str:
        return file_checksum(self.root / rel, algorithm)


class Pages:
    """The manifest's files in pages of at most ``max_files`` files and ``max_bytes`` of JSON,
    checksummed as they are read; ``digest`` covers every file handed out so far."""

    def __init__(self, source: Source, algorithm: ChecksumAlgorithm, max_files: int, max_bytes: int) -> None:
        self._source = source
        self._files = source.files()
        self._algorithm = algorithm
        self._max_files = max_files
        self._budget = max(max_bytes - PAGE_OVERHEAD, 1)
        self._held: dict[str, Any] | None = None  # read, but over the last page's budget
        self.digest = ManifestDigest(algorithm.value)
        self.number = -1

    def _read(self) -> dict[str, Any] | None:
        if self._held is not None:
            entry, self._held = self._held, None
            return entry
        item = next(self._files, None)
        if item is None:
            return None
        rel, size = item
        entry = {"path": rel, "size": size, "checksum": self._source.checksum(rel, self._algorithm)}
        self.digest.add(entry["path"], entry["size"], entry["checksum"])
        return entry

    def next(self) -> list[dict[str, Any]] | None:
        """The next page, or None when every file has been handed out."""
        page: list[dict[str, Any]] = []
        used = 0
        while len(page) < self._max_files and (entry := self._read()) is not None:
            size = len(json.dumps(entry)) + 1  # ASCII-escaped: never shorter than what is sent
            if page and used + size > self._budget:
                self._held = entry
                break
            page.append(entry)
            used += size
        if not page:
            return None
        self.number += 1
        return page


async def _send_page(client: HubClient, upload_id: str, number: int, files: list[dict[str, Any]]) -> dict[str, Any]:
    wait = PAGE_RETRY_S
    for attempt in range(1, PAGE_TRIES + 1):
        try:
            up: dict[str, Any] = await client.request(
                "POST", f"{UPLOADS}/{upload_id}/files", json={"page": number, "files": files}
            )
            return up
        except HubUnavailable as exc:
            if attempt == PAGE_TRIES:
                raise
            log.warning("page %d of upload %s not delivered (%s); sending it again in %.0f s", number, upload_id, exc, wait)
            await asyncio.sleep(wait)
            wait *= 2
    raise AssertionError("unreachable")


async def register(
    client: HubClient,
    path: Path,
    meta: dict[str, Any],
    algorithm: ChecksumAlgorithm = ChecksumAlgorithm.CRC64NVME,
    on_page: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Register the directory ``path`` with the hub in pages; returns the dataset
    (``DatasetPublic``). ``on_page`` is told the upload's state after each page."""
    root = resolve_root(path)
    head = await asyncio.to_thread(survey, root, meta, algorithm)
    return await upload(client, LocalSource(root), head, on_page)


async def upload(
    client: HubClient, source: Source, head: DatasetUploadCreate, on_page: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Start the upload ``head`` describes (``survey``), send ``source``'s files in pages and
    complete it; on any failure the upload is cancelled."""
    up = await client.request("POST", UPLOADS, json=head.model_dump(mode="json"))
    try:
        pages = Pages(source, head.algorithm, up["max_page_files"], up["max_page_bytes"])
        while (files := await asyncio.to_thread(pages.next)) is not None:
            state = await _send_page(client, up["id"], pages.number, files)
            if on_page:
                on_page(state)
        digest = pages.digest.hexdigest()
        ds: dict[str, Any] = await client.request("POST", f"{UPLOADS}/{up['id']}/complete", json={"digest": digest})
    except BaseException:
        with contextlib.suppress(HubError):
            await client.request("DELETE", f"{UPLOADS}/{up['id']}")
        raise
    return ds
