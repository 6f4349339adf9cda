"""Small numpy helpers shared by the vectorized stages."""

from __future__ import annotations

import numpy as np


def new_rows(*columns: np.ndarray) -> np.ndarray:
    """For rows sorted by `columns`: True where a row differs from the one before it."""
    new = np.ones(columns[0].size, bool)
    if new.size:
        new[1:] = np.logical_or.reduce([c[1:] != c[:-1] for c in columns])
    return new


def ragged_arange(counts: np.ndarray) -> np.ndarray:
    """0..c-1 for each count c, back to back."""
    total = int(counts.sum())
    return np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)


def grown(array: np.ndarray, size: int, fill: int = 0) -> np.ndarray:
    """`array` extended to `size` elements with `fill`."""
    out = np.full(size, fill, dtype=array.dtype)
    out[: array.size] = array
    return out
