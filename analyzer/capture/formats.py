"""Record walkers for pcap and pcapng: bytes in, packet record columns out.

A walker scans one chunk of the file and returns the records that lie wholly inside it, the
offset where it stopped, and, if it stopped on a bad record, why. The reader carries the
unfinished tail over to the next chunk. This is the only per-record loop of the fast path; with
the C extension built it runs in C (analyzer.speedups: pcap records, pcapng packet blocks), and the
Python loops here are the reference and the fallback.

Formats: draft-ietf-opsawg-pcap (classic pcap) and draft-ietf-opsawg-pcapng (pcapng).
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from analyzer import speedups
from analyzer.errors import CaptureFormatError

PCAP_MAGIC = {  # magic as stored -> (byte order, nanoseconds per fraction tick)
    b"\xd4\xc3\xb2\xa1": ("<", 1_000),  # microseconds, little-endian
    b"\xa1\xb2\xc3\xd4": (">", 1_000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),  # nanoseconds
    b"\xa1\xb2\x3c\x4d": (">", 1),
}
PCAP_FILE_HEADER = "HHiIII"  # version_major, version_minor, thiszone, sigfigs, snaplen, linktype
PCAP_RECORD_HEADER = "IIII"  # ts_sec, ts_frac, caplen, wirelen
PCAP_LINKTYPE_MASK = 0xFFFF  # the upper bits carry the FCS length and flags
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
PCAPNG_BYTE_ORDER_MAGIC = 0x1A2B3C4D
BYTE_SWAPPED_MAGIC = 0x4D3C2B1A
MAX_PACKET = 262_144  # Wireshark's limit for one record
MAX_BLOCK = 16 * 1024 * 1024
ByteData = bytes | bytearray | memoryview  # what the walkers read from
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# pcapng block types and the fixed fields of their bodies (after type and length)
BT_IDB, BT_OPB, BT_SPB, BT_EPB = 1, 2, 3, 6
BT_SHB = 0x0A0D0D0A
BLOCK_BODY = {  # block type -> struct of its fixed fields
    BT_SHB: "IHHq",  # byte-order magic, major, minor, section length
    BT_IDB: "HHI",  # linktype, reserved, snaplen
    BT_EPB: "IIIII",  # interface id, timestamp high, low, caplen, wirelen
    BT_OPB: "HHIIII",  # interface id, drops, timestamp high, low, caplen, wirelen
    BT_SPB: "I",  # wirelen
}
PACKET_FIELDS = 20  # fixed fields before packet data in an EPB and an OPB
# Blocks that are not packets but that Wireshark shows as frames (so they take a frame number):
# systemd journal export, sysdig events, custom blocks (checked with tshark 4.0)
FRAME_BLOCKS = frozenset({0x09, 0x204, 0x208, 0x216, 0x217, 0x221, 0x222, 0x0BAD, 0x40000BAD})
LT_NOT_A_PACKET = -1  # the linktype given to those frames (they carry no captured bytes)
OPT_IF_TSRESOL, OPT_IF_TSOFFSET = 9, 14


@dataclass(slots=True)
class RecordColumns:
    """Packet records found in a chunk, as parallel lists (converted to arrays by the reader)."""

    data_offset: list[int] = field(default_factory=list)
    caplen: list[int] = field(default_factory=list)
    wirelen: list[int] = field(default_factory=list)
    ts_ns: list[int] = field(default_factory=list)
    linktype: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RecordArrays:
    """Packet records as int64 arrays (what the C walkers of analyzer.speedups return)."""

    data_offset: npt.NDArray[np.int64]
    caplen: npt.NDArray[np.int64]
    wirelen: npt.NDArray[np.int64]
    ts_ns: npt.NDArray[np.int64]
    linktype: npt.NDArray[np.int64]

    @staticmethod
    def join(parts: Sequence[RecordColumns | RecordArrays]) -> RecordArrays:
        names = ("data_offset", "caplen", "wirelen", "ts_ns", "linktype")
        return RecordArrays(*(
            np.concatenate([np.asarray(getattr(p, n), dtype=np.int64) for p in parts])
            for n in names
        ))


@dataclass(slots=True)
class WalkResult:
    records: RecordColumns | RecordArrays
    stop: int  # offset of the first byte not consumed
    error: str = ""  # non-empty when the walk stopped on a bad record


class Walker(Protocol):
    file_format: str
    linktypes: set[int]
    skipped_blocks: int

    @property
    def timestamp_resolution(self) -> str: ...

    def walk(self, buf: ByteData, start: int) -> WalkResult: ...


def sniff_format(head: bytes) -> str:
    """'pcap' or 'pcapng' from the first bytes of a file; CaptureFormatError otherwise."""
    if head[:4] in PCAP_MAGIC:
        return "pcap"
    if head[:4] == PCAPNG_SHB:
        return "pcapng"
    if len(head) < 4:
        raise CaptureFormatError(f"not a capture: only {len(head)} bytes")
    raise CaptureFormatError(f"not a pcap or pcapng file (magic 0x{head[:4].hex()})")


def resolution_name(base: int, exponent: int) -> str:
    """'us', 'ns', 'ms' or e.g. '2^-20 s' for a timestamp unit of base ** -exponent seconds."""
    named = {(10, 3): "ms", (10, 6): "us", (10, 9): "ns"}
    return named.get((base, exponent), f"{base}^-{exponent} s")


def clamp_ns(value: int) -> int:
    """A nanosecond timestamp forced into int64 (a garbage timestamp must not stop the read)."""
    return min(max(value, INT64_MIN), INT64_MAX)


class PcapWalker:
    """Classic libpcap format: a 24-byte file header, then 16-byte record headers."""

    file_format = "pcap"
    skipped_blocks = 0

    def __init__(self, header: bytes) -> None:
        if len(header) < 24:
            raise CaptureFormatError("truncated pcap file header")
        self.endian, self.ns_per_tick = PCAP_MAGIC[header[:4]]
        fields = struct.unpack(self.endian + PCAP_FILE_HEADER, header[4:24])
        self.snaplen = fields[4]
        self.linktype = fields[5] & PCAP_LINKTYPE_MASK
        self.linktypes = {self.linktype}
        self._record = struct.Struct(self.endian + PCAP_RECORD_HEADER)

    @property
    def timestamp_resolution(self) -> str:
        return "ns" if self.ns_per_tick == 1 else "us"

    @staticmethod
    def header_size() -> int:
        return 24

    def walk(self, buf: ByteData, start: int) -> WalkResult:
        if speedups.enabled():
            return self._walk_native(buf, start)
        cols = RecordColumns()
        unpack, size, pos = self._record.unpack_from, len(buf), start
        offsets, caplens, wirelens, stamps = cols.data_offset, cols.caplen, cols.wirelen, cols.ts_ns
        tick, error = self.ns_per_tick, ""
        while pos + 16 <= size:
            sec, frac, caplen, wirelen = unpack(buf, pos)
            if caplen > MAX_PACKET:
                error = _too_large(caplen)
                break
            if pos + 16 + caplen > size:
                break
            offsets.append(pos + 16)
            caplens.append(caplen)
            wirelens.append(wirelen)
            stamps.append(sec * 1_000_000_000 + frac * tick)  # < 2**63 for any u32 pair
            pos += 16 + caplen
        cols.linktype = [self.linktype] * len(offsets)
        return WalkResult(cols, pos, error)

    def _walk_native(self, buf: ByteData, start: int) -> WalkResult:
        big_endian, tick = self.endian == ">", self.ns_per_tick
        columns, stop, too_large = speedups.walk_pcap(buf, start, big_endian, tick, MAX_PACKET)
        offsets, caplens, wirelens, stamps = columns
        linktypes = np.full(offsets.size, self.linktype, dtype=np.int64)
        error = _too_large(self._record.unpack_from(buf, stop)[2]) if too_large else ""
        return WalkResult(RecordArrays(offsets, caplens, wirelens, stamps, linktypes), stop, error)


def _too_large(caplen: int) -> str:
    return f"record claims {caplen} captured bytes (limit {MAX_PACKET})"


@dataclass(slots=True)
class _Interface:
    linktype: int
    snaplen: int
    resolution: tuple[int, int] = (10, 6)  # timestamp unit = base ** -exponent seconds
    offset_ns: int = 0

    def to_ns(self, units: int) -> int:
        base, exponent = self.resolution
        if base == 10:
            return units * 10 ** (9 - exponent) if exponent <= 9 else units // 10 ** (exponent - 9)
        return (units * 1_000_000_000) >> exponent


class PcapngWalker:
    """pcapng: Section Header, Interface Description and packet blocks (EPB, SPB, OPB)."""

    file_format = "pcapng"

    def __init__(self, head: bytes) -> None:
        if len(head) < 12:
            raise CaptureFormatError("truncated pcapng section header")
        magic = struct.unpack_from("<I", head, 8)[0]
        if magic not in (PCAPNG_BYTE_ORDER_MAGIC, BYTE_SWAPPED_MAGIC):
            raise CaptureFormatError(f"bad pcapng byte-order magic 0x{head[8:12].hex()}")
        self.endian = "<"
        self.interfaces: list[_Interface] = []
        self.linktypes: set[int] = set()
        self.resolutions: set[tuple[int, int]] = set()
        self.skipped_blocks = 0

    @property
    def timestamp_resolution(self) -> str:
        """The interfaces' timestamp units, e.g. 'us' or 'ns' or 'us,ns'."""
        return ",".join(sorted(resolution_name(*r) for r in self.resolutions or {(10, 6)}))

    def walk(self, buf: ByteData, start: int) -> WalkResult:
        if speedups.enabled():
            return self._walk_native(buf, start)
        return self._walk_blocks(buf, start)

    def _walk_native(self, buf: ByteData, start: int) -> WalkResult:
        """C walks the packet blocks; Python handles each other block, and any damage."""
        parts: list[RecordColumns | RecordArrays] = []
        pos = start
        while True:
            columns, pos = speedups.walk_pcapng(
                buf, pos, self.endian == ">", self._interface_table(), MAX_PACKET, MAX_BLOCK
            )
            step = self._walk_blocks(buf, pos, max_blocks=1)
            parts += [RecordArrays(*columns), step.records]
            if step.error or step.stop == pos:
                return WalkResult(RecordArrays.join(parts), step.stop, step.error)
            pos = step.stop

    def _interface_table(self) -> npt.NDArray[np.int64]:
        rows = [(i.linktype, i.snaplen, *i.resolution, i.offset_ns) for i in self.interfaces]
        return speedups.interface_table(rows)

    def _walk_blocks(self, buf: ByteData, start: int, max_blocks: int = sys.maxsize) -> WalkResult:
        cols, pos, size, blocks = RecordColumns(), start, len(buf), 0
        while pos + 12 <= size and blocks < max_blocks:
            block_type, block_len = self._block_header(buf, pos)
            if block_len < 0:
                return WalkResult(cols, pos, "bad pcapng byte-order magic")
            if block_len < 12 or block_len % 4 or block_len > MAX_BLOCK:
                return WalkResult(cols, pos, f"bad pcapng block length {block_len}")
            if pos + block_len > size:
                break
            error = self._check_trailer(buf, pos, block_len) or self._block(
                buf, pos, block_type, block_len, cols
            )
            if error:
                return WalkResult(cols, pos, error)
            pos, blocks = pos + block_len, blocks + 1
        return WalkResult(cols, pos)

    def _block_header(self, buf: ByteData, pos: int) -> tuple[int, int]:
        if buf[pos : pos + 4] == PCAPNG_SHB:  # each section declares its own byte order
            magic = struct.unpack_from("<I", buf, pos + 8)[0]
            if magic not in (PCAPNG_BYTE_ORDER_MAGIC, BYTE_SWAPPED_MAGIC):
                return BT_SHB, -1
            self.endian = "<" if magic == PCAPNG_BYTE_ORDER_MAGIC else ">"
        block_type, block_len = struct.unpack_from(self.endian + "II", buf, pos)
        return block_type, block_len

    def _check_trailer(self, buf: ByteData, pos: int, blen: int) -> str:
        (trailer,) = struct.unpack_from(self.endian + "I", buf, pos + blen - 4)
        if trailer != blen:
            return f"pcapng block lengths disagree ({blen} at the start, {trailer} at the end)"
        return ""

    def _block(self, buf: ByteData, pos: int, btype: int, blen: int, cols: RecordColumns) -> str:
        body = memoryview(buf)[pos + 8 : pos + blen - 4]
        layout = BLOCK_BODY.get(btype)
        if btype in FRAME_BLOCKS:
            return self._not_a_packet(cols, pos)
        if layout is None:
            self.skipped_blocks += 1
            return ""
        if len(body) < struct.calcsize("=" + layout):
            return f"pcapng block of type {btype} too short ({blen} bytes)"
        fields = struct.unpack_from(self.endian + layout, body)
        if btype == BT_EPB:
            return self._packet(cols, pos, body, *fields)
        if btype == BT_OPB:
            return self._packet(cols, pos, body, fields[0], *fields[2:])
        if btype == BT_SPB:
            return self._simple_packet(cols, pos, body, fields[0])
        if btype == BT_SHB:
            return self._section_header(fields[1])
        return self._interface(body, *fields)

    def _section_header(self, major: int) -> str:
        if major != 1:
            return f"unsupported pcapng major version {major}"
        self.interfaces = []  # interface ids restart in each section
        return ""

    def _interface(self, body: memoryview, linktype: int, _reserved: int, snaplen: int) -> str:
        iface = _Interface(linktype, snaplen)
        for code, value in _options(body[8:], self.endian):
            _apply_interface_option(iface, code, value, self.endian)
        self.interfaces.append(iface)
        self.linktypes.add(linktype)
        self.resolutions.add(iface.resolution)
        return ""

    def _packet(
        self, cols: RecordColumns, pos: int, body: memoryview,
        iface_id: int, hi: int, lo: int, caplen: int, wirelen: int,
    ) -> str:
        if iface_id >= len(self.interfaces):
            return f"packet block names interface {iface_id}, which was never described"
        if caplen > len(body) - PACKET_FIELDS or caplen > MAX_PACKET:
            return f"packet block claims {caplen} captured bytes, more than it holds"
        iface = self.interfaces[iface_id]
        cols.data_offset.append(pos + 8 + PACKET_FIELDS)
        cols.caplen.append(caplen)
        cols.wirelen.append(wirelen)
        cols.ts_ns.append(clamp_ns(iface.to_ns((hi << 32) | lo) + iface.offset_ns))
        cols.linktype.append(iface.linktype)
        return ""

    def _simple_packet(self, cols: RecordColumns, pos: int, body: memoryview, wirelen: int) -> str:
        if not self.interfaces:
            return "simple packet block before any interface block"
        iface = self.interfaces[0]
        caplen = min(wirelen, len(body) - 4, iface.snaplen or MAX_PACKET, MAX_PACKET)
        cols.data_offset.append(pos + 12)
        cols.caplen.append(caplen)
        cols.wirelen.append(wirelen)
        cols.ts_ns.append(0)  # SPBs carry no timestamp
        cols.linktype.append(iface.linktype)
        return ""


    @staticmethod
    def _not_a_packet(cols: RecordColumns, pos: int) -> str:
        cols.data_offset.append(pos + 8)
        cols.caplen.append(0)
        cols.wirelen.append(0)
        cols.ts_ns.append(0)
        cols.linktype.append(LT_NOT_A_PACKET)
        return ""


def _options(data: memoryview, endian: str) -> list[tuple[int, bytes]]:
    """pcapng options: (code, value) pairs up to opt_endofopt or the end of the data."""
    found, pos = [], 0
    while pos + 4 <= len(data):
        code, length = struct.unpack_from(endian + "HH", data, pos)
        if code == 0:
            break
        found.append((code, bytes(data[pos + 4 : pos + 4 + length])))
        pos += 4 + length + (-length % 4)
    return found


def _apply_interface_option(iface: _Interface, code: int, value: bytes, endian: str) -> None:
    if code == OPT_IF_TSRESOL and value:
        iface.resolution = (2 if value[0] & 0x80 else 10, value[0] & 0x7F)
    elif code == OPT_IF_TSOFFSET and len(value) >= 8:
        iface.offset_ns = struct.unpack(endian + "q", value[:8])[0] * 1_000_000_000
