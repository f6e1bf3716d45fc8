"""Datasets and their files as GA4GH DRS 1.5 objects.

A dataset is a bundle (``ds-…``); each file of its manifest is a blob whose id is
``<dataset>_<16 hex of sha-256(path)>`` (``hub.ga4gh.tes_map.file_object_id``). Visibility
is the dataset's: a private dataset of another institution is 404, as in the dataset API.

The hub never serves bytes. A blob's access methods are its verified (AVAILABLE) replicas
the caller can use: ``file`` URLs at sites of the caller's institution (network admins: all
sites), where the file system is theirs to read. Under embargo only the owner institution
gets access methods. Checksums: SHA-256 manifests give ``sha-256`` (the IANA name);
CRC64NVME manifests give ``crc64nvme`` (S3's name for it; no IANA name exists) as hex. A
bundle's checksum follows DRS: the checksum, of the same type, of its files' checksums
sorted and concatenated.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

from awscrt import checksums
from sqlmodel import Session, col, select

from hub.auth.principal import Principal
from hub.datasets.files import entries
from hub.datasets.models import Dataset, Replica
from hub.datasets.service import get_visible
from hub.errors import NotFound
from hub.sites.models import Site
from hub.types import utcnow
from shared.drs_ids import dir_object_id, file_object_id
from shared.schemas.auth import Role
from shared.schemas.datasets import ReplicaState

#: Most ids one bulk request may name.
MAX_BULK = 100
ACCESS_PREFIX = "file."


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
    root = _tree(session, ds.id)
    if not sep:
        return ds, root
    for f in root.walk_files():
        if file_object_id(ds.id, f["path"]) == object_id:
            return ds, f
    if (d := root.find(ds.id, object_id)) is not None:
        return ds, d
    raise NotFound(f"no DRS object {object_id!r}")


def find_path(session: Session, dataset_id: str, object_id: str) -> str | None:
    """The path of the file or directory (ending in '/') of ``dataset_id`` that ``object_id`` names."""
    root = _tree(session, dataset_id)
    hit = next((f["path"] for f in root.walk_files() if file_object_id(dataset_id, f["path"]) == object_id), None)
    if hit is None and (d := root.find(dataset_id, object_id)) is not None:
        hit = d.path
    return hit


def _usable_replicas(session: Session, principal: Principal, ds: Dataset) -> list[tuple[Site, Replica]]:
    embargoed = ds.embargo_until is not None and ds.embargo_until > utcnow().date()
    if embargoed and principal.role is not Role.NETWORK_ADMIN and principal.institution != ds.institution:
        return []
    rows = session.exec(
        select(Site, Replica)
        .join(Replica, col(Replica.site_id) == Site.id)
        .where(Replica.dataset_id == ds.id, Replica.state == ReplicaState.AVAILABLE.value)
        .order_by(col(Site.name))
    ).all()
    if principal.role is Role.NETWORK_ADMIN:
        return list(rows)
    return [(s, r) for s, r in rows if principal.institution and s.institution == principal.institution]


def _file_url(replica: Replica, path: str) -> str:
    return "file://" + quote(f"{replica.location.rstrip('/')}/{path}")


def _blob(session: Session, principal: Principal, ds: Dataset, f: dict[str, Any], host: str) -> dict[str, Any]:
    object_id = file_object_id(ds.id, f["path"])
    methods = [
        {"type": "file", "access_id": f"{ACCESS_PREFIX}{site.name}", "region": site.name, "available": True,
         "access_url": {"url": _file_url(replica, f["path"])}}
        for site, replica in _usable_replicas(session, principal, ds)
    ]  # fmt: skip
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


def get_access(session: Session, principal: Principal, object_id: str, access_id: str) -> dict[str, Any]:
    ds, f = _resolve(session, principal, object_id)
    if isinstance(f, dict) and access_id.startswith(ACCESS_PREFIX):
        site_name = access_id.removeprefix(ACCESS_PREFIX)
        for site, replica in _usable_replicas(session, principal, ds):
            if site.name == site_name:
                return {"url": _file_url(replica, f["path"])}
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
