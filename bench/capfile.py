"""pcap and pcapng record layouts, and a streaming capture file writer (optionally gzip'ed).

Each format fills the per-record prefix of a whole batch at once (pcap record header or pcapng
Enhanced Packet Block header) and, for pcapng, the per-record trailer (padding + length).
"""

from __future__ import annotations

import gzip
import io
import struct
from pathlib import Path
from typing import Protocol

import numpy as np

PCAP_MAGIC_USEC = 0xA1B2C3D4
PCAP_GLOBAL_HEADER = struct.Struct("<IHHiIII")  # magic, major, minor, zone, sigfigs, snap, link
LINKTYPE_ETHERNET = 1
SNAPLEN = 262_144

PCAPNG_SHB, PCAPNG_IDB, PCAPNG_EPB = 0x0A0D0D0A, 0x00000001, 0x00000006
PCAPNG_BYTE_ORDER_MAGIC = 0x1A2B3C4D
OPT_END, OPT_SHB_USERAPPL, OPT_IF_NAME, OPT_IF_TSRESOL = 0, 4, 2, 9
EPB_HEADER = 28  # type, total length, interface, ts high, ts low, captured, original
# Two interfaces, the second with nanosecond timestamps (if_tsresol 9) as Wireshark writes them.
INTERFACES = (("eth0", 6), ("eth1", 9))
USER_APPLICATION = "confscope bench/make_capture"


class RecordFormat(Protocol):
    prefix_len: int

    def file_header(self) -> bytes: ...

    def fill_prefix(
        self, out: np.ndarray, time_ns: np.ndarray, frame_len: np.ndarray, iface: np.ndarray
    ) -> None: ...

    def trailers(self, frame_len: np.ndarray) -> tuple[bytes, list[int], list[int]] | None: ...

    def record_sizes(self, frame_len: np.ndarray) -> np.ndarray: ...


class PcapFormat:
    prefix_len = 16

    def file_header(self) -> bytes:
        return PCAP_GLOBAL_HEADER.pack(PCAP_MAGIC_USEC, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET)

    def fill_prefix(
        self, out: np.ndarray, time_ns: np.ndarray, frame_len: np.ndarray, iface: np.ndarray
    ) -> None:
        words = np.empty((len(time_ns), 4), "<u4")
        words[:, 0], rest = np.divmod(time_ns, 1_000_000_000)
        words[:, 1] = rest // 1000
        words[:, 2] = words[:, 3] = frame_len
        out[:, :16] = words.view(np.uint8)

    def trailers(self, frame_len: np.ndarray) -> None:
        return None

    def record_sizes(self, frame_len: np.ndarray) -> np.ndarray:
        return 16 + frame_len


class PcapngFormat:
    prefix_len = EPB_HEADER

    def file_header(self) -> bytes:
        shb_body = struct.pack("<IHHq", PCAPNG_BYTE_ORDER_MAGIC, 1, 0, -1)
        shb = block(PCAPNG_SHB, shb_body + options([(OPT_SHB_USERAPPL, USER_APPLICATION.encode())]))
        return shb + b"".join(interface_block(name, tsresol) for name, tsresol in INTERFACES)

    def fill_prefix(
        self, out: np.ndarray, time_ns: np.ndarray, frame_len: np.ndarray, iface: np.ndarray
    ) -> None:
        units = np.where(iface == 0, time_ns // 1000, time_ns)  # usec on eth0, nsec on eth1
        words = np.empty((len(time_ns), 7), "<u4")
        words[:, 0] = PCAPNG_EPB
        words[:, 1] = epb_total_length(frame_len)
        words[:, 2] = iface
        words[:, 3], words[:, 4] = np.divmod(units, 1 << 32)
        words[:, 5] = words[:, 6] = frame_len
        out[:, :EPB_HEADER] = words.view(np.uint8)

    def trailers(self, frame_len: np.ndarray) -> tuple[bytes, list[int], list[int]]:
        """Padding + repeated total length of each EPB, as one buffer and slice bounds."""
        n = len(frame_len)
        table = np.zeros((n, 2), "<u4")
        table[:, 1] = epb_total_length(frame_len)
        ends = np.arange(1, n + 1) * 8
        starts = ends - 4 - (-frame_len % 4)
        return table.tobytes(), starts.tolist(), ends.tolist()

    def record_sizes(self, frame_len: np.ndarray) -> np.ndarray:
        return epb_total_length(frame_len)


def epb_total_length(frame_len: np.ndarray) -> np.ndarray:
    return EPB_HEADER + frame_len + (-frame_len % 4) + 4


def block(block_type: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", block_type, total) + body + struct.pack("<I", total)


def options(items: list[tuple[int, bytes]]) -> bytes:
    out = b"".join(
        struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)
        for code, value in items
    )
    return out + struct.pack("<HH", OPT_END, 0)


def interface_block(name: str, tsresol: int) -> bytes:
    body = struct.pack("<HHI", LINKTYPE_ETHERNET, 0, SNAPLEN)
    opts = [(OPT_IF_NAME, name.encode())]
    if tsresol != 6:
        opts.append((OPT_IF_TSRESOL, bytes([tsresol])))
    return block(PCAPNG_IDB, body + options(opts))


def record_format(name: str) -> RecordFormat:
    formats: dict[str, RecordFormat] = {"pcap": PcapFormat(), "pcapng": PcapngFormat()}
    return formats[name]


class CaptureWriter:
    """Writes the file header, then blocks of records; counts the (uncompressed) bytes."""

    def __init__(self, path: Path, fmt: RecordFormat, compress: bool) -> None:
        self._raw = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._out: io.BufferedIOBase = (
            gzip.GzipFile(fileobj=self._raw, mode="wb", compresslevel=1) if compress else self._raw
        )
        self.bytes_written = 0
        self.write(fmt.file_header())

    def write(self, data: bytes) -> None:
        self._out.write(data)
        self.bytes_written += len(data)

    def close(self) -> None:
        if self._out is not self._raw:
            self._out.close()
        self._raw.close()
