"""Real services for the tests, started on loopback in temp dirs: PostgreSQL, a
single-node Slurm cluster (munge + slurmctld + slurmd) with GPUs emulated through GRES,
and an S3 endpoint (moto's standalone server, which speaks the S3 protocol over HTTP).

Under CI=true a missing component fails the test run; elsewhere it skips those tests.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cryomesh_cli.devslurm import SlurmCluster, free_port, unavailable_reason, wait_for
from cryomesh_cli.devslurm import slurm_cluster as _slurm_cluster

__all__ = [
    "CHROMIUM",
    "PostgresServer",
    "S3Server",
    "SlurmCluster",
    "free_port",
    "missing",
    "postgres_server",
    "s3_server",
    "slurm_cluster",
    "wait_for",
]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CHROMIUM = "/usr/bin/chromium"


def missing(what: str) -> None:
    message = f"{what} is not available; `make test` installs it when run as root"
    if IN_CI:
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


# ---------------------------------------------------------------- PostgreSQL


def _pg_bindir() -> Path | None:
    for base in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (base / "initdb").exists():
            return base
    return None


@dataclass
class PostgresServer:
    host: str
    port: int
    user: str

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(host=self.host, port=self.port, user=self.user, dbname="postgres", autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]


@contextmanager
def postgres_server(durable: bool = False) -> Iterator[PostgresServer]:
    """A throw-away PostgreSQL server. Tests run it with ``fsync``, ``synchronous_commit``
    and full-page writes off (nothing there needs to survive a crash); ``durable=True``
    keeps PostgreSQL's defaults, as production runs (the load benchmark)."""
    external = os.environ.get("CRYOMESH_TEST_PG")  # host:port:user of a server you run yourself
    if external:
        host, port, user = external.split(":")
        yield PostgresServer(host, int(port), user)
        return
    bindir = _pg_bindir()
    if bindir is None:
        missing("PostgreSQL (Debian package postgresql)")
        return
    run_as: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            missing("the postgres system user")
        run_as = ["runuser", "-u", "postgres", "--"]
    tmp = Path(tempfile.mkdtemp(prefix="cryomesh-pg-"))
    if run_as:
        shutil.chown(tmp, "postgres", "postgres")
    data, port = tmp / "data", free_port()
    subprocess.run(
        [*run_as, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {tmp}"
    if not durable:
        opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    subprocess.run(
        [*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(tmp / "pg.log"), "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield PostgresServer("127.0.0.1", port, "postgres")
    finally:
        subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- Slurm


@contextmanager
def slurm_cluster(gpus: int = 4, gpu_type: str = "a100") -> Iterator[SlurmCluster]:
    reason = unavailable_reason()
    if reason:
        missing(reason)
        return
    with _slurm_cluster(gpus, gpu_type) as cluster:
        yield cluster


@dataclass
class S3Server:
    """moto's S3 server on loopback. It checks request signatures' form but not their
    expiry, so tests of URL lifetimes read the URL's X-Amz-Expires instead."""

    endpoint_url: str
    access_key: str = "cryomesh-test"
    secret_key: str = "cryomesh-test-secret"
    region: str = "us-east-1"

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )

    def bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name


@contextmanager
def s3_server() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Server(f"http://127.0.0.1:{port}")
    finally:
        server.stop()
