"""bench.process_scaling runs: its hub processes are held to their quota and all answer."""

from __future__ import annotations

import os

import pytest

from bench.process_scaling import CGROUP_CPU, main


@pytest.mark.skipif(not os.access(CGROUP_CPU, os.W_OK), reason="needs root and the cgroup v1 cpu controller")
def test_each_process_is_held_to_its_quota_and_every_heartbeat_is_answered() -> None:
    rows = main(["--workers", "1", "2", "--quota", "0.1", "--sites", "20", "--senders", "8", "--duration", "2"])
    assert [r["workers"] for r in rows] == [1, 2]
    for r in rows:
        assert r["ok"] > 0 and set(r["statuses"]) == {"200"}, r
        assert r["hub_cpu_cores"] <= 0.1 * r["workers"] * 1.3, "the quota holds"
    assert not [p for p in CGROUP_CPU.iterdir() if p.name.startswith(f"cryomesh-bench-{os.getpid()}-")], "groups removed"
