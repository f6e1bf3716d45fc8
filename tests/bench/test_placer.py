"""bench/placer.py at a tiny scale: it runs, its numbers are sane, and it rewrites only its
own section of docs/benchmarks.md."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.placer import SECTION, run, section, submissions, write_section


def test_a_tiny_run_places_jobs_and_fills_the_table() -> None:
    rows = run(None, [150], 60, {})
    assert [r["queue"] for r in rows] == ["shapes", "own"]
    assert all(0 < r["placed"] <= 60 and r["after_s"] > 0 for r in rows), rows
    subs = {150: submissions(150, repeats=1)}  # asserts that the search records what the scan records
    text = section(rows, {"after_s": 1.0}, subs, argparse.Namespace(before=None))
    assert text.startswith(SECTION) and "| 60 x 150 | each job its own inputs and sizes | — |" in text, text


def test_section_is_replaced_not_duplicated(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\n## Other\n\nkeep\n\n{SECTION}\n\nold numbers\n\n## After\n\nkeep too\n")
    write_section(doc, f"{SECTION}\n\nnew numbers\n\n")
    text = doc.read_text()
    assert "new numbers" in text and "old numbers" not in text and text.count(SECTION) == 1
    assert "## Other\n\nkeep" in text and "## After\n\nkeep too" in text
