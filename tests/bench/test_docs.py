"""bench/docs.py: a benchmark rewrites its own section of docs/benchmarks.md, never another's."""

from __future__ import annotations

from pathlib import Path

from bench.docs import write_section

SECTION = "## Some benchmark"


def test_section_is_replaced_not_duplicated(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\n## Other\n\nkeep\n\n{SECTION}\n\nold numbers\n\n## After\n\nkeep too\n")
    write_section(doc, SECTION, f"{SECTION}\n\nnew numbers\n\n")
    text = doc.read_text()
    assert "new numbers" in text and "old numbers" not in text and text.count(SECTION) == 1
    assert "## Other\n\nkeep" in text and "## After\n\nkeep too" in text


def test_a_new_section_goes_at_the_end_and_the_last_section_is_replaced_to_the_end(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Other\n\nkeep\n")
    write_section(doc, SECTION, f"{SECTION}\n\nfirst\n")
    assert doc.read_text() == f"# Benchmarks\n\n## Other\n\nkeep\n\n{SECTION}\n\nfirst\n"
    write_section(doc, SECTION, f"{SECTION}\n\nsecond\n")
    assert doc.read_text() == f"# Benchmarks\n\n## Other\n\nkeep\n\n{SECTION}\n\nsecond\n"
