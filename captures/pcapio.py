"""Minimal, deterministic pcap and pcapng writers.

Scapy builds the packets; these writers only lay them into files. They take integer
microsecond timestamps, so a timestamp written is exactly the one planned (scapy's own pcapng
writer goes through a float), and they let one pcapng file hold several interfaces with
different link types.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

LINKTYPE_ETHERNET = 1
LINKTYPE_LINUX_SLL = 113

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_VERSION = (2, 4)
SNAPLEN = 262144

PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_IDB = 0x00000001
PCAPNG_EPB = 0x00000006
PCAPNG_BYTE_ORDER_MAGIC = 0x1A2B3C4D
OPT_END = 0
OPT_COMMENT = 1
OPT_IF_NAME = 2
OPT_SHB_USERAPPL = 4
OPT_IF_TSRESOL = 9


@dataclass(frozen=True, slots=True)
class Interface:
    """One capture interface: its link type and name (pcapng only)."""

    linktype: int
    name: str


@dataclass(frozen=True, slots=True)
class Record:
    """One captured frame: timestamp in microseconds since the epoch, interface index, bytes."""

    time_us: int
    iface: int
    data: bytes


def write_pcap(path: Path, linktype: int, records: Iterable[Record]) -> None:
    """Classic little-endian pcap with microsecond timestamps."""
    header = struct.pack("<IHHiIII", PCAP_MAGIC_US, *PCAP_VERSION, 0, 0, SNAPLEN, linktype)
    chunks = [header]
    for rec in records:
        sec, usec = divmod(rec.time_us, 1_000_000)
        chunks.append(struct.pack("<IIII", sec, usec, len(rec.data), len(rec.data)))
        chunks.append(rec.data)
    path.write_bytes(b"".join(chunks))


def _pad4(data: bytes) -> bytes:
    return data + b"\x00" * (-len(data) % 4)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _pad4(value)


def _options(options: Sequence[tuple[int, bytes]]) -> bytes:
    if not options:
        return b""
    return b"".join(_option(code, value) for code, value in options) + _option(OPT_END, b"")


def _block(block_type: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", block_type, total) + body + struct.pack("<I", total)


def _section_header(application: str) -> bytes:
    body = struct.pack("<IHHq", PCAPNG_BYTE_ORDER_MAGIC, 1, 0, -1)
    return _block(PCAPNG_SHB, body + _options([(OPT_SHB_USERAPPL, application.encode())]))


def _interface_block(iface: Interface) -> bytes:
    body = struct.pack("<HHI", iface.linktype, 0, SNAPLEN)
    opts = [(OPT_IF_NAME, iface.name.encode()), (OPT_IF_TSRESOL, b"\x06")]
    return _block(PCAPNG_IDB, body + _options(opts))


def _packet_block(rec: Record) -> bytes:
    high, low = divmod(rec.time_us, 1 << 32)
    head = struct.pack("<IIIII", rec.iface, high, low, len(rec.data), len(rec.data))
    return _block(PCAPNG_EPB, head + _pad4(rec.data))


def write_pcapng(
    path: Path, interfaces: Sequence[Interface], records: Iterable[Record], application: str
) -> None:
    """pcapng: one section, one IDB per interface (microsecond resolution), one EPB per frame."""
    chunks = [_section_header(application)]
    chunks += [_interface_block(iface) for iface in interfaces]
    chunks += [_packet_block(rec) for rec in records]
    path.write_bytes(b"".join(chunks))
