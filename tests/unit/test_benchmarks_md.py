"""Each benchmark rewrites only its own section of BENCHMARKS.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.benchmarks_md import write_section
from bench.databases import bench_dsn


def test_a_section_is_added_then_replaced_in_place_keeping_the_others(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    write_section("## A", "## A\nold\n", path)
    write_section("## B", "## B\nb\n", path)
    write_section("## A", "## A\nnew\n", path)
    text = path.read_text()
    assert text.startswith("# Benchmarks\n")
    assert "old" not in text
    assert text.index("## A\nnew") < text.index("## B\nb")


def test_a_subsection_written_by_hand_is_kept_when_its_section_is_written_again(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    write_section("## A", "## A\nold\n", path)
    write_section("## B", "## B\nb\n", path)
    path.write_text(path.read_text().replace("## A\nold\n", "## A\nold\n\n### Mine\nfound\n\n### Other\ngone\n"))
    write_section("## A", "## A\nnew\n", path, keep=("### Mine", "### Absent"))
    text = path.read_text()
    assert "## A\nnew\n\n### Mine\nfound\n\n## B\nb\n" in text
    assert "old" not in text and "gone" not in text


def test_a_benchmark_works_only_in_a_database_of_its_own() -> None:
    base = "postgresql://hilo:pw@127.0.0.1:5432/hilo"
    assert bench_dsn(base, "hilo_bench_x") == "postgresql://hilo:pw@127.0.0.1:5432/hilo_bench_x"
    for name in ("hilo", "hilo_test", "postgres"):
        with pytest.raises(ValueError, match="database of its own"):
            bench_dsn(base, name)
