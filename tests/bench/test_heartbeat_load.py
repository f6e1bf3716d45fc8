"""The heartbeat load test (bench/heartbeat_load.py) at a tiny scale: it runs every mode
against a real hub process and reports them, and it never leaves a hub behind, even when
interrupted. Its numbers are not checked here: performance is measured, not asserted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.services import wait_for

pytestmark = pytest.mark.slow

TINY = ["--sites", "12", "--senders", "2", "--timeout", "20", "--recover", "20", "--view-requests", "1"]


def bench(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    # TMPDIR: the bench's temp dirs land in tmp_path, where the test can see they are gone.
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "bench.heartbeat_load", *TINY, *args]
    # SIGINT as at a terminal: a process started in the background by a non-interactive shell
    # (as CI may start the suite) inherits SIGINT ignored, and Python then never sees Ctrl-C.
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip


def hub_processes(bench_pid: int) -> list[psutil.Process]:
    try:
        children = psutil.Process(bench_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [p for p in children if "serve" in " ".join(p.cmdline())]


def test_every_mode_runs_and_is_reported(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    proc = bench(tmp_path, "--duration", "1", "--open-loop", "--open-rate", "4", "--open-duration", "2",
                 "--burst", "--burst-deadline", "60", "--json", str(out))  # fmt: skip
    stdout, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, stdout
    [result] = json.loads(out.read_text())
    assert result["sites"] == 12 and result["db"] == "sqlite" and result["workers"] == 1
    phases = {(p["phase"], p.get("senders")) for p in result["phases"]}
    assert phases == {("warm-up (each agent once)", 16), ("healthz", 2), ("whoami", 2), ("heartbeat", 2),
                      ("open-loop heartbeat", None), ("burst", None)}  # fmt: skip
    for p in result["phases"]:
        # Every request sent is accounted for, by an answer's status or a client error.
        assert sum(p["statuses"].values()) + sum(p["client_errors"].values()) == p["requests"] > 0, p
        assert p["hub_rss_peak_mb"] > 10
    warm = result["phases"][0]
    assert warm["requests"] == 12  # each agent once, each with its own token
    assert set(result["views"]) == {"/api/v1/network/summary", "/api/v1/dashboard/overview"}
    assert "### sqlite, 1 hub process(es), 12 sites" in stdout
    assert "| heartbeat | 2 |" in stdout and "| burst |" in stdout
    assert not list(tmp_path.glob("cryomesh-load-*")), "the bench left its temp dir behind"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_run_stops_its_hub(tmp_path: Path, sig: signal.Signals) -> None:
    proc = bench(tmp_path, "--duration", "600")
    try:
        wait_for(lambda: hub_processes(proc.pid) or proc.poll() is not None, 120, "the bench to start its hub")
        hubs = hub_processes(proc.pid)
        assert hubs, proc.communicate()[0]
        proc.send_signal(sig)
        try:
            proc.communicate(timeout=240)  # cleanup on a busy machine can take a while
        except subprocess.TimeoutExpired:  # where it hangs: every thread's stack (faulthandler, SIGUSR1)
            proc.send_signal(signal.SIGUSR1)
            time.sleep(2)
            proc.kill()
            pytest.fail(f"the bench did not stop within 240 s of {sig.name}:\n{proc.communicate()[0][-20000:]}")
        assert proc.returncode != 0
        _, alive = psutil.wait_procs(hubs, timeout=30)
        assert not alive, f"hub processes left running: {[p.pid for p in alive]}"
        assert not list(tmp_path.glob("cryomesh-load-*")), "the bench left its temp dir behind"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for p in hub_processes(proc.pid):
            p.kill()
