"""Datasets and their files as GA4GH DRS 1.5 objects.

A dataset is a bundle (``ds-…``) whose contents are its top-level files and directories;
each directory is a nested bundle and each file a blob, with ids from ``shared.drs_ids``.
``expand=true`` gives the whole tree, nested, in one answer; without it a bundle's contents
are its own entries only. Visibility is the dataset's: a private dataset of another
institution is 404 (the object, its files, and their access calls), as in the dataset API.

The hub never serves bytes. A blob's access methods are its verified (AVAILABLE) replicas
the caller can use: ``file`` URLs at sites of the caller's institution (network admins: all
sites), where the file system is theirs to read; for a replica in a site's S3 bucket (its
location ``s3://bucket/prefix``), to everyone who may see the dataset, an ``s3`` URL (for
callers with their own credentials for the bucket) and an ``https`` access whose
``/access/https.<site>`` call returns a short-lived presigned GET URL, signed by the site's
agent (``hub.ga4gh.presign`` says why the agent and not the hub). Under embargo only the
owner institution gets access methods. Checksums: SHA-256 manifests give ``sha-256`` (the IANA name);
CRC64NVME manifests give ``crc64nvme`` (S3's name for it; no IANA name exists) as hex. A
bundle's checksum follows DRS: the checksum, of the same type, of its files' checksums
sorted and concatenated.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

from awscrt import checksums
from sqlmodel import Session, col, select

from hub.auth.principal import Principal
from hub.datasets.files import entries
from hub.datasets.models import Dataset, Replica
from hub.datasets.service import get_visible
from hub.errors import Forbidden, NotFound
from hub.sites.models import Site
from hub.types import utcnow
from shared.drs_ids import dir_object_id, file_object_id
from shared.schemas.auth import Role
from shared.schemas.datasets import ReplicaState

#: Most ids one bulk request may name.
MAX_BULK = 100
ACCESS_PREFIX = "file."
HTTPS_PREFIX = "https."


def hub_host(issuer: str) -> str:
    return urlsplit(issuer).netloc


def _checksum_type(algorithm: str) -> str:
    return "sha-256" if algorithm == "sha256" else "crc64nvme"


def _hex(algorithm: str, value: str) -> str:
    return value if algorithm == "sha256" else base64.b64decode(value).hex()


def _bundle_checksum(algorithm: str, hexes: list[str]) -> str:
    joined = "".join(sorted(hexes)).encode()
    if algorithm == "sha256":
        return hashlib.sha256(joined).hexdigest()
    return f"{checksums.crc64nvme(joined):016x}"


def _time(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


class _Dir:
    """A directory of a dataset (the dataset itself is the one at ``path`` ''): its files and subdirectories."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.files: list[dict[str, Any]] = []
        self.dirs: dict[str, _Dir] = {}

    def add(self, f: dict[str, Any]) -> None:
        node = self
        for part in f["path"].split("/")[:-1]:
            node = node.dirs.setdefault(part, _Dir(f"{node.path}{part}/"))
        node.files.append(f)

    def walk_files(self) -> Iterator[dict[str, Any]]:
        yield from self.files
        for d in self.dirs.values():
            yield from d.walk_files()

    def find(self, dataset_id: str, object_id: str) -> _Dir | None:
        if self.path and dir_object_id(dataset_id, self.path) == object_id:
            return self
        return next((hit for d in self.dirs.values() if (hit := d.find(dataset_id, object_id))), None)


def _tree(session: Session, dataset_id: str) -> _Dir:
    root = _Dir("")
    for f in entries(session, dataset_id):
        root.add(dict(f))
    return root


def _resolve(session: Session, principal: Principal, object_id: str) -> tuple[Dataset, _Dir | dict[str, Any]]:
    """(dataset, the directory it names (the dataset's root for the dataset) or the file entry);
    404 for what the caller may not see."""
    dataset_id, sep, _ = object_id.partition("_")
    try:
        ds = get_visible(session, principal, dataset_id)
    except NotFound:
        raise NotFound(f"no DRS object {object_id!r}") from None
    if not sep:
        return ds, _tree(session, ds.id)
    # A file is found streaming the manifest (no tree held); only a directory needs the tree.
    if (f := next((f for f in entries(session, ds.id) if file_object_id(ds.id, f["path"]) == object_id), None)) is not None:
        return ds, dict(f)
    if (d := _tree(session, ds.id).find(ds.id, object_id)) is not None:
        return ds, d
    raise NotFound(f"no DRS object {object_id!r}")


