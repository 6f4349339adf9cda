"""Per-flow traffic over time: the aggregated time series the report plots (never packets).

Bins are one second wide while the table stays under MAX_ROWS rows; a long capture (hours of
many flows) gets the narrowest width of WIDTHS that keeps it there, so that memory does not
grow with the capture's duration. Each width divides the next, and a width is only widened
when the rows so far already exceed MAX_ROWS at it: the final width is the narrowest that
fits the whole capture, whatever the batches.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analyzer.flows import FlowAssignment
from analyzer.packets import PacketColumns

NS = 1_000_000_000
FOLD_ROWS = 2 * 1024 * 1024  # fold the parts together past this many rows (bounded memory)
MAX_ROWS = 1_000_000  # (flow, bin) rows the table may have before its bins widen
WIDTHS = (1, 2, 10, 60, 300, 1800, 3600, 21600, 86400)  # seconds; each divides the next
DENSE_SLACK = 1 << 16  # a dense (flow x bin) count grid may exceed the batch by this much

Part = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # flow, bin start, packets, bytes


class Timeline:
    """Packets and bytes per (flow, bin), accumulated batch by batch."""

    def __init__(self, max_rows: int | None = None) -> None:
        self._parts: list[Part] = []
        self._rows = 0
        self._max_rows = MAX_ROWS if max_rows is None else max_rows
        self.width = WIDTHS[0]  # the bins' width in seconds (only grows)

    def add(self, cols: PacketColumns, assign: FlowAssignment) -> None:
        sel = np.flatnonzero(assign.flow_index >= 0)
        if sel.size == 0:
            return
        # a datagram's later fragments: bytes, no packet
        packet = ~cols.later_fragment[sel] if cols.later_fragment.any() else None
        part = _per_bin(assign.flow_index[sel], cols.ts_ns[sel] // NS // self.width,
                        cols.wirelen[sel], packet)
        self._parts.append((part[0], part[1] * self.width, part[2], part[3]))
        self._rows += part[0].size
        if self._rows > FOLD_ROWS:
            self._fold()

    def _fold(self) -> None:
        """The parts folded into one, with bins widened while they are more than max_rows."""
        folded = _folded(self._parts)
        while folded[0].size > self._max_rows and self.width < WIDTHS[-1]:
            self.width = WIDTHS[WIDTHS.index(self.width) + 1]
            flow, start, packets, wire = folded
            folded = _folded([(flow, start // self.width * self.width, packets, wire)])
        self._parts, self._rows = [folded], folded[0].size

    def table(self, capture_name: str) -> pd.DataFrame:
        self._fold()
        flow, start, packets, wire = self._parts[0]
        return pd.DataFrame({
            "capture": capture_name,
            "flow_id": flow.astype(np.int64) + 1,
            "second": pd.to_datetime(start.astype(np.int64), unit="s", utc=True),
            "bin_seconds": np.full(flow.size, self.width, np.int64),
            "packets": packets.astype(np.int64),
            "bytes": wire.astype(np.int64),
        })


def _folded(parts: list[Part]) -> Part:
    """One row per distinct (flow, bin start) of `parts`, sorted, with its sums."""
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, empty
    flow, start, packets, wire = (np.concatenate(c) for c in zip(*parts, strict=True))
    order = np.lexsort((start, flow))
    flow, start = flow[order], start[order]
    starts = np.flatnonzero(np.r_[True, (flow[1:] != flow[:-1]) | (start[1:] != start[:-1])])
    return (flow[starts], start[starts], np.add.reduceat(packets[order], starts),
            np.add.reduceat(wire[order], starts))


def _per_bin(flow: np.ndarray, second: np.ndarray, wire: np.ndarray,
             is_packet: np.ndarray | None = None) -> Part:
    """Sum packets and bytes per distinct (flow, bin) of one batch (`second`: each packet's
    bin number; `is_packet`: which frames count as packets; None: all)."""
    low = int(second.min())
    span = int(second.max()) - low + 1
    cells = (int(flow.max()) + 1) * span
    if cells <= flow.size + DENSE_SLACK:  # the usual case: a batch covers a bin or two
        key = flow * span + (second - low)
        frames = np.bincount(key, minlength=cells)
        wire_sum = np.bincount(key, weights=wire, minlength=cells)
        used = np.flatnonzero(frames)
        return (used // span, used % span + low, _packets(key, frames, is_packet, cells)[used],
                np.rint(wire_sum[used]).astype(np.int64))
    if cells < 1 << 62:  # (one int64 key per packet, in (flow, bin) order: a flat sort)
        keys, inverse = np.unique(flow * span + (second - low), return_inverse=True)
        flows, bins = keys // span, keys % span + low
    else:  # (bins decades apart)
        pairs, inverse = np.unique(np.stack([flow, second]), axis=1, return_inverse=True)
        flows, bins = pairs[0], pairs[1]
    inverse = inverse.ravel()
    frames = np.bincount(inverse)
    return (flows, bins, _packets(inverse, frames, is_packet, frames.size),
            np.bincount(inverse, weights=wire).astype(np.int64))


def _packets(key: np.ndarray, frames: np.ndarray, is_packet: np.ndarray | None,
             cells: int) -> np.ndarray:
    if is_packet is None:
        return frames
    return np.bincount(key, weights=is_packet, minlength=cells).astype(np.int64)
