"""Each benchmark rewrites only its own section of BENCHMARKS.md."""

from __future__ import annotations

from pathlib import Path

from bench.benchmarks_md import write_section


def test_a_section_is_added_then_replaced_in_place_keeping_the_others(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    write_section("## A", "## A\nold\n", path)
    write_section("## B", "## B\nb\n", path)
    write_section("## A", "## A\nnew\n", path)
    text = path.read_text()
    assert text.startswith("# Benchmarks\n")
    assert "old" not in text
    assert text.index("## A\nnew") < text.index("## B\nb")
