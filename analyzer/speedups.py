"""The optional C extension ``analyzer._speedups`` and thin wrappers around it.

The pure-Python/numpy code stays the reference and the fallback: when the extension was not built
(no compiler at install time), or when ``CONFSCOPE_PURE_PYTHON=1`` is set in the environment,
``native`` is None and callers take their Python path. Tests switch paths by setting ``native``.
The C paths: capture record walkers (analyzer/capture/formats.py), RTP stream statistics
(analyzer/rtpstats.py), the header decoder (analyzer/packets.py ``decode_batch``), the Zoom
classifier (analyzer/decode/zoom.py ``zoom_columns``), the big-endian reads of
analyzer/packets.py's ``Gather``, the RTP/RTCP finder (analyzer/media.py ``find_media``),
the flow keys (analyzer/flows.py ``flow_keys``), and the readers of usual TLS ClientHellos and
DNS messages (analyzer/decode/tls.py ``parse_client_hello``, dns.py ``parse_dns``), which those
call directly: they give None for anything the Python reader must read. It also guards file
mappings (``guard_mapping``): without it a capture is read, not mapped (see
analyzer/capture/reader.py).

The wrappers allocate the output arrays the C loops fill; arrays cross the boundary through the
buffer protocol, so the extension needs no numpy headers.
"""

from __future__ import annotations

