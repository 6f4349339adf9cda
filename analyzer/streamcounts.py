"""What each RTP stream's packets carried: packets per payload type, Zoom media kinds and
layouts.

Counted for all of a batch's streams at once, as arrays, and written into the streams when the
capture has been read (`apply`): a busy capture has thousands of streams in every batch, and
updating each one's dictionary batch after batch cost 15 ms a batch on a capture of 14,583
streams. The logs are merged when they grow, so memory follows the number of distinct
(stream, payload type) pairs, not the capture's length.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import pandas as pd

from analyzer.arrays import new_rows
from analyzer.decode import zoom

MERGE_ROWS = 1 << 20  # logged (stream, payload type) rows before they are merged


class Counted(Protocol):
    """What `apply` fills in (`analyzer.media.StreamState`)."""

    payload_types: dict[int, int]
    zoom_kinds: set[str]
    zoom_layouts: set[str]


class StreamCounts:
    """Payload types, Zoom kinds and layouts of streams numbered by serial."""

    def __init__(self) -> None:
        self._batches, self._rows = 0, 0
        self._types: list[np.ndarray] = []  # (4, n): serial, payload type, packets, batch
        self._zoom: list[np.ndarray] = []  # distinct serial << 7 | (kind + 1) << 3 | layout

    def add(self, serial: np.ndarray, codes: np.ndarray, payload_type: np.ndarray,
            zoom_rows: np.ndarray, zoom_kind: np.ndarray, zoom_layout: np.ndarray) -> None:
        """One batch's packets: `codes` numbers their streams 0..n-1, `serial` maps those
        numbers to the streams' serials; `zoom_rows` are the packets inside Zoom's framing,
        with their media kinds (-1: none) and layouts (0: none)."""
        counts = np.bincount(codes * 128 + payload_type)
        pairs = np.flatnonzero(counts)
        self._types.append(np.stack([serial[pairs >> 7], pairs & 127, counts[pairs],
                                     np.full(pairs.size, self._batches)]))
        if zoom_rows.size:
            self._zoom.append(pd.unique(serial[codes[zoom_rows]] << 7
                                        | (zoom_kind + 1) << 3 | zoom_layout))
        self._batches += 1
        self._rows += pairs.size
        if self._rows > MERGE_ROWS:
            self._merge()

    def apply(self, streams: Sequence[Counted]) -> None:
        """Add the counts to `streams` (indexed by serial). Each stream's payload types come
        in the order they first appeared (ascending within a batch), as when counted batch by
        batch."""
        self._merge()
        if self._types:
            serial, payload_type, packets, batch = self._types[0]
            order = np.lexsort((payload_type, batch, serial))
            for s, pt, n in zip(serial[order].tolist(), payload_type[order].tolist(),
                                packets[order].tolist(), strict=True):
                types = streams[s].payload_types
                types[pt] = types.get(pt, 0) + n
        for key in (self._zoom[0].tolist() if self._zoom else []):
            stream, kind, layout = streams[key >> 7], key >> 3 & 15, key & 7
            if kind:
                stream.zoom_kinds.add(zoom.MEDIA_KINDS[kind - 1])
            if layout:
                stream.zoom_layouts.add(str(zoom.LAYOUT_CODES[layout]))
        self._types, self._zoom, self._rows = [], [], 0  # (counted once)

    def _merge(self) -> None:
        """The logs as one: per (stream, payload type) its packets and first batch."""
        if len(self._types) > 1:
            rows = np.concatenate(self._types, axis=1)
            key = rows[0] * 128 + rows[1]
            order = np.lexsort((rows[3], key))
            key, rows = key[order], rows[:, order]
            starts = np.flatnonzero(new_rows(key))
            totals = np.add.reduceat(rows[2], starts) if starts.size else rows[2]
            self._types = [np.stack([rows[0][starts], rows[1][starts], totals, rows[3][starts]])]
            self._rows = starts.size
        if len(self._zoom) > 1:
            self._zoom = [np.unique(np.concatenate(self._zoom))]