def find_path(session: Session, dataset_id: str, object_id: str) -> str | None:
    """The path of the file or directory (ending in '/') of ``dataset_id`` that ``object_id`` names."""
    hit = next((f["path"] for f in entries(session, dataset_id) if file_object_id(dataset_id, f["path"]) == object_id), None)
    if hit is None and (d := _tree(session, dataset_id).find(dataset_id, object_id)) is not None:
        hit = d.path
    return hit


def _in_s3(replica: Replica) -> bool:
    return replica.location.startswith("s3://")


def _embargoed(ds: Dataset) -> bool:
    return ds.embargo_until is not None and ds.embargo_until > utcnow().date()


def _replicas(session: Session, principal: Principal, ds: Dataset) -> list[tuple[Site, Replica, bool]]:
    """The dataset's AVAILABLE replicas, each with whether the caller may use its access
    method: in S3, all (the site's agent signs the URLs); on a site's file system, those at
    sites of the caller's institution; none, during an embargo, for outsiders."""
    embargoed = _embargoed(ds)
    outsider = principal.role is not Role.NETWORK_ADMIN and principal.institution != ds.institution
    rows = session.exec(
        select(Site, Replica)
        .join(Replica, col(Replica.site_id) == Site.id)
        .where(Replica.dataset_id == ds.id, Replica.state == ReplicaState.AVAILABLE.value)
        .order_by(col(Site.name))
    ).all()
    return [
        (s, r, not (embargoed and outsider) and (principal.role is Role.NETWORK_ADMIN or _in_s3(r)
                                                 or bool(principal.institution and s.institution == principal.institution)))
        for s, r in rows
    ]  # fmt: skip


def _file_url(replica: Replica, path: str) -> str:
    return "file://" + quote(f"{replica.location.rstrip('/')}/{path}")


def _s3_url(replica: Replica, path: str) -> str:
    """The object of ``path`` below the replica's ``s3://bucket/prefix``."""
    return f"{replica.location.rstrip('/')}/{path}"


def _methods(site: Site, replica: Replica, path: str) -> list[dict[str, Any]]:
    if _in_s3(replica):
        return [
            {"type": "s3", "access_url": {"url": _s3_url(replica, path)}, "available": True},
            {"type": "https", "access_id": f"{HTTPS_PREFIX}{site.name}", "available": True},
        ]
    return [{"type": "file", "access_id": f"{ACCESS_PREFIX}{site.name}", "region": site.name, "available": True,
             "access_url": {"url": _file_url(replica, path)}}]  # fmt: skip


def _blob(session: Session, principal: Principal, ds: Dataset, f: dict[str, Any], host: str) -> dict[str, Any]:
    object_id = file_object_id(ds.id, f["path"])
    replicas = _replicas(session, principal, ds)
    methods = [m for site, replica, usable in replicas if usable for m in _methods(site, replica, f["path"])]
    if not methods:  # DRS wants one for a blob: where the copies are, not for this caller (``get_access`` says why)
        methods = [{"type": "file", "access_id": f"{ACCESS_PREFIX}{site.name}", "region": site.name, "available": False}
                   for site, _, _ in replicas]  # fmt: skip
    return {
        "id": object_id, "name": f["path"].rsplit("/", 1)[-1], "self_uri": f"drs://{host}/{object_id}", "size": f["size"],
        "created_time": _time(ds.created_at), "updated_time": _time(ds.created_at), "version": ds.manifest_digest,
        "checksums": [{"type": _checksum_type(ds.checksum_algorithm), "checksum": _hex(ds.checksum_algorithm, f["checksum"])}],
        "access_methods": methods, "description": f"{f['path']} of dataset {ds.id}",
    }  # fmt: skip


