"""An elastic Slurm cluster on this machine, run as AWS ParallelCluster runs Slurm, for the
tests: partitions of power-saving ``State=CLOUD`` nodes that exist only while work needs them,
in on-demand and spot twins named as GoToCloud names them (``c5-vcpu1``, ``c5-vcpu1-spot``).

Slurm's own power saving does the work. When a job needs a powered-down node, slurmctld runs
``ResumeProgram``, which "boots" the node: after ``boot_s`` seconds it starts a slurmd for that
node name (``slurmd -N <node>``; each node has its own ``Port`` and its own pid, log and spool
files through ``%n``), and the node registers. ``SuspendProgram`` stops that slurmd once the
node has been idle for ``SuspendTime``. Only the instances are pretended; Slurm's states
(POWERED_DOWN, POWERING_UP, CONFIGURING, POWERING_DOWN) and timeouts are its own.
Needs root and Debian's slurm-wlm and munge, like :mod:`cryomesh_cli.devslurm`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryomesh_cli.devslurm import SlurmCluster, free_port, slurm_conf_header, unavailable_reason, wait_for

CONF = """\
TreeWidth=65533
# Power saving, as ParallelCluster configures it (its times are minutes; these are seconds).
PrivateData=cloud
SlurmctldParameters=idle_on_node_suspend,power_save_interval=1,power_save_min_interval=0
ResumeProgram={dir}/resume
SuspendProgram={dir}/suspend
ResumeTimeout={resume_timeout}
SuspendTime={suspend_time}
SuspendTimeout={suspend_timeout}
ResumeRate=0
SuspendRate=0
"""

RESUME = """\
#!/bin/sh
# ResumeProgram: "boot" each node named in $1 (a Slurm hostlist) by starting its slurmd later.
export SLURM_CONF={conf}
for node in $({scontrol} show hostnames "$1"); do
    (sleep {boot_s}; exec {slurmd} -N "$node" -b) </dev/null >>{dir}/resume.log 2>&1 &
    echo $! > {dir}/boot.$node.pid
done
"""

SUSPEND = """\
#!/bin/sh
# SuspendProgram: "stop the instance" of each node named in $1: its slurmd exits.
export SLURM_CONF={conf}
for node in $({scontrol} show hostnames "$1"); do
    kill "$(cat {dir}/boot.$node.pid 2>/dev/null)" 2>/dev/null
    kill "$(cat {dir}/slurmd.$node.pid 2>/dev/null)" 2>/dev/null
done
"""


def _tool(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def _kill_pidfile(path: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(path.read_text().strip()), signal.SIGTERM)


@contextmanager
def elastic_cluster(
    partitions: tuple[str, ...] = ("c5-vcpu1",),
    nodes: int = 1,
    boot_s: float = 3,
    suspend_time_s: int = 10,
    resume_timeout_s: int = 60,
) -> Iterator[SlurmCluster]:
    """Each of ``partitions`` and its ``-spot`` twin with ``nodes`` CLOUD nodes of 1 CPU,
    named ``<partition>-dy-<i>`` (ParallelCluster's dynamic nodes), all powered down."""
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    d = Path(tempfile.mkdtemp(prefix="cryomesh-cloud-"))
    (d / "state").mkdir()
    key = d / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    subprocess.run(
        ["munged", f"--key-file={key}", f"--socket={d}/munge.sock", f"--pid-file={d}/munged.pid",
         f"--log-file={d}/munged.log", f"--seed-file={d}/munged.seed", "--force"],
        check=True, capture_output=True,
    )  # fmt: skip
    host = socket.gethostname().split(".")[0]
    conf = d / "slurm.conf"
    lines = [slurm_conf_header("cryomesh-cloud", host, d, per_node=True)
             + CONF.format(dir=d, resume_timeout=resume_timeout_s, suspend_time=suspend_time_s, suspend_timeout=5)]  # fmt: skip
    for part in partitions:
        for twin in (part, f"{part}-spot"):
            names = [f"{twin}-dy-{i}" for i in range(1, nodes + 1)]
            for name in names:
                (d / "spool" / name).mkdir(parents=True)
                lines.append(f"NodeName={name} NodeAddr=127.0.0.1 NodeHostname={host} Port={free_port()} "
                             "CPUs=1 RealMemory=200 State=CLOUD")  # fmt: skip
            lines.append(f"PartitionName={twin} Nodes={','.join(names)} MaxTime=INFINITE State=UP")
    conf.write_text("\n".join(lines) + "\n")
    for name, text in (("resume", RESUME), ("suspend", SUSPEND)):
        script = d / name
        script.write_text(text.format(conf=conf, dir=d, boot_s=boot_s, scontrol=_tool("scontrol"), slurmd=_tool("slurmd")))
        script.chmod(0o755)
    cluster = SlurmCluster(conf, d, f"{partitions[0]}-dy-1", 0, "")
    env = cluster.env()
    try:
        subprocess.run(["slurmctld", "-i"], env=env, check=True, capture_output=True)

        def ready() -> bool:
            out = subprocess.run(["sinfo", "-h", "-o", "%P"], env=env, capture_output=True, text=True)
            return out.returncode == 0 and bool(out.stdout.strip())

        wait_for(ready, 30, "slurmctld to answer")
        yield cluster
    finally:
        for boot in d.glob("boot.*.pid"):
            _kill_pidfile(boot)
        for pidfile in [*d.glob("slurmd.*.pid"), d / "slurmctld.pid", d / "munged.pid"]:
            _kill_pidfile(pidfile)
        time.sleep(0.3)
        shutil.rmtree(d, ignore_errors=True)
