"""The unit of work of the fast path: a batch of captured packets as arrays over one buffer."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(slots=True)
class PacketBatch:
    """Packets of one capture, in file order, sharing one byte buffer.

    Arrays have one element per packet. `data_offset` indexes `buffer` at the first byte of the
    link-layer frame; `caplen` bytes of it were captured out of `wirelen` on the wire.
    """

    buffer: np.ndarray  # uint8 view of the chunk's bytes
    frame: np.ndarray  # int64, 1-based frame number as Wireshark counts it
    ts_ns: np.ndarray  # int64, capture timestamp, ns since the epoch
    data_offset: np.ndarray  # int64
    caplen: np.ndarray  # int64
    wirelen: np.ndarray  # int64
    linktype: np.ndarray  # int32, LINKTYPE_* of the packet's interface; -1: a frame that is
    # not a packet (a pcapng block Wireshark counts as a frame, e.g. a custom block)
    file_offset: int = -1  # where `buffer` starts in the capture file when it is a view of
    # the file's mapping (another process may map the file and see the same bytes), else -1
    file_read: int = -1  # bytes of the capture file read through this batch (of the
    # compressed file for a gzip capture), for progress; -1: not known (a pipe)

    def __len__(self) -> int:
        return int(self.frame.size)

    def packet_bytes(self, index: int) -> bytes:
        """The captured bytes of one packet (slow path only)."""
        start = int(self.data_offset[index])
        return self.buffer[start : start + int(self.caplen[index])].tobytes()


@dataclass(slots=True)
class Damage:
    """Where and why a capture stopped being readable."""

    frame: int  # the frame number the damaged record would have had
    file_offset: int  # offset in the capture (after decompression, for a gzip file)
    reason: str


@dataclass(slots=True)
class CaptureInfo:
    """Facts about a capture file learned while reading it."""

    path: str
    file_format: str = ""  # 'pcap' | 'pcapng'
    compressed: str = ""  # '' | 'gzip'
    linktypes: set[int] = field(default_factory=set)
    timestamp_resolution: str = ""  # 'us', 'ns', ... (pcapng: one per interface, comma-joined)
    packets: int = 0  # records read, i.e. frames (includes pcapng non-packet frames)
    bytes_read: int = 0
    truncated_packets: int = 0  # packets cut by the snap length (caplen < wirelen)
    damage: Damage | None = None
    skipped_blocks: int = 0  # pcapng blocks that are neither packets nor frames (NRB, ISB, ...)
