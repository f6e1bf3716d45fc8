"""s3:// inputs and outputs of the agent's TES runner against a real S3 protocol endpoint
(moto's server over HTTP): objects and prefixes are fetched and verified, outputs go up as
one PutObject or as a multipart upload and are read back, a missing object or bucket fails
staging with a line naming the URL, and a copy that differs from what S3 says is caught."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from shared.schemas.jobs import JobKind, JobSpec
from shared.schemas.tes import TesFileType
from site_agent.config import AgentSettings, ConfigError, TesSection, load_settings
from site_agent.tes_run import SYSTEM_EXIT, Runner
from site_agent.tes_s3 import S3Staging, S3StagingError, _verify
from site_agent.tes_work import refusal
from tests.services import S3Server

MIB = 2**20


@pytest.fixture
def s3_env(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The runner reaches S3 with the agent's usual credential chain: here, the environment."""
    for k, v in s3.env.items():
        monkeypatch.setenv(k, v)
    return s3


def settings(s3: S3Server) -> dict[str, Any]:
    return {"endpoint_url": s3.endpoint_url, "region": s3.region, "part_size_mb": 5, "concurrency": 2}


def run(tmp_path: Path, s3: S3Server, work: dict[str, Any]) -> tuple[Runner, int]:
    workdir = tmp_path / "job"
    workdir.mkdir(parents=True, exist_ok=True)
    runner = Runner(workdir, {"work": work, "exported_dirs": [], "inputs": {}, "s3": settings(s3)})
    return runner, runner.run()


def test_s3_inputs_are_fetched_and_outputs_uploaded_and_verified(tmp_path: Path, s3_env: S3Server) -> None:
    s3 = s3_env
    bucket = s3.bucket("tes-data")
    client = s3.client()
    client.put_object(Bucket=bucket, Key="in/a.txt", Body=b"alpha\n")
    client.put_object(Bucket=bucket, Key="in/set/x.txt", Body=b"x\n")
    client.put_object(Bucket=bucket, Key="in/set/sub/y.txt", Body=b"y\n")
    client.put_object(Bucket=bucket, Key="in/set/", Body=b"")  # a "folder" marker, as some tools write
    script = (
        "mkdir -p /out/d && cat /data/a.txt /data/set/x.txt /data/set/sub/y.txt > /out/all.txt"
        " && cp -r /data/set/sub /out/d/ && head -c 11534336 /dev/urandom > /out/big.bin"
    )
    work = {
        "inputs": [
            {"path": "/data/a.txt", "url": f"s3://{bucket}/in/a.txt"},
            {"path": "/data/set", "url": f"s3://{bucket}/in/set/", "type": "DIRECTORY"},
        ],
        "executors": [{"image": "x", "command": ["sh", "-c", script]}],
        "outputs": [
            {"path": "/out/all.txt", "url": f"s3://{bucket}/results/all.txt"},
            {"path": "/out/d", "url": f"s3://{bucket}/results/d", "type": "DIRECTORY"},
            {"path": "/out/big.bin", "url": f"s3://{bucket}/results/big.bin"},
        ],
    }
    r, code = run(tmp_path, s3, work)
    assert code == 0, r.result
    body = client.get_object(Bucket=bucket, Key="results/all.txt")["Body"].read()
    assert body == b"alpha\nx\ny\n"
    assert client.get_object(Bucket=bucket, Key="results/d/sub/y.txt")["Body"].read() == b"y\n"
    big = (tmp_path / "job" / "root" / "out" / "big.bin").read_bytes()
    stored = client.get_object(Bucket=bucket, Key="results/big.bin")
    assert hashlib.sha256(stored["Body"].read()).digest() == hashlib.sha256(big).digest()
    assert stored["ETag"].strip('"').endswith("-3")  # 11 MiB in 5 MiB parts: a multipart upload
    assert {(o.url, o.size_bytes) for o in r.result.outputs} == {
        (f"s3://{bucket}/results/all.txt", "10"),
        (f"s3://{bucket}/results/d/sub/y.txt", "2"),
        (f"s3://{bucket}/results/big.bin", str(11 * MIB)),
    }
    logs = "\n".join(r.result.system_logs)
    assert f"fetched s3://{bucket}/in/set/ (2 objects, 4 bytes, each verified)" in logs, logs
    assert f"wrote s3://{bucket}/results/big.bin ({11 * MIB} bytes, size and " in logs, logs


