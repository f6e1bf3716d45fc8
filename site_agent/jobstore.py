"""The agent's durable state: one file per job it holds, and an outbox of reports.

Both live under the state directory (0700) and are written atomically, so a killed agent
loses nothing: on restart it re-adopts the jobs it held and sends the reports it had not
had acknowledged, in order.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from site_agent.credentials import ensure_state_dir


def write_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@dataclass
class JobHandle:
    attempt_id: str
    job_id: str
    attempt: int
    executor: str
    workdir: str
    spec: dict[str, Any]
    institution: str
    local_id: str | None = None
    seq: int = 0
    state: str = "INITIALIZING"  # last state reported
    cancel_requested: bool = False
    done: bool = False
    started_at: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class JobStore:
    def __init__(self, state_dir: Path) -> None:
        self.jobs_dir = ensure_state_dir(state_dir) / "jobs"
        self.outbox_dir = state_dir / "outbox"
        for d in (self.jobs_dir, self.outbox_dir):
            d.mkdir(mode=0o700, exist_ok=True)

    def save(self, h: JobHandle) -> None:
        write_atomic(self.jobs_dir / f"{h.attempt_id}.json", asdict(h))

    def forget(self, h: JobHandle) -> None:
        (self.jobs_dir / f"{h.attempt_id}.json").unlink(missing_ok=True)

    def active(self) -> list[JobHandle]:
        out = []
        for f in sorted(self.jobs_dir.glob("*.json")):
            h = JobHandle(**json.loads(f.read_text()))
            if not h.done:
                out.append(h)
        return out

    def next_report(self, h: JobHandle, body: dict[str, Any]) -> None:
        """Give the report the next sequence number and put it in the outbox, durably."""
        h.seq += 1
        self.save(h)
        name = f"{time.time_ns():020d}-{h.attempt_id}-{h.seq:06d}.json"
        write_atomic(self.outbox_dir / name, {"attempt_id": h.attempt_id, "body": {**body, "seq": h.seq}})

    def pending(self) -> list[tuple[Path, dict[str, Any]]]:
        return [(f, json.loads(f.read_text())) for f in sorted(self.outbox_dir.glob("*.json"))]
