"""The transfer engine on both exchange stores: the S3 one against moto's server over HTTP.

No hub here: publish and fetch are called directly, as the agent's transfer loop calls
them. The end-to-end tests with a hub and agent processes are in tests/test_transfers.py.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from shared.schemas.datasets import ChecksumAlgorithm, Manifest, ManifestFile
from site_agent.config import TransfersSection
from site_agent.datasets import scan
from site_agent.transfers.engine import Cancelled, Progress, fetch, publish
from site_agent.transfers.exchange import MIB, FsPublisher, FsReader, S3Publisher, TransferError, UrlReader, safe_join
from site_agent.transfers.journal import Journal
from tests.services import S3Server


def make_files(root: Path, sizes: dict[str, int]) -> Manifest:
    for rel, size in sizes.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(size))
    return scan(root)


def same_tree(a: Path, b: Path) -> bool:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return files_a == files_b and all((a / f).read_bytes() == (b / f).read_bytes() for f in files_a)


def s3_cfg(s3: S3Server, bucket: str, **kw: Any) -> TransfersSection:
    return TransfersSection(exchange="s3", endpoint_url=s3.endpoint_url, bucket=bucket, region=s3.region, **kw)


@pytest.fixture
def aws_env(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    for k, v in s3.env.items():
        monkeypatch.setenv(k, v)
    return s3


def roundtrip(tmp: Path, publisher: Any, reader_of: Any, manifest: Manifest, src: Path, part: int, conc: int = 4) -> Path:
    never = threading.Event()
    out = publish(src, manifest.files, publisher, Journal(tmp / "pub.jsonl"), Progress(), conc, never)
    assert out.ok, out.errors
    access = publisher.access([f.path for f in manifest.files])
    reader = reader_of(access)
    try:
        prog = Progress()
        got = fetch(
            reader, manifest.files, tmp / "copy", manifest.algorithm, Journal(tmp / "fetch.jsonl"), prog, part, conc, never
        )
    finally:
        reader.close()
    assert got.ok and sorted(got.done) == sorted(f.path for f in manifest.files), got
    assert prog.bytes_done == manifest.total_bytes and prog.files_done == len(manifest.files)
    return tmp / "copy"


def test_fs_exchange_moves_every_file_in_parts(tmp_path: Path) -> None:
    src = tmp_path / "src"
    manifest = make_files(src, {"a.mrc": 3 * MIB + 17, "sub/b.mrcs": 5000, "empty.star": 0, "sub/deep/c.tif": MIB})
    pub = FsPublisher(tmp_path / "exchange", "tr-1", part_size=MIB // 2)
    copy = roundtrip(tmp_path, pub, lambda a: FsReader(a.root), manifest, src, part=MIB // 4)
    assert same_tree(src, copy)
    pub.remove()
    assert not (tmp_path / "exchange" / "tr-1").exists()


def test_s3_exchange_multipart_and_presigned_urls(tmp_path: Path, aws_env: S3Server) -> None:
    bucket = aws_env.bucket("xchg-roundtrip")
    src = tmp_path / "src"
    manifest = make_files(src, {"movie.mrc": 12 * MIB + 5, "small.mrcs": 70_000, "empty.star": 0})
    pub = S3Publisher(s3_cfg(aws_env, bucket, presign_ttl_s=120), "tr-s3", part_size=MIB)
    assert pub.part_size == 5 * MIB, "S3 parts are at least 5 MiB"
    access = pub.access(["movie.mrc"])
    url = access.urls["movie.mrc"]
    assert parse_qs(urlparse(url).query)["X-Amz-Expires"] == ["120"], "one short-lived URL per object"
    copy = roundtrip(tmp_path, pub, lambda a: UrlReader(a.urls, 4), manifest, src, part=2 * MIB)
    assert same_tree(src, copy)
    keys = {o["Key"] for o in aws_env.client().list_objects_v2(Bucket=bucket)["Contents"]}
    assert keys == {f"cryomesh-exchange/tr-s3/{f.path}" for f in manifest.files}
    pub.remove()
    assert "Contents" not in aws_env.client().list_objects_v2(Bucket=bucket)


class KillAfter:
    """Wraps a publisher or reader and sets ``cancel`` after ``n`` parts, as a kill would."""

    def __init__(self, inner: Any, n: int, cancel: threading.Event) -> None:
        self.inner, self.n, self.cancel, self.lock = inner, n, cancel, threading.Lock()
        self.part_size = getattr(inner, "part_size", 0)

    def _tick(self) -> None:
        with self.lock:
            self.n -= 1
            if self.n <= 0:
                self.cancel.set()

    def put_part(self, *a: Any) -> str:
        r = self.inner.put_part(*a)
        self._tick()
        return str(r)

    def read(self, *a: Any) -> bytes:
        data = self.inner.read(*a)
        self._tick()
        return bytes(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_stopped_s3_publish_resumes_the_same_multipart_upload(tmp_path: Path, aws_env: S3Server) -> None:
    bucket = aws_env.bucket("xchg-resume")
    src = tmp_path / "src"
    manifest = make_files(src, {"movie1.mrc": 30 * MIB, "movie2.mrc": 20 * MIB})
    cfg = s3_cfg(aws_env, bucket)
    conc, journal_path = 2, tmp_path / "pub.jsonl"
    stop = threading.Event()
    first = KillAfter(S3Publisher(cfg, "tr-r", 5 * MIB), 3, stop)
    with pytest.raises(Cancelled):
        publish(src, manifest.files, first, Journal(journal_path), Progress(), conc, stop)  # type: ignore[arg-type]
    journal = Journal(journal_path)
    done_before = sum(len(r.parts) for r in journal.files.values())
    uploads = {p: r.upload_id for p, r in journal.files.items()}
    assert done_before >= 3 and all(uploads.values())
    prog = Progress()
    out = publish(src, manifest.files, S3Publisher(cfg, "tr-r", 5 * MIB), journal, prog, conc, threading.Event())
    assert out.ok, out.errors
    resent = journal.resent_bytes
    assert resent <= conc * 5 * MIB, f"re-sent {resent} bytes after the stop"
    assert prog.moved + done_before * 5 * MIB - resent <= manifest.total_bytes
    assert {p: Journal(journal_path).files[p].upload_id for p in uploads} == uploads, "the same uploads were completed"
    copy = tmp_path / "copy"
    for f in manifest.files:
        copy.joinpath(f.path).parent.mkdir(parents=True, exist_ok=True)
        aws_env.client().download_file(bucket, f"cryomesh-exchange/tr-r/{f.path}", str(copy / f.path))
    assert same_tree(src, copy)


def test_a_stopped_fetch_resumes_and_resends_at_most_concurrency_parts(tmp_path: Path) -> None:
    src = tmp_path / "src"
    manifest = make_files(src, {f"m{i}.mrc": 2 * MIB + i for i in range(4)})
    pub = FsPublisher(tmp_path / "exchange", "tr-f", MIB)
    assert publish(src, manifest.files, pub, Journal(tmp_path / "p.jsonl"), Progress(), 4, threading.Event()).ok
    root = str(pub.access([]).root)
    part, conc, jp = MIB // 4, 3, tmp_path / "f.jsonl"
    stop = threading.Event()
    with pytest.raises(Cancelled):
        fetch(KillAfter(FsReader(root), 7, stop), manifest.files, tmp_path / "copy", manifest.algorithm,  # type: ignore[arg-type]
              Journal(jp), Progress(), part, conc, stop)  # fmt: skip
    journal = Journal(jp)
    prog = Progress()
    out = fetch(
        FsReader(root), manifest.files, tmp_path / "copy", manifest.algorithm, journal, prog, part, conc, threading.Event()
    )
    assert out.ok and prog.files_done == 4
    assert 0 < prog.moved < manifest.total_bytes, "the second run skipped what the first had finished"
    assert journal.resent_bytes <= conc * part
    assert same_tree(src, tmp_path / "copy")


@pytest.mark.parametrize("store", ["fs", "s3"])
def test_a_flipped_byte_in_the_exchange_is_caught_and_the_file_fetched_again(
    tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    src = tmp_path / "src"
    manifest = make_files(src, {"good.mrc": 300_000, "bad.mrc": 6 * MIB + 3})
    if store == "s3":
        s3 = request.getfixturevalue("aws_env")
        bucket = s3.bucket("xchg-flip")
        pub: Any = S3Publisher(s3_cfg(s3, bucket), "tr-x", 5 * MIB)

        def flip() -> None:
            key = "cryomesh-exchange/tr-x/bad.mrc"
            body = bytearray(s3.client().get_object(Bucket=bucket, Key=key)["Body"].read())
            body[4_000_000] ^= 0x01
            s3.client().put_object(Bucket=bucket, Key=key, Body=bytes(body))

        def reader(a: Any) -> Any:
            return UrlReader(a.urls, 4)
    else:
        pub = FsPublisher(tmp_path / "exchange", "tr-x", MIB)

        def flip() -> None:
            with (tmp_path / "exchange" / "tr-x" / "bad.mrc").open("r+b") as fh:
                fh.seek(4_000_000)
                b = fh.read(1)
                fh.seek(4_000_000)
                fh.write(bytes([b[0] ^ 1]))

        def reader(a: Any) -> Any:
            return FsReader(a.root)

    never = threading.Event()
    pj = Journal(tmp_path / "p.jsonl")
    assert publish(src, manifest.files, pub, pj, Progress(), 4, never).ok
    flip()
    fj = Journal(tmp_path / "f.jsonl")
    paths = [f.path for f in manifest.files]
    out = fetch(reader(pub.access(paths)), manifest.files, tmp_path / "copy", manifest.algorithm, fj, Progress(), MIB, 4, never)
    assert out.corrupt == ["bad.mrc"] and out.done == ["good.mrc"]
    assert not (tmp_path / "copy" / "bad.mrc").exists(), "a file failing its checks is not kept"
    assert not fj.file("bad.mrc").done and not fj.file("bad.mrc").parts
    # The source sends it again; the next pass fetches it afresh and it checks out.
    pj.reset("bad.mrc")
    bad = [f for f in manifest.files if f.path == "bad.mrc"]
    assert publish(src, bad, pub, pj, Progress(), 4, never).ok
    out = fetch(reader(pub.access(paths)), manifest.files, tmp_path / "copy", manifest.algorithm, fj, Progress(), MIB, 4, never)
    assert out.ok and out.done == ["bad.mrc"]
    assert same_tree(src, tmp_path / "copy")


def test_sha256_manifests_are_checked_too(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_files(src, {"x.mrc": 100_000})
    manifest = scan(src, ChecksumAlgorithm.SHA256)
    pub = FsPublisher(tmp_path / "exchange", "tr-sha", MIB)
    assert same_tree(src, roundtrip(tmp_path, pub, lambda a: FsReader(a.root), manifest, src, part=MIB))
    lying = Manifest.model_construct(
        algorithm=ChecksumAlgorithm.SHA256, files=[ManifestFile(path="x.mrc", size=100_000, checksum="0" * 64)], digest="x"
    )
    out = fetch(FsReader(str(pub.dir)), lying.files, tmp_path / "copy2", lying.algorithm, Journal(tmp_path / "j2.jsonl"),
                Progress(), MIB, 2, threading.Event())  # fmt: skip
    assert out.corrupt == ["x.mrc"]


@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/passwd", "a/../../b", "ok/./x"])
def test_paths_leaving_the_dataset_are_refused_at_transfer(tmp_path: Path, path: str) -> None:
    with pytest.raises(TransferError):
        safe_join(tmp_path, path)
    # A manifest that skipped validation (model_construct) still cannot write outside.
    evil = [ManifestFile.model_construct(path=path, size=5, checksum="AAAAAAAAAAA=")]
    (tmp_path / "exchange").mkdir()
    out = fetch(FsReader(str(tmp_path / "exchange")), evil, tmp_path / "copy", ChecksumAlgorithm.CRC64NVME,
                Journal(tmp_path / "j.jsonl"), Progress(), MIB, 2, threading.Event())  # fmt: skip
    assert path in out.errors and not out.done
    out = publish(tmp_path / "exchange", evil, FsPublisher(tmp_path / "x", "t", MIB), Journal(tmp_path / "p.jsonl"),
                  Progress(), 2, threading.Event())  # fmt: skip
    assert path in out.errors
    assert not (tmp_path.parent / "etc").exists()


def test_a_symlink_out_of_the_dataset_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    root.mkdir()
    (tmp_path / "secret").write_text("no")
    (root / "link").symlink_to(tmp_path / "secret")
    (root / "dir").symlink_to(tmp_path)
    for rel in ("link", "dir/secret"):
        with pytest.raises(TransferError, match="outside"):
            safe_join(root, rel)
