"""Real services for the tests, started on loopback in temp dirs: PostgreSQL and a
single-node Slurm cluster (munge + slurmctld + slurmd) with GPUs emulated through GRES.

Under CI=true a missing component fails the test run; elsewhere it skips those tests.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(what: str) -> None:
    message = f"{what} is not available; `make test` installs it when run as root"
    if IN_CI:
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: object, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


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
def postgres_server() -> Iterator[PostgresServer]:
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
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {tmp} -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
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


@dataclass
class SlurmCluster:
    conf: Path
    directory: Path
    node: str
    gpus: int
    gpu_type: str

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *argv: str, check: bool = True) -> str:
        proc = subprocess.run(list(argv), env=self.env(), capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr}")
        return proc.stdout

    def cancel_all(self) -> None:
        self.run("scancel", "--user", pwd.getpwuid(os.geteuid()).pw_name, check=False)
        wait_for(lambda: not self.run("squeue", "-h", "-o", "%i").strip(), 30, "the Slurm queue to drain")


SLURM_CONF = """\
ClusterName=cryomesh-test
SlurmctldHost={node}
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
AuthInfo=socket={dir}/munge.sock
CredType=cred/munge
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
ReturnToService=2
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerParameters=sched_interval=1
NodeName={node} CPUs={cpus} RealMemory={mem} Gres=gpu:{gpu_type}:{gpus} State=UNKNOWN
PartitionName=gpu Nodes={node} Default=YES MaxTime=INFINITE State=UP
PartitionName=cpu Nodes={node} MaxTime=INFINITE State=UP
"""


@contextmanager
def slurm_cluster(gpus: int = 4, gpu_type: str = "a100") -> Iterator[SlurmCluster]:
    tools = ["munged", "slurmctld", "slurmd", "sinfo", "scontrol", "squeue", "sbatch", "scancel"]
    if any(shutil.which(t) is None and not Path("/usr/sbin", t).exists() for t in tools):
        missing("Slurm and munge (Debian packages slurm-wlm and munge)")
        return
    if os.geteuid() != 0:
        missing("root (the test Slurm cluster runs slurmd as root)")
        return
    d = Path(tempfile.mkdtemp(prefix="cryomesh-slurm-"))
    for sub in ("state", "spool"):
        (d / sub).mkdir()
    key = d / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    subprocess.run(
        [
            "munged",
            f"--key-file={key}",
            f"--socket={d}/munge.sock",
            f"--pid-file={d}/munged.pid",
            f"--log-file={d}/munged.log",
            f"--seed-file={d}/munged.seed",
            "--force",
        ],
        check=True,
        capture_output=True,
    )
    for i in range(gpus):  # GRES needs device files; /dev/null's numbers stand in for GPUs
        subprocess.run(["mknod", str(d / f"fakegpu{i}"), "c", "1", "3"], check=True)
    node = socket.gethostname().split(".")[0]
    conf = d / "slurm.conf"
    conf.write_text(
        SLURM_CONF.format(
            node=node,
            ctld_port=free_port(),
            d_port=free_port(),
            dir=d,
            cpus=os.cpu_count() or 1,
            mem=2000,
            gpus=gpus,
            gpu_type=gpu_type,
        )
    )
    (d / "gres.conf").write_text(f"Name=gpu Type={gpu_type} File={d}/fakegpu[0-{gpus - 1}]\n")
    cluster = SlurmCluster(conf, d, node, gpus, gpu_type)
    env = cluster.env()
    try:
        subprocess.run(["slurmctld", "-i"], env=env, check=True, capture_output=True)
        subprocess.run(["slurmd"], env=env, check=True, capture_output=True)

        def ready() -> bool:
            out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True)
            return out.returncode == 0 and "idle" in out.stdout

        wait_for(ready, 30, "slurmd to register with slurmctld")
        yield cluster
    finally:
        for pidfile in ("slurmd.pid", "slurmctld.pid", "munged.pid"):
            with contextlib.suppress(OSError, ValueError):
                os.kill(int((d / pidfile).read_text().strip()), 15)
        time.sleep(0.3)
        shutil.rmtree(d, ignore_errors=True)
