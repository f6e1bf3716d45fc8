"""What a transfer has done so far, on disk, so a killed agent resumes where it stopped.

An append-only JSON-lines file per transfer and side. A part is written as *started*
before its first byte moves and as *done* once it is safe; after a restart only parts
without a done record are sent again, so at most ``concurrency`` parts are re-sent. The
count of parts started more than once is the measured re-sent volume.

Lines are flushed to the operating system at once (they survive the agent being killed);
they are not fsynced per part, so a machine crash may lose the last few records, which
only means those parts are sent again.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class FileRecord:
    upload_id: str | None = None
    parts: dict[int, str] = field(default_factory=dict)  # part number -> etag ("" where none)
    started: dict[int, int] = field(default_factory=dict)  # part number -> times started
    done: bool = False


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.files: dict[str, FileRecord] = {}
        self.resent_parts: dict[tuple[str, int], int] = {}  # (file, part) -> bytes sent again
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    self._apply(json.loads(line))
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a kill: that part is simply sent again

    def _apply(self, rec: dict[str, Any]) -> None:
        f = self.files.setdefault(rec["f"], FileRecord())
        if "upload" in rec:
            f.upload_id = rec["upload"]
        elif "start" in rec:
            k = int(rec["start"])
            f.started[k] = f.started.get(k, 0) + 1
            if f.started[k] > 1:
                self.resent_parts[(rec["f"], k)] = int(rec.get("n", 0)) * (f.started[k] - 1)
        elif "part" in rec:
            f.parts[int(rec["part"])] = str(rec.get("etag", ""))
        elif rec.get("done"):
            f.done = True
        elif rec.get("reset"):
            self.files[rec["f"]] = FileRecord()

    def _write(self, rec: dict[str, Any]) -> None:
        with self._lock:
            self._apply(rec)
            # Opened per record: a part is megabytes, so this costs nothing that shows,
            # and no handle is left open when a transfer task ends abruptly.
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec, separators=(",", ":")) + "\n")

    def file(self, path: str) -> FileRecord:
        with self._lock:
            return self.files.setdefault(path, FileRecord())

    def upload(self, path: str, upload_id: str) -> None:
        self._write({"f": path, "upload": upload_id})

    def start(self, path: str, part: int, nbytes: int) -> None:
        self._write({"f": path, "start": part, "n": nbytes})

    def part_done(self, path: str, part: int, etag: str = "") -> None:
        self._write({"f": path, "part": part, "etag": etag})

    def file_done(self, path: str) -> None:
        self._write({"f": path, "done": True})

    def reset(self, path: str) -> None:
        """Forget a file (it failed its checks and is moved again from scratch)."""
        self._write({"f": path, "reset": True})

    @property
    def resent_bytes(self) -> int:
        with self._lock:
            return sum(self.resent_parts.values())