import mmap
import os
import warnings
import weakref
from collections.abc import Sequence
from types import ModuleType

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
ByteBuffer = bytes | bytearray | memoryview  # what the capture walkers read records from
PURE_PYTHON_VARIABLE = "CONFSCOPE_PURE_PYTHON"
API_VERSION = 8  # must equal the extension's API_VERSION (analyzer/_speedups.c)
MIN_RECORD = 16  # smallest pcap record or pcapng packet block: the output capacity per byte
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _load() -> ModuleType | None:
    if os.environ.get(PURE_PYTHON_VARIABLE) == "1":
        return None
    try:
        from analyzer import _speedups
    except ImportError:
        return None
    if getattr(_speedups, "API_VERSION", None) != API_VERSION:
        warnings.warn(
            "analyzer._speedups was built from another version of analyzer/_speedups.c; "
            "using the Python code (rebuild: pip install -e .)",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return _speedups


native: ModuleType | None = _load()
HAVE_SPEEDUPS = native is not None  # the extension is built and was not switched off


def enabled() -> bool:
    """Whether the C paths are in use now (``native`` may be switched off after import)."""
    return native is not None


def _require() -> ModuleType:
    if native is None:
        raise RuntimeError("analyzer._speedups is not available")
    return native


def _outputs(buf: ByteBuffer, start: int, columns: int) -> list[IntArray]:
    capacity = max(len(buf) - start, 0) // MIN_RECORD + 1
    return [np.empty(capacity, dtype=np.int64) for _ in range(columns)]


def walk_pcap(
    buf: ByteBuffer, start: int, big_endian: bool, ns_per_tick: int, max_caplen: int
) -> tuple[list[IntArray], int, bool]:
    """Classic pcap records from ``start``: ([data_offset, caplen, wirelen, ts_ns], stop,
    whether it stopped on a record whose caplen exceeds ``max_caplen``)."""
    out = _outputs(buf, start, 4)
    count, stop, error = _require().walk_pcap(buf, start, big_endian, ns_per_tick, max_caplen, *out)
    return [column[:count].copy() for column in out], stop, bool(error)


# Interface table columns, in the order the C walker reads them.
INTERFACE_COLUMNS = ("linktype", "snaplen", "base", "exponent", "offset_ns", "usable")


def interface_table(rows: Sequence[tuple[int, int, int, int, int]]) -> IntArray:
    """int64 [n, 6] from (linktype, snaplen, base, exponent, offset_ns) per interface; an offset
    outside int64 marks the interface unusable, so Python converts its timestamps."""
    table = np.zeros((len(rows), len(INTERFACE_COLUMNS)), dtype=np.int64)
    for index, (linktype, snaplen, base, exponent, offset_ns) in enumerate(rows):
        usable = INT64_MIN <= offset_ns <= INT64_MAX
        table[index] = (linktype, snaplen, base, exponent, offset_ns if usable else 0, usable)
    return table


def walk_pcapng(
    buf: ByteBuffer, start: int, big_endian: bool, interfaces: IntArray, max_caplen: int,
    max_block: int,
) -> tuple[list[IntArray], int]:
    """pcapng packet blocks from ``start`` up to the first block Python must handle:
    ([data_offset, caplen, wirelen, ts_ns, linktype], stop)."""
    out = _outputs(buf, start, 5)
    count, stop = _require().walk_pcapng(
        buf, start, big_endian, interfaces, max_caplen, max_block, *out
    )
    return [column[:count].copy() for column in out], stop


# The PacketColumns fields decode_headers writes, in its argument order, with their dtypes.
HEADER_COLUMNS: tuple[tuple[str, type], ...] = (
    ("ip_version", np.uint8), ("src_hi", np.uint64), ("src_lo", np.uint64),
    ("dst_hi", np.uint64), ("dst_lo", np.uint64), ("ip_proto", np.uint8), ("fragment", np.bool_),
    ("later_fragment", np.bool_), ("tunnel", np.uint8), ("sport", np.int32),
    ("dport", np.int32), ("tcp_flags", np.uint8), ("tcp_seq", np.uint32),
    ("l3_offset", np.int64), ("l4_offset", np.int64), ("payload_offset", np.int64),
    ("payload_len", np.int64), ("payload_truncated", np.bool_),
)


def decode_headers(
    buffer: np.ndarray, data_offset: np.ndarray, caplen: np.ndarray, wirelen: np.ndarray,
    linktype: np.ndarray,
) -> dict[str, np.ndarray]:
    """``analyzer.packets.decode_batch`` in C: the decoded PacketColumns fields of a batch's
    packets (``buffer`` uint8, per-packet offsets and lengths int64, link types int32)."""
    out: dict[str, np.ndarray] = {
        name: np.empty(data_offset.size, dtype) for name, dtype in HEADER_COLUMNS
    }
    _require().decode_headers(
        np.ascontiguousarray(buffer, np.uint8), np.ascontiguousarray(data_offset, np.int64),
        np.ascontiguousarray(caplen, np.int64), np.ascontiguousarray(wirelen, np.int64),
        np.ascontiguousarray(linktype, np.int32), *out.values(),
    )
    return out


# The ZoomColumns fields zoom_classify writes, in its argument order, with their dtypes.
ZOOM_COLUMNS: tuple[tuple[str, type], ...] = (
    ("valid", np.bool_), ("layout", np.int8), ("media_type", np.int16), ("media_kind", np.int8),
    ("direction", np.int8), ("rtp_offset", np.int64), ("second_rtp_offset", np.int64),
    ("is_rtcp", np.bool_),
)


def zoom_classify(
    head: np.ndarray, length: np.ndarray, server_flow: np.ndarray
) -> dict[str, np.ndarray]:
    """``analyzer.decode.zoom.zoom_columns`` in C: the ZoomColumns fields for an (N, K >= 64)
    zero-padded uint8 matrix of payload heads, N payload lengths and server-flow flags."""
    head = np.ascontiguousarray(head, np.uint8)
    out: dict[str, np.ndarray] = {
        name: np.empty(head.shape[0], dtype) for name, dtype in ZOOM_COLUMNS
    }
    _require().zoom_classify(
        head, head.shape[1], np.ascontiguousarray(length, np.int64),
        np.ascontiguousarray(server_flow, np.bool_), *out.values(),
    )
    return out


def gather_be(buffer: np.ndarray, positions: np.ndarray, width: int) -> np.ndarray:
    """``analyzer.packets.Gather`` reads in C: the big-endian value (uint32) of the ``width``
    (1 to 4) bytes at each int64 position of a uint8 buffer, byte positions clamped into it."""
    out = np.empty(positions.shape, np.uint32)
    _require().gather_be(
        np.ascontiguousarray(buffer, np.uint8), np.ascontiguousarray(positions, np.int64), width,
        out,
    )
    return out


# The RTP packet columns find_media writes (up to 3 items per payload), with their dtypes.
RTP_PACKET_COLUMNS: tuple[tuple[str, type], ...] = (
    ("index", np.int64), ("offset", np.int64), ("length", np.int64), ("encap", np.int8),
    ("zoom_kind", np.int8), ("zoom_layout", np.int8), ("payload_type", np.uint8),
    ("marker", np.bool_), ("sequence_number", np.uint16), ("timestamp", np.uint32),
    ("ssrc", np.uint32), ("header_length_min", np.int64), ("extension", np.bool_),
    ("stream_key", np.int64),
)
RTCP_COLUMNS = ("index", "offset", "length")  # int64, of the RTCP candidates
MAX_CANDIDATES = 3  # per payload: the plain or TURN one, two inside Zoom


class MediaScratch:
    """The output arrays of `find_media`, reused from call to call: writing ~5 MB of fresh
    memory per batch costs more in page faults than the scan itself takes."""

    def __init__(self) -> None:
        self.payloads = -1
        self.rtp: dict[str, np.ndarray] = {}
        self.rtcp: dict[str, np.ndarray] = {}
        self.zoom_valid = np.empty(0, np.bool_)
        self.zoom_layout = np.empty(0, np.int8)

    def take(self, payloads: int
             ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """Outputs for `payloads` payloads (overwritten by the next call's)."""
        if payloads > self.payloads:
            self.payloads = payloads + payloads // 4  # batches vary a little in size
            capacity = MAX_CANDIDATES * self.payloads
            self.rtp = {name: np.empty(capacity, dtype) for name, dtype in RTP_PACKET_COLUMNS}
            self.rtcp = {name: np.empty(capacity, np.int64) for name in RTCP_COLUMNS}
            self.zoom_valid = np.empty(self.payloads, np.bool_)
            self.zoom_layout = np.empty(self.payloads, np.int8)
        capacity = MAX_CANDIDATES * payloads
        return ({name: column[:capacity] for name, column in self.rtp.items()},
                {name: column[:capacity] for name, column in self.rtcp.items()},
                self.zoom_valid[:payloads], self.zoom_layout[:payloads])


def find_media(
    buffer: np.ndarray, start: np.ndarray, size: np.ndarray, mode: np.ndarray, flow: np.ndarray,
    direction: np.ndarray, scratch: MediaScratch | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """``analyzer.media.find_media`` in C: for the UDP payloads at ``start`` (``size`` bytes,
    flow ``mode``, ``flow`` index and ``direction``), the RTP packet columns, the RTCP candidate
    columns and, per payload, the Zoom classification (valid, layout). With ``scratch`` the
    results are views of its arrays, valid until its next use."""
    start = np.ascontiguousarray(start, np.int64)
    rtp, rtcp, valid, layout = (scratch or MediaScratch()).take(start.size)
    n_rtp, n_rtcp = _require().find_media(
        np.ascontiguousarray(buffer, np.uint8), start, np.ascontiguousarray(size, np.int64),
        np.ascontiguousarray(mode, np.int8), np.ascontiguousarray(flow, np.int64),
        np.ascontiguousarray(direction, np.int8), *rtp.values(), *rtcp.values(), valid, layout,
    )
    return ({name: column[:n_rtp] for name, column in rtp.items()},
            {name: column[:n_rtcp] for name, column in rtcp.items()}, valid, layout)


def flow_keys(rows: IntArray, src_hi: np.ndarray, src_lo: np.ndarray, sport: np.ndarray,
              dst_hi: np.ndarray, dst_lo: np.ndarray, dport: np.ndarray, proto: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """(64-bit flow key, source sorts first) per row; see analyzer/flows.py flow_keys_numpy."""
    key = np.empty(rows.size, dtype=np.uint64)
    src_is_a = np.empty(rows.size, dtype=bool)
    _require().flow_keys(
        np.ascontiguousarray(rows, np.int64), np.ascontiguousarray(src_hi, np.uint64),
        np.ascontiguousarray(src_lo, np.uint64), np.ascontiguousarray(sport, np.int32),
        np.ascontiguousarray(dst_hi, np.uint64), np.ascontiguousarray(dst_lo, np.uint64),
        np.ascontiguousarray(dport, np.int32), np.ascontiguousarray(proto, np.uint8),
        key, src_is_a,
    )
    return key, src_is_a


def guard_mapping(mapped: mmap.mmap) -> int | None:
    """Guard a read-only file mapping: pages that the file cannot give while they are mapped
    (it is truncated, or a read fails) read as zeros instead of ending the process with
    SIGBUS. The guard's slot (see ``guarded_faults``), or None when this build or system cannot
    guard. The guard ends when ``mapped`` is freed."""
    module = native
    if module is None:
        return None
    slot = int(module.guard_mapping(mapped))
    if slot < 0:
        return None
    weakref.finalize(mapped, module.unguard_mapping, slot)
    return slot


def guarded_faults(slot: int) -> tuple[int, int]:
    """(pages, first): how many pages of the mapping guarded in ``slot`` read as zeros because
    the file could not give them, and the offset of the first in the mapping (-1: none)."""
    pages, first = _require().guarded_faults(slot)
    return int(pages), int(first)
