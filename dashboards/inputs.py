"""Read one confscope output folder: its tables, summary.json and findings.json, nothing else.

Parquet is preferred (types survive); CSV is the fallback, with the spreadsheet-formula quote
that `analyzer.tables.neutralize_formulas` adds taken off again. A missing table is an empty
frame, so the report degrades to "nothing of this kind" instead of failing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analyzer.errors import ConfscopeError

TABLE_NAMES = ("flows", "streams", "servers", "signalling", "timeline", "coverage", "findings")
TIME_COLUMNS = ("first_seen", "last_seen", "second")
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True, slots=True)
class Outputs:
    """Everything the dashboards may read from one `confscope analyze` output folder."""

    outdir: Path
    tables: dict[str, pd.DataFrame]
    summary: dict[str, Any]
    findings: list[dict[str, Any]]

    def table(self, name: str) -> pd.DataFrame:
        return self.tables.get(name, pd.DataFrame())

    @property
    def label(self) -> str:
        return self.outdir.resolve().name or str(self.outdir)


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """`frame.to_dict("records")`, the same values, read column by column: three times faster
    on a table of 150,000 servers, whose Arrow-backed text pandas boxes value by value."""
    names = list(frame.columns)
    return [dict(zip(names, row, strict=True))
            for row in zip(*(_values(frame[name]) for name in names), strict=True)]


_MASKED = (pd.arrays.IntegerArray, pd.arrays.FloatingArray, pd.arrays.BooleanArray)


def _values(column: pd.Series) -> list[Any]:
    """A column's values as `to_dict` gives them (a masked column's missing values: None)."""
    if isinstance(column.array, _MASKED):
        return [None if value is pd.NA else value for value in column.tolist()]
    return column.tolist()


def load_outputs(outdir: Path) -> Outputs:
    """Load OUTDIR; raise ConfscopeError when it is not a confscope output folder."""
    outdir = Path(outdir)
    summary_path = outdir / "summary.json"
    if not summary_path.is_file():
        raise ConfscopeError(f"{outdir}: not a confscope output folder (no summary.json)")
    summary = _read_json(summary_path)
    if not isinstance(summary, dict):
        raise ConfscopeError(f"{summary_path}: not a confscope summary")
    tables = {name: _read_table(outdir, name) for name in TABLE_NAMES}
    return Outputs(outdir, tables, summary, _read_findings(outdir, tables["findings"]))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfscopeError(f"{path}: not valid JSON ({exc})") from exc


def _read_table(outdir: Path, name: str) -> pd.DataFrame:
    parquet, csv = outdir / f"{name}.parquet", outdir / f"{name}.csv"
    if parquet.is_file():
        try:
            return _with_times(pd.read_parquet(parquet))
        except (OSError, ValueError):
            pass  # unreadable parquet (partial copy, no engine): the CSV says the same
    if csv.is_file():
        return _with_times(_unquote_formulas(pd.read_csv(csv, keep_default_na=False,
                                                         na_values=[""])))
    return pd.DataFrame()


def _with_times(frame: pd.DataFrame) -> pd.DataFrame:
    for column in TIME_COLUMNS:
        if column in frame.columns and not pd.api.types.is_datetime64_any_dtype(frame[column]):
            frame[column] = pd.to_datetime(frame[column], utc=True, errors="coerce",
                                           format="ISO8601")
    return frame


def _unquote_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    for column in frame.columns:
        if frame[column].dtype == object or pd.api.types.is_string_dtype(frame[column]):
            frame[column] = frame[column].map(_unquote)
    return frame


def _unquote(value: object) -> object:
    if isinstance(value, str) and value.startswith("'") and value[1:2] in FORMULA_PREFIXES:
        return value[1:]
    return value


def _read_findings(outdir: Path, table: pd.DataFrame) -> list[dict[str, Any]]:
    path = outdir / "findings.json"
    if path.is_file():
        document = _read_json(path)
        if isinstance(document, dict) and isinstance(document.get("findings"), list):
            return [f for f in document["findings"] if isinstance(f, dict)]
    return [_finding_from_row(row) for row in table.to_dict("records")]


def _finding_from_row(row: dict[str, Any]) -> dict[str, Any]:
    evidence = {key: str(row.get(key) or "").split() for key in ("flow_ids", "frames")}
    evidence["hostnames"] = [h for h in str(row.get("hostnames") or "").split() if h]
    return {**{k: row.get(k) for k in ("capture", "severity", "kind", "title", "explanation",
                                        "refute")}, "evidence": evidence}
