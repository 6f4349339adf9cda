"""The output tables keep their documented shape."""

from __future__ import annotations

from pathlib import Path

from analyzer.pipeline import analyze
from analyzer.tables import COLUMNS, columns_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_docs_match_the_column_table() -> None:
    assert (ROOT / "docs" / "tables.md").read_text() == columns_markdown()


def test_every_table_has_exactly_its_documented_columns() -> None:
    captures = sorted((ROOT / "captures").glob("*.pcap*"))
    tables = analyze(captures[:3]).tables if captures else {}
    for name, frame in tables.items():
        assert list(frame.columns) == list(COLUMNS[name]), name
