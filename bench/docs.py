"""docs/benchmarks.md holds one section per benchmark: each run rewrites its own section
and leaves the others as they are."""

from __future__ import annotations

import re
from pathlib import Path


def write_section(doc: Path, heading: str, text: str) -> None:
    """Replace the section of ``doc`` that starts with ``heading`` (up to the next '## '
    heading) by ``text``, or append ``text`` where there is no such section yet."""
    old = doc.read_text() if doc.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(heading) + r".*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(lambda _: text, old, count=1) if pattern.search(old) else old.rstrip("\n") + "\n\n" + text
    doc.write_text(new)
