"""What of the demo's story did not finish, and why, in lines a person can act on.

Pure functions over what the hub's API returned (the network summary, the demo's jobs with
their placement explanations, the data story's dataset, share request, transfers and job),
so the words can be tested without running a network.
"""

from __future__ import annotations

from typing import Any

from shared.units import human_bytes


def _job_line(label: str, job: dict[str, Any], explanation: str | None) -> str:
    where = f" at {job['site']}" if job.get("site") else ""
    why = explanation or job.get("state_reason") or "no reason recorded"
    return f"{label}: {job['state']}{where} — {why}"


def _sites(summary: dict[str, Any], expected: list[str]) -> list[str]:
    seen = {s["name"]: s for s in summary.get("sites", [])}
    out = []
    for name in expected:
        s = seen.get(name)
        if s is None:
            out.append(f"site {name}: not registered")
        elif s["reachability"] != "online":
            age = s.get("heartbeat_age_s")
            heard = "no heartbeat yet" if age is None else f"last heartbeat {age:.0f} s ago"
            out.append(f"site {name}: {s['reachability']} ({heard})")
    return out


def _story(story: dict[str, Any]) -> list[str]:
    if not story.get("dataset"):
        return ["data story: not started (the dataset is registered once every site is online)"]
    out = []
    ds = story["dataset"]["id"]
    request = story.get("request") or {}
    if request.get("state") != "approved":
        out.append(f"share request for {ds}: {request.get('state', 'not made')}")
    transfers = story.get("transfers") or []
    for t in transfers:
        if t["state"] != "DONE":
            done = t["published_bytes"] if t["state"] in ("QUEUED", "PUBLISHING") else t["fetched_bytes"]
            reason = f" — {t['reason']}" if t.get("reason") else ""
            out.append(
                f"transfer {t['id']} of {ds} {t['source_site']} -> {t['dest_site']}: {t['state']}, "
                f"{human_bytes(done)} of {human_bytes(t['bytes_total'])}{reason}"
            )
    if request.get("state") == "approved" and not transfers:
        out.append(f"transfer of {ds}: not started")
    job = story.get("job") or {}
    if not job:
        out.append("class2d: not submitted")
    elif job["state"] != "COMPLETE":
        out.append(_job_line("job class2d", job, story.get("job_explanation")))
    return out


def unfinished(
    summary: dict[str, Any], expected_sites: list[str], jobs: list[dict[str, Any]], story: dict[str, Any]
) -> list[str]:
    """One line per thing that did not finish or did not succeed; empty when the story finished.

    ``jobs`` are the demo's batch as ``demo._job_entry`` gives them (with ``placement.explanation``),
    empty when the batch was never submitted; ``story`` is ``DataStory.outcome()``."""
    lines = _sites(summary, expected_sites)
    if not jobs:
        lines.append("job batch: not submitted (the jobs are submitted once every site is online)")
    for j in jobs:
        if j["state"] != "COMPLETE":
            lines.append(_job_line(f"job {j['name']}", j, j["placement"]["explanation"]))
    return lines + _story(story)
