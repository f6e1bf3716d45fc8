"""bench/placer.py at a tiny scale: it runs and its numbers are sane (how its section is
written into docs/benchmarks.md: tests/bench/test_docs.py)."""

from __future__ import annotations

import argparse

from bench.placer import SECTION, run, section, submissions


def test_a_tiny_run_places_jobs_and_fills_the_table() -> None:
    rows = run(None, [150], 60, {})
    assert [r["queue"] for r in rows] == ["shapes", "own"]
    assert all(0 < r["placed"] <= 60 and r["after_s"] > 0 for r in rows), rows
    subs = {150: submissions(150, repeats=1)}  # asserts that the search records what the scan records
    text = section(rows, {"after_s": 1.0}, subs, argparse.Namespace(before=None, whole=False))
    assert text.startswith(SECTION) and "| 60 x 150 | each job its own inputs and sizes | — |" in text, text
