"""Per-flow traffic per second: the aggregated time series the report plots (never packets)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analyzer.flows import FlowAssignment
from analyzer.packets import PacketColumns

NS = 1_000_000_000


class Timeline:
    """Packets and bytes per (flow, second), accumulated batch by batch."""

    def __init__(self) -> None:
        self._parts: list[pd.DataFrame] = []
        self._rows = 0

    def add(self, cols: PacketColumns, assign: FlowAssignment) -> None:
        sel = assign.flow_index >= 0
        if not sel.any():
            return
        frame = pd.DataFrame({"flow": assign.flow_index[sel], "second": cols.ts_ns[sel] // NS,
                              "packets": np.ones(int(sel.sum()), dtype=np.int64),
                              "bytes": cols.wirelen[sel]})
        part = frame.groupby(["flow", "second"], sort=False).sum().reset_index()
        self._parts.append(part)
        self._rows += len(part)
        if self._rows > 4 * 1024 * 1024:  # keep memory bounded: fold the parts together
            self._parts = [self._folded()]
            self._rows = len(self._parts[0])

    def _folded(self) -> pd.DataFrame:
        if not self._parts:
            return pd.DataFrame(columns=["flow", "second", "packets", "bytes"])
        merged = pd.concat(self._parts, ignore_index=True)
        return merged.groupby(["flow", "second"], sort=True).sum().reset_index()

    def table(self, capture_name: str) -> pd.DataFrame:
        folded = self._folded()
        return pd.DataFrame({
            "capture": capture_name,
            "flow_id": folded["flow"].astype(np.int64) + 1,
            "second": pd.to_datetime(folded["second"].astype(np.int64), unit="s", utc=True),
            "packets": folded["packets"].astype(np.int64),
            "bytes": folded["bytes"].astype(np.int64),
        })
