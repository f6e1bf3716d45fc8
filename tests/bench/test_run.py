"""`make bench` rewrites docs/benchmarks.md with what it measured and keeps the sections
other benchmarks wrote there."""

from __future__ import annotations

from pathlib import Path

from bench.run import keep_other_sections


def test_sections_this_run_did_not_write_are_kept(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Hub hot paths\nold numbers\n\n## One large manifest\n340,000 files\n")
    out = keep_other_sections(doc, "# Benchmarks\n\n## Hub hot paths\nnew numbers\n")
    assert "new numbers" in out and "old numbers" not in out
    assert out.endswith("## One large manifest\n340,000 files\n")
    assert keep_other_sections(tmp_path / "missing.md", "# B\n") == "# B\n"
