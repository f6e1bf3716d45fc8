"""The demo's words for what did not finish (``cryomesh_cli.demo_outcome``), on the shapes the
hub's API returns. The whole demo, cut short, is run in tests/test_demo.py."""

from __future__ import annotations

from typing import Any

from cryomesh_cli.demo_outcome import unfinished

SITES = ["kyoto-gpu", "osaka-cpu", "aws-tokyo"]


def site(name: str, reachability: str = "online", age: float | None = 1.0) -> dict[str, Any]:
    return {"name": name, "reachability": reachability, "heartbeat_age_s": age}


def job(name: str, state: str, site: str | None, explanation: str) -> dict[str, Any]:
    return {"name": name, "state": state, "site": site, "state_reason": None, "placement": {"explanation": explanation}}


DONE_STORY: dict[str, Any] = {
    "dataset": {"id": "ds-1"},
    "request": {"state": "approved"},
    "transfers": [{"state": "DONE"}],
    "job": {"state": "COMPLETE", "site": "osaka-cpu"},
    "job_explanation": "COMPLETE at osaka-cpu",
}


def test_a_finished_story_has_nothing_to_say() -> None:
    summary = {"sites": [site(n) for n in SITES]}
    assert unfinished(summary, SITES, [job("ctf", "COMPLETE", "osaka-cpu", "placed")], DONE_STORY) == []


def test_sites_that_never_came_online_and_what_was_never_started() -> None:
    summary = {"sites": [site("kyoto-gpu"), site("osaka-cpu", "unknown", None), site("aws-tokyo", "unreachable", 42.4)]}
    lines = unfinished(summary, SITES, [], {"dataset": {}, "request": {}, "job": {}, "transfers": []})
    assert lines == [
        "site osaka-cpu: unknown (no heartbeat yet)",
        "site aws-tokyo: unreachable (last heartbeat 42 s ago)",
        "job batch: not submitted (the jobs are submitted once every site is online)",
        "data story: not started (the dataset is registered once every site is online)",
    ]


def test_each_unfinished_job_and_transfer_with_its_state_and_reason() -> None:
    summary = {"sites": [site(n) for n in SITES]}
    jobs = [
        job("ctffind-batch-0", "COMPLETE", "osaka-cpu", "COMPLETE at osaka-cpu"),
        job("refine3d-1", "QUEUED", None, "QUEUED: no site can run it now: osaka-cpu: has no a100 GPUs"),
        job("motioncorr", "EXECUTOR_ERROR", "osaka-cpu", "EXECUTOR_ERROR at osaka-cpu: exit code 1"),
    ]
    transfer = {"id": "tr-9", "state": "FETCHING", "source_site": "kyoto-gpu", "dest_site": "osaka-cpu", "published_bytes": 0,
                "fetched_bytes": 12_000_000, "bytes_total": 30_000_000, "reason": None}  # fmt: skip
    story = {**DONE_STORY, "transfers": [transfer], "job": {"state": "QUEUED", "site": "osaka-cpu"},
             "job_explanation": "QUEUED at osaka-cpu: waiting for ds-1 to arrive"}  # fmt: skip
    assert unfinished(summary, SITES, jobs, story) == [
        "job refine3d-1: QUEUED — QUEUED: no site can run it now: osaka-cpu: has no a100 GPUs",
        "job motioncorr: EXECUTOR_ERROR at osaka-cpu — EXECUTOR_ERROR at osaka-cpu: exit code 1",
        "transfer tr-9 of ds-1 kyoto-gpu -> osaka-cpu: FETCHING, 12.0 MB of 30.0 MB",
        "job class2d: QUEUED at osaka-cpu — QUEUED at osaka-cpu: waiting for ds-1 to arrive",
    ]


def test_a_share_request_still_waiting() -> None:
    summary = {"sites": [site(n) for n in SITES]}
    story = {**DONE_STORY, "request": {"state": "pending"}, "transfers": [], "job": {}}
    assert unfinished(summary, SITES, [job("ctf", "COMPLETE", "osaka-cpu", "placed")], story) == [
        "share request for ds-1: pending",
        "class2d: not submitted",
    ]