def _contents(ds: Dataset, node: _Dir, host: str, expand: bool) -> list[dict[str, Any]]:
    """A directory's entries, as DRS 1.5 asks: one per file and subdirectory, named by its own
    name; a subdirectory is a nested bundle whose ``contents`` are given only when expanded."""
    items: list[tuple[str, dict[str, Any]]] = []
    for name, d in node.dirs.items():
        object_id = dir_object_id(ds.id, d.path)
        item: dict[str, Any] = {"name": name, "id": object_id, "drs_uri": [f"drs://{host}/{object_id}"]}
        if expand:
            item["contents"] = _contents(ds, d, host, expand)
        items.append((name, item))
    for f in node.files:
        object_id = file_object_id(ds.id, f["path"])
        items.append((f["path"].rsplit("/", 1)[-1], {"name": f["path"].rsplit("/", 1)[-1], "id": object_id,
                                                      "drs_uri": [f"drs://{host}/{object_id}"]}))  # fmt: skip
    return [item for _, item in sorted(items, key=lambda kv: kv[0])]


def _bundle(ds: Dataset, node: _Dir, host: str, expand: bool) -> dict[str, Any]:
    """The dataset (``node`` its root) or one of its directories as a bundle."""
    files = list(node.walk_files())
    algorithm = ds.checksum_algorithm
    object_id = dir_object_id(ds.id, node.path) if node.path else ds.id
    return {
        "id": object_id, "name": node.path.rstrip("/").rsplit("/", 1)[-1] or ds.id, "self_uri": f"drs://{host}/{object_id}",
        "size": sum(f["size"] for f in files), "created_time": _time(ds.created_at), "updated_time": _time(ds.created_at),
        "version": ds.manifest_digest,
        "checksums": [{"type": _checksum_type(algorithm),
                       "checksum": _bundle_checksum(algorithm, [_hex(algorithm, f["checksum"]) for f in files])}],
        "description": ds.title if not node.path else f"{node.path} of dataset {ds.id}",
        "contents": _contents(ds, node, host, expand),
    }  # fmt: skip


def get_object(session: Session, principal: Principal, object_id: str, host: str, expand: bool = False) -> dict[str, Any]:
    """A dataset or one of its directories (a bundle: its entries, nested in full when
    ``expand``) or one file (a blob)."""
    ds, hit = _resolve(session, principal, object_id)
    if isinstance(hit, _Dir):
        return _bundle(ds, hit, host, expand)
    return _blob(session, principal, ds, hit, host)


@dataclass
class ToSign:
    """An ``https`` access: ``url`` (s3://…) to be signed by ``site``'s agent (hub.ga4gh.presign)."""

    site: Site
    url: str


def get_access(session: Session, principal: Principal, object_id: str, access_id: str) -> dict[str, Any] | ToSign:
    """A ``file`` access's URL, or the object an ``https`` access needs signed."""
    ds, f = _resolve(session, principal, object_id)
    kind, _, site_name = access_id.partition(".")
    if isinstance(f, dict) and kind in ("file", "https"):
        for site, replica, usable in _replicas(session, principal, ds):
            if site.name != site_name or _in_s3(replica) != (kind == "https"):
                continue
            if not usable:
                raise Forbidden(
                    f"the copy at {site.name} is not yours to read "
                    + (f"until its embargo ends ({ds.embargo_until})" if _embargoed(ds)
                       else "(a file system of another institution's site)")
                    + ": ask for a share of the dataset to a site of yours (cryomesh shares request)"
                )  # fmt: skip
            return ToSign(site, _s3_url(replica, f["path"])) if kind == "https" else {"url": _file_url(replica, f["path"])}
    raise NotFound(f"no access method {access_id!r} of DRS object {object_id!r} for you")


def get_bulk(session: Session, principal: Principal, object_ids: list[str], host: str, expand: bool = False) -> dict[str, Any]:
    resolved, unresolved = [], []
    for object_id in dict.fromkeys(object_ids):
        try:
            resolved.append(get_object(session, principal, object_id, host, expand))
        except NotFound:
            unresolved.append(object_id)
    return {
        "summary": {"requested": len(object_ids), "resolved": len(resolved), "unresolved": len(unresolved)},
        "unresolved_drs_objects": [{"error_code": 404, "object_ids": unresolved}] if unresolved else [],
        "resolved_drs_object": resolved,
    }
