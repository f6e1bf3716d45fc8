"""A single-node Slurm cluster on this machine, for the demo and the tests: munged,
slurmctld and slurmd with state and logs in a temp dir, GPUs emulated through GRES
(character devices standing in for GPUs). Needs root and Debian's slurm-wlm and munge."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

TOOLS = ("munged", "slurmctld", "slurmd", "sinfo", "scontrol", "squeue", "sbatch", "scancel")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def unavailable_reason() -> str | None:
    """Why a local Slurm cluster cannot be started here, or None if it can."""
    if any(shutil.which(t) is None and not Path("/usr/sbin", t).exists() for t in TOOLS):
        return "Slurm and munge are not installed (Debian packages slurm-wlm and munge)"
    if os.geteuid() != 0:
        return "a local Slurm cluster needs root (slurmd runs as root)"
    return None


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


#: What both local clusters share (this one and cryomesh_cli.devcloud's elastic one): munge,
#: daemons as root, state and logs under ``{dir}``. ``{node}`` is "" for one slurmd, or
#: ``.%n``/``/%n`` where several slurmd (one per node name) share the directory.
SLURM_CONF_HEADER = """\
ClusterName={cluster}
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
AuthInfo=socket={dir}/munge.sock
CredType=cred/munge
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool{node_dir}
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd{node_dot}.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd{node_dot}.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerParameters=sched_interval=1
"""


def slurm_conf_header(cluster: str, host: str, directory: Path, per_node: bool = False) -> str:
    """The shared lines of a local cluster's slurm.conf, on free ports. ``per_node``: each
    node's slurmd has its own spool directory, pid and log file (``%n``, its node name)."""
    return SLURM_CONF_HEADER.format(
        cluster=cluster, host=host, ctld_port=free_port(), d_port=free_port(), dir=directory,
        node_dir="/%n" if per_node else "", node_dot=".%n" if per_node else "",
    )  # fmt: skip


SLURM_CONF = """\
GresTypes=gpu
NodeName={node} CPUs={cpus} RealMemory={mem} Gres=gpu:{gpu_type}:{gpus} State=UNKNOWN
PartitionName=gpu Nodes={node} Default=YES MaxTime=INFINITE State=UP
PartitionName=cpu Nodes={node} MaxTime=INFINITE State=UP
"""


@contextmanager
def slurm_cluster(gpus: int = 4, gpu_type: str = "a100") -> Iterator[SlurmCluster]:
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(reason)
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
        slurm_conf_header("cryomesh-test", node, d)
        + SLURM_CONF.format(node=node, cpus=os.cpu_count() or 1, mem=2000, gpus=gpus, gpu_type=gpu_type)
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
