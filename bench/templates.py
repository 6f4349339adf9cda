"""Header templates: one row of constant bytes per (flow direction, media header) pair, with the
offsets of the fields that the assembler patches per packet. Rows are recycled when a session
ends, so the table stays as small as the set of live sessions."""

from __future__ import annotations

import numpy as np

from bench.media import AppHeader
from bench.wire import PROTO_TCP, FlowHeader

WIDTH = 160  # bytes of the widest template: VLAN + IPv6 + TCP, or a Zoom video header
INITIAL_CAPACITY = 1024

META: dict[str, type] = {
    "length": np.int64,  # template bytes (all headers before the payload)
    "ip_off": np.int64,
    "l4_off": np.int64,
    "is_v6": np.bool_,
    "is_tcp": np.bool_,
    "pseudo_sum": np.int64,
    "rtp_at": np.int64,  # -1 where the template has no RTP header
    "sfu_at": np.int64,  # Zoom SFU header, -1 if none
    "zoom_video": np.bool_,
    "channel_at": np.int64,  # TURN ChannelData header, -1 if none
    "fu_at": np.int64,  # H.264 FU header byte, -1 if none
    "pool": np.int64,  # payload pool region (payload.POOL_*)
    "iface": np.int64,  # pcapng interface
}


class TemplateTable:
    """Rows of header bytes (`rows`) and per-row metadata arrays (`meta[name]`)."""

    def __init__(self) -> None:
        self.rows = np.zeros((INITIAL_CAPACITY, WIDTH), np.uint8)
        self.meta: dict[str, np.ndarray] = {
            name: np.full(INITIAL_CAPACITY, -1, dtype) for name, dtype in META.items()
        }
        self.size = 0
        self.free: list[int] = []
        self.retiring: list[int] = []

    def add(self, flow: FlowHeader, app: AppHeader | None, pool: int = 0, iface: int = 0) -> int:
        """Store a template and return its id."""
        row = self._allocate()
        data = flow.data + (app.data if app else b"")
        self.rows[row] = 0
        self.rows[row, : len(data)] = np.frombuffer(data, np.uint8)
        base = len(flow.data)
        values = {
            "length": len(data), "ip_off": flow.ip_off, "l4_off": flow.l4_off,
            "is_v6": flow.is_v6, "is_tcp": flow.proto == PROTO_TCP,
            "pseudo_sum": flow.pseudo_sum, "pool": pool, "iface": iface,
        }
        values.update(app_offsets(app, base))
        for name, value in values.items():
            self.meta[name][row] = value
        return row

    def retire(self, ids: list[int]) -> None:
        """Free `ids` after the next `recycle()` (packets carried over may still use them)."""
        self.retiring.extend(ids)

    def recycle(self) -> None:
        self.free.extend(self.retiring)
        self.retiring = []

    def _allocate(self) -> int:
        if self.free:
            return self.free.pop()
        if self.size == len(self.rows):
            self._grow()
        self.size += 1
        return self.size - 1

    def _grow(self) -> None:
        extra = len(self.rows)
        self.rows = np.concatenate([self.rows, np.zeros((extra, WIDTH), np.uint8)])
        for name, column in self.meta.items():
            self.meta[name] = np.concatenate([column, np.full(extra, -1, column.dtype)])


def app_offsets(app: AppHeader | None, base: int) -> dict[str, int]:
    """Offsets of the app header's patched fields, from the start of the template row."""
    if app is None:
        return {"rtp_at": -1, "sfu_at": -1, "zoom_video": False, "channel_at": -1, "fu_at": -1}

    def shift(offset: int) -> int:
        return offset + base if offset >= 0 else -1

    return {
        "rtp_at": shift(app.rtp_at), "sfu_at": shift(app.sfu_at), "zoom_video": app.zoom_video,
        "channel_at": shift(app.channel_at), "fu_at": shift(app.fu_at),
    }
