"""Numbers as a reader wants them: bytes, durations, shares, milliseconds."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

BYTE_UNITS = ("B", "kB", "MB", "GB", "TB")


def is_missing(value: object) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def text(value: object) -> str:
    """A cell as text: empty for missing values."""
    return "" if is_missing(value) else str(value)


def count(value: object) -> str:
    """A count as a reader wants it: '49,925' (other values as `text`)."""
    return f"{value:,}" if isinstance(value, int | np.integer) else text(value)


def capped(values: list[str], limit: int) -> tuple[list[str], int]:
    """The first `limit` values, and how many more there are (0 when none)."""
    return values[:limit], max(len(values) - limit, 0)


def plural(number: object, noun: str) -> str:
    """'1 flow', '3 flows', '49,925 flows'."""
    shown = count(number)
    return f"{shown} {noun}{'' if shown == '1' else 's'}"


def human_bytes(count: float) -> str:
    value, unit = float(count), 0
    while abs(value) >= 1000 and unit < len(BYTE_UNITS) - 1:
        value, unit = value / 1000, unit + 1
    return f"{value:.0f} {BYTE_UNITS[unit]}" if unit == 0 else f"{value:.1f} {BYTE_UNITS[unit]}"


def human_seconds(seconds: float) -> str:
    if is_missing(seconds):
        return ""
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def percent(share: float) -> str:
    """0.9989 -> '99.9%'; tiny non-zero shares are not rounded to 0 or 100."""
    if is_missing(share):
        return ""
    value = share * 100
    if 0 < value < 0.1:
        return "<0.1%"
    if 99.9 < value < 100:
        return ">99.9%"
    return f"{value:.1f}%".replace(".0%", "%")


def to_float(value: object) -> float:
    """A number from a table cell; NaN when it is missing or not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | np.number):
        return math.nan
    try:
        return float(value)
    except ValueError:
        return math.nan


def milliseconds(value: object, digits: int = 1) -> str:
    number = to_float(value)
    return "" if math.isnan(number) else f"{number:.{digits}f} ms"


def utc(value: object) -> str:
    """A timestamp as 'YYYY-MM-DD HH:MM:SS UTC'."""
    if is_missing(value):
        return ""
    stamp = pd.Timestamp(str(value)) if isinstance(value, str) else pd.Timestamp(value)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC")
    return stamp.strftime("%Y-%m-%d %H:%M:%S UTC")
