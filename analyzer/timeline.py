"""Per-flow traffic per second: the aggregated time series the report plots (never packets)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analyzer.flows import FlowAssignment
from analyzer.packets import PacketColumns

NS = 1_000_000_000
FOLD_ROWS = 4 * 1024 * 1024  # fold the parts together past this many rows (bounded memory)
DENSE_SLACK = 1 << 16  # a dense (flow x second) count grid may exceed the batch by this much

Part = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # flow, second, packets, bytes


class Timeline:
    """Packets and bytes per (flow, second), accumulated batch by batch."""

    def __init__(self) -> None:
        self._parts: list[Part] = []
        self._rows = 0

    def add(self, cols: PacketColumns, assign: FlowAssignment) -> None:
        sel = np.flatnonzero(assign.flow_index >= 0)
        if sel.size == 0:
            return
        # a datagram's later fragments: bytes, no packet
        packet = ~cols.later_fragment[sel] if cols.later_fragment.any() else None
        part = _per_second(assign.flow_index[sel], cols.ts_ns[sel] // NS, cols.wirelen[sel],
                           packet)
        self._parts.append(part)
        self._rows += part[0].size
        if self._rows > FOLD_ROWS:
            self._parts = [self._folded()]
            self._rows = self._parts[0][0].size

    def _folded(self) -> Part:
        if not self._parts:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty, empty
        flow, second, packets, wire = (np.concatenate(c) for c in zip(*self._parts, strict=True))
        order = np.lexsort((second, flow))
        flow, second = flow[order], second[order]
        starts = np.flatnonzero(np.r_[True, (flow[1:] != flow[:-1]) | (second[1:] != second[:-1])])
        return (flow[starts], second[starts], np.add.reduceat(packets[order], starts),
                np.add.reduceat(wire[order], starts))

    def table(self, capture_name: str) -> pd.DataFrame:
        flow, second, packets, wire = self._folded()
        return pd.DataFrame({
            "capture": capture_name,
            "flow_id": flow.astype(np.int64) + 1,
            "second": pd.to_datetime(second.astype(np.int64), unit="s", utc=True),
            "packets": packets.astype(np.int64),
            "bytes": wire.astype(np.int64),
        })


def _per_second(flow: np.ndarray, second: np.ndarray, wire: np.ndarray,
                is_packet: np.ndarray | None = None) -> Part:
    """Sum packets and bytes per distinct (flow, second) of one batch (`is_packet`: which
    frames count as packets; None: all)."""
    low = int(second.min())
    span = int(second.max()) - low + 1
    cells = (int(flow.max()) + 1) * span
    if cells <= flow.size + DENSE_SLACK:  # the usual case: a batch covers a second or two
        key = flow * span + (second - low)
        frames = np.bincount(key, minlength=cells)
        wire_sum = np.bincount(key, weights=wire, minlength=cells)
        used = np.flatnonzero(frames)
        return (used // span, used % span + low, _packets(key, frames, is_packet, cells)[used],
                np.rint(wire_sum[used]).astype(np.int64))
    keys, inverse = np.unique(np.stack([flow, second]), axis=1, return_inverse=True)
    inverse = inverse.ravel()
    frames = np.bincount(inverse)
    return (keys[0], keys[1], _packets(inverse, frames, is_packet, frames.size),
            np.bincount(inverse, weights=wire).astype(np.int64))


def _packets(key: np.ndarray, frames: np.ndarray, is_packet: np.ndarray | None,
             cells: int) -> np.ndarray:
    if is_packet is None:
        return frames
    return np.bincount(key, weights=is_packet, minlength=cells).astype(np.int64)
