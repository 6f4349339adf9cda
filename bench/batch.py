"""Packets to be written, as columns: the unit the generator produces, sorts and assembles."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Self

import numpy as np

from bench.wire import ones_sum

# name -> dtype of every numeric column; `payload` (object) holds an event's bytes, or None
# for a media packet whose payload is drawn from the payload pool.
COLUMNS: dict[str, type] = {
    "time_ns": np.int64,  # arrival time since the start of the capture
    "tpl": np.int32,  # header template (see templates.py)
    "label": np.int16,  # packet kind, for the mix statistics (sessions.Label)
    "seq": np.int64,  # RTP sequence number, unwrapped
    "rtp_ts": np.int64,  # RTP timestamp, unwrapped
    "frame": np.int64,  # media frame index in its stream
    "frame_ns": np.int64,  # nominal send time of the frame
    "frame_pkts": np.int64,  # packets in the frame
    "first": np.bool_,  # first packet of its frame
    "marker": np.bool_,  # RTP marker bit
    "pkt_no": np.int64,  # packet counter of the stream
    "payload_len": np.int64,  # bytes after the template's headers
    "tcp_seq": np.int64,
    "tcp_ack": np.int64,
    "tcp_flags": np.uint8,
    "payload_sum": np.int64,  # ones_sum of an event's payload
    "is_event": np.bool_,  # a control-plane packet, its payload in `payload`
}


@dataclass(slots=True)
class Batch:
    time_ns: np.ndarray
    tpl: np.ndarray
    label: np.ndarray
    seq: np.ndarray
    rtp_ts: np.ndarray
    frame: np.ndarray
    frame_ns: np.ndarray
    frame_pkts: np.ndarray
    first: np.ndarray
    marker: np.ndarray
    pkt_no: np.ndarray
    payload_len: np.ndarray
    tcp_seq: np.ndarray
    tcp_ack: np.ndarray
    tcp_flags: np.ndarray
    payload_sum: np.ndarray
    is_event: np.ndarray
    payload: np.ndarray  # object: bytes for events, None for media

    @classmethod
    def build(cls, n: int, **columns: np.ndarray) -> Self:
        """A batch of `n` packets; columns not given are zero (payload: None)."""
        full: dict[str, np.ndarray] = {name: np.zeros(n, dtype) for name, dtype in COLUMNS.items()}
        full["payload"] = np.full(n, None, dtype=object)
        for name, values in columns.items():
            full[name] = np.asarray(values, dtype=full[name].dtype)
        return cls(**full)

    def __len__(self) -> int:
        return len(self.time_ns)

    def take(self, index: np.ndarray) -> Self:
        return replace(self, **{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @classmethod
    def concat(cls, parts: list[Self]) -> Self:
        columns = {f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)}
        return cls(**columns)


@dataclass(frozen=True, slots=True)
class Event:
    """One control-plane packet, with its whole payload above UDP/TCP."""

    time_ns: int
    tpl: int
    label: int
    payload: bytes
    tcp_seq: int = 0
    tcp_ack: int = 0
    tcp_flags: int = 0


def events_batch(events: list[Event]) -> Batch:
    n = len(events)
    payloads = np.empty(n, dtype=object)
    payloads[:] = [e.payload for e in events]
    batch = Batch.build(
        n,
        time_ns=np.array([e.time_ns for e in events], np.int64),
        tpl=np.array([e.tpl for e in events], np.int32),
        label=np.array([e.label for e in events], np.int16),
        payload_len=np.array([len(e.payload) for e in events], np.int64),
        tcp_seq=np.array([e.tcp_seq for e in events], np.int64),
        tcp_ack=np.array([e.tcp_ack for e in events], np.int64),
        tcp_flags=np.array([e.tcp_flags for e in events], np.uint8),
        payload_sum=np.array([ones_sum(e.payload) for e in events], np.int64),
        is_event=np.ones(n, np.bool_),
    )
    batch.payload = payloads
    return batch