def test_a_missing_object_or_bucket_fails_staging_naming_the_url(tmp_path: Path, s3_env: S3Server) -> None:
    bucket = s3_env.bucket("tes-empty")
    for url, said in (
        (f"s3://{bucket}/nothing/here.txt", f"no object s3://{bucket}/nothing/here.txt"),
        ("s3://no-such-bucket/a.txt", "bucket 'no-such-bucket' does not exist"),
        (f"s3://{bucket}/no-prefix", f"no objects below s3://{bucket}/no-prefix/"),
    ):
        kind = "DIRECTORY" if "prefix" in url else "FILE"
        work = {"inputs": [{"path": "/in", "url": url, "type": kind}], "executors": [{"image": "x", "command": ["true"]}]}
        r, code = run(tmp_path / url.removeprefix("s3://").replace("/", "_"), s3_env, work)
        assert code == SYSTEM_EXIT
        assert r.result.executors == []  # nothing ran
        assert any(said in line and line.startswith("system error") for line in r.result.system_logs), r.result.system_logs


def test_a_copy_that_differs_from_the_object_is_refused(tmp_path: Path, s3_env: S3Server) -> None:
    bucket = s3_env.bucket("tes-verify")
    client = s3_env.client()
    data = os.urandom(1000)
    client.put_object(Bucket=bucket, Key="one", Body=data)
    staging = S3Staging(settings(s3_env))
    copy = tmp_path / "copy"
    staging.fetch(f"s3://{bucket}/one", copy, TesFileType.FILE)
    assert copy.read_bytes() == data
    head = client.head_object(Bucket=bucket, Key="one", ChecksumMode="ENABLED")
    flipped = bytearray(data)
    flipped[500] ^= 1
    copy.write_bytes(bytes(flipped))
    with pytest.raises(S3StagingError, match="here"):
        _verify(f"s3://{bucket}/one", copy, head, part_size=None)
    copy.write_bytes(data[:-1])
    with pytest.raises(S3StagingError, match="999 bytes here, 1000 in S3"):
        _verify(f"s3://{bucket}/one", copy, head, part_size=None)


def test_a_site_refuses_buckets_it_does_not_list() -> None:
    spec = JobSpec.model_validate(
        {
            "name": "t", "kind": JobKind.GENERIC_COMMAND.value,
            "resources": {"cpus": 1, "memory_gb": 1, "walltime_s": 60},
            "tes": {"executors": [{"image": "x", "command": ["true"]}],
                    "inputs": [{"path": "/in", "url": "s3://shared-data/a"}],
                    "outputs": [{"path": "/out", "url": "s3://results-bucket/b"}]},
        }
    )  # fmt: skip
    tes = {"host_images": ["x"]}
    assert "bucket 'shared-data' is not one this site reaches" in str(refusal(AgentSettings(tes=TesSection(**tes)), spec))
    some = AgentSettings(tes=TesSection(**tes, s3_buckets=["shared-data"]))
    assert "bucket 'results-bucket'" in str(refusal(some, spec))
    assert refusal(AgentSettings(tes=TesSection(**tes, s3_buckets=["shared-data", "results-bucket"])), spec) is None


def test_a_bucket_name_s3_would_refuse_is_refused_in_site_toml(tmp_path: Path) -> None:
    config = tmp_path / "site.toml"
    config.write_text('[tes]\ns3_buckets = ["cryo-raw", "Cryo_Raw"]\n')
    with pytest.raises(ConfigError, match=r"tes\.s3_buckets.*'Cryo_Raw' is not an S3 bucket name"):
        load_settings(config)
