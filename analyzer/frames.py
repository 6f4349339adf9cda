"""Small helpers over pandas columns."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def distinct_texts(column: pd.Series) -> list[str]:
    """The distinct values of a text column, as Python values (a missing value as NaN), in
    order of first appearance. One pass in Arrow: `set(column)` makes a Python object of
    every row first (0.1 s for 200,000 rows)."""
    return list(column.unique().tolist())
