"""Integrity audits at the site: the catalog against what is on storage."""

from __future__ import annotations

import random
from pathlib import Path

from shared.schemas.datasets import ReplicaState, ReplicaWork
from site_agent.audit import audit
from site_agent.datasets import scan


def replica(root: Path) -> ReplicaWork:
    for i in range(6):
        (root / "sub").mkdir(parents=True, exist_ok=True)
        (root / "sub" / f"f{i}.mrc").write_bytes(bytes([i]) * (1000 + i))
    return ReplicaWork(dataset="ds-1", state=ReplicaState.AVAILABLE, location=str(root), verified_at=None, manifest=scan(root))


def test_a_whole_replica_is_clean(tmp_path: Path) -> None:
    r = audit(replica(tmp_path / "r"), sample_fraction=0.5, min_sample=1, rng=random.Random(1))
    assert r.clean and (r.files_checked, r.checksums_verified) == (6, 3)


def test_missing_unexpected_wrong_size_and_corrupt_files_are_found(tmp_path: Path) -> None:
    rep = replica(tmp_path / "r")
    root = tmp_path / "r"
    (root / "sub" / "f0.mrc").unlink()
    (root / "stray.tmp").write_text("x")
    (root / "sub" / "f1.mrc").write_bytes(b"short")
    data = bytearray((root / "sub" / "f2.mrc").read_bytes())
    data[10] ^= 0xFF
    (root / "sub" / "f2.mrc").write_bytes(bytes(data))
    (root / "link").symlink_to("/etc/passwd")  # links are not part of a dataset, as in a scan
    r = audit(rep, sample_fraction=1.0, min_sample=0)
    assert not r.clean
    assert (r.missing, r.unexpected, r.wrong_size, r.corrupt) == (["sub/f0.mrc"], ["stray.tmp"], ["sub/f1.mrc"], ["sub/f2.mrc"])
    assert "1 missing (e.g. sub/f0.mrc)" in r.summary() and "1 corrupt (e.g. sub/f2.mrc)" in r.summary()


def test_a_replica_whose_directory_is_gone_is_all_missing(tmp_path: Path) -> None:
    rep = replica(tmp_path / "r")
    rep.location = str(tmp_path / "elsewhere")
    r = audit(rep, 0.1, 1)
    assert len(r.missing) == 6 and r.checksums_verified == 0
