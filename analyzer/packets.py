"""Columnar decoding of link, IP and transport headers for a whole `PacketBatch`.

Every field is read with one numpy gather per byte over the batch; no Python loop runs per
packet. Gathers are clamped to the buffer, and every header is used only once length checks
show it lies inside the packet's captured bytes, so a packet cut by the snap length simply
decodes as far as its bytes go and nothing is read from a neighbouring packet.

When the C extension is in use (`analyzer.speedups.enabled()`), `decode_batch` runs the same
rules per packet in C (`analyzer/_speedups.c`, `decode_headers`); the numpy code here is the
reference the tests hold it to, field for field, and the fallback.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from analyzer import speedups
from analyzer.capture.batch import PacketBatch

# LINKTYPE_* values (tcpdump.org/linktypes.html)
LT_NULL, LT_ETHERNET, LT_RAW, LT_LOOP, LT_LINUX_SLL = 0, 1, 101, 108, 113
LT_IPV4, LT_IPV6, LT_LINUX_SLL2 = 228, 229, 276
LT_DLT_RAW = (12, 14)  # DLT_RAW on some BSDs / OpenBSD

ET_IPV4, ET_IPV6, ET_VLAN, ET_QINQ, ET_QINQ_OLD = 0x0800, 0x86DD, 0x8100, 0x88A8, 0x9100
ET_MPLS, ET_MPLS_MULTICAST, ET_PPPOE, ET_TEB, ET_PPP = 0x8847, 0x8848, 0x8864, 0x6558, 0x880B
VLAN_TAGS = (ET_VLAN, ET_QINQ, ET_QINQ_OLD)
PPP_IPV4, PPP_IPV6 = 0x0021, 0x0057
PROTO_TCP, PROTO_UDP, PROTO_GRE = 6, 17, 47
IPV6_EXTENSIONS = (0, 43, 60, 135, 139, 140, 253, 254)  # length in 8-octet units, minus one
IPV6_FRAGMENT, IPV6_AH, IPV6_NO_NEXT = 44, 51, 59
GTPU_PORT, VXLAN_PORT = 2152, 4789
MAX_TUNNEL_DEPTH = 3
MAX_LINK_HEADERS = 8  # VLAN tags, PPPoE and MPLS labels followed before giving up
MAX_EXTENSION_HEADERS = 8

TUNNEL_NONE, TUNNEL_GRE, TUNNEL_GTPU, TUNNEL_VXLAN = 0, 1, 2, 3

ETHERNET_TYPE_AT, ETHERNET_HEADER = 12, 14
LLC_SNAP_IP = (0xAAAA0300, 0x0000)  # DSAP, SSAP, control, then a zero OUI: an ethertype follows
COOKED = {LT_LINUX_SLL: (14, 16), LT_LINUX_SLL2: (0, 20)}  # (protocol offset, header length)
DECODED_LINKTYPES = frozenset({LT_NULL, LT_ETHERNET, LT_RAW, LT_LOOP, LT_LINUX_SLL, LT_IPV4,
                               LT_IPV6, LT_LINUX_SLL2, *LT_DLT_RAW})

# Header layouts: name -> (byte offset, width in bytes)
IPV4 = {"ihl": (0, 1), "total_length": (2, 2), "flags_fragment": (6, 2), "protocol": (9, 1),
        "src": (12, 4), "dst": (16, 4)}
IPV6 = {"payload_length": (4, 2), "next_header": (6, 1), "src": (8, 16), "dst": (24, 16)}
IPV4_MIN, IPV6_HEADER, UDP_HEADER, TCP_MIN = 20, 40, 8, 20
IPV4_MF, IPV4_OFFSET_MASK = 0x2000, 0x1FFF
TCP = {"data_offset": (12, 1), "flags": (13, 1), "seq": (4, 4)}
GRE_C, GRE_R, GRE_K, GRE_S, GRE_A, GRE_VERSION = 0x8000, 0x4000, 0x2000, 0x1000, 0x0080, 0x7
GTPU_G_PDU, GTPU_E_S_PN, GTPU_E = 0xFF, 0x07, 0x04
GTPU_HEADER, GTPU_OPTIONAL = 8, 4  # mandatory part; sequence, N-PDU and next-extension-type
MAX_GTPU_EXTENSIONS = 4
VXLAN_HEADER, VXLAN_I_FLAG = 8, 0x08
PPPOE_SESSION_HEADER, PPPOE_VER_TYPE = 6, 0x11


class Gather:
    """Big-endian field reads at per-packet byte positions of one buffer.

    Each byte's position is clamped into the buffer (an empty buffer reads zeros). With the C
    extension, int64 positions are read in one pass (``speedups.gather_be``); the numpy code
    (``_numpy_read``) is the reference and the fallback.
    """

    def __init__(self, buffer: np.ndarray) -> None:
        self.buffer = buffer
        self.last = max(buffer.size - 1, 0)

    def u8(self, pos: np.ndarray) -> np.ndarray:
        return self._read(pos, 1)

    def u16(self, pos: np.ndarray) -> np.ndarray:
        return self._read(pos, 2)

    def u32(self, pos: np.ndarray) -> np.ndarray:
        return self._read(pos, 4)

    def u64(self, pos: np.ndarray) -> np.ndarray:
        return (self.u32(pos).astype(np.uint64) << np.uint64(32)) | self.u32(pos + 4)

    def rows(self, offset: np.ndarray, length: np.ndarray, columns: int) -> np.ndarray:
        """The first `columns` bytes at each offset as an (N, columns) uint8 matrix: byte j of
        row i is buffer[offset[i] + j] when j < length[i] and that position is in the buffer,
        else 0. Rows wholly inside the buffer come from one strided gather (a sliding-window
        view), the others byte by byte."""
        offset, length = np.asarray(offset, np.int64), np.asarray(length, np.int64)
        size = self.buffer.size
        head = np.zeros((offset.size, columns), np.uint8)
        whole = (offset >= 0) & (offset <= size - columns) & (length >= columns)
        inside = np.flatnonzero(whole)
        if inside.size and columns:
            head[inside] = sliding_window_view(self.buffer, columns)[offset[inside]]
        cut = np.flatnonzero(~whole)
        if cut.size and size and columns:
            pos = offset[cut, None] + np.arange(columns)
            keep = (np.arange(columns) < length[cut, None]) & (pos >= 0) & (pos < size)
            head[cut] = np.where(keep, self.buffer[np.clip(pos, 0, size - 1)], 0)
        return head

    def _read(self, pos: np.ndarray, width: int) -> np.ndarray:
        if speedups.enabled() and isinstance(pos, np.ndarray) and pos.dtype == np.int64:
            return speedups.gather_be(self.buffer, pos, width)
        return self._numpy_read(pos, width)

    def _numpy_read(self, pos: np.ndarray, width: int) -> np.ndarray:
        value = self._numpy_u8(pos)
        for k in range(1, width):
            value = (value << 8) | self._numpy_u8(pos + k)
        return value

    def _numpy_u8(self, pos: np.ndarray) -> np.ndarray:
        if self.buffer.size == 0:
            return np.zeros(np.shape(pos), dtype=np.uint32)
        return self.buffer.take(np.clip(pos, 0, self.last)).astype(np.uint32)


@dataclass(slots=True)
class PacketColumns:
    """Per-packet header fields of a batch (one element per packet, in frame order).

    For tunnelled packets (GRE, GTP-U, VXLAN) the fields describe the innermost IP packet.
    """

    frame: np.ndarray  # int64
    ts_ns: np.ndarray  # int64
    wirelen: np.ndarray  # int64, frame length on the wire
    ip_version: np.ndarray  # uint8: 4, 6 or 0 (not IP)
    src_hi: np.ndarray  # uint64: IPv6 address high half (0 for IPv4)
    src_lo: np.ndarray  # uint64: low half (IPv4 as ::ffff:a.b.c.d)
    dst_hi: np.ndarray
    dst_lo: np.ndarray
    ip_proto: np.ndarray  # uint8 after extension headers (0 when not IP)
    fragment: np.ndarray  # bool: an IP fragment (first or later)
    later_fragment: np.ndarray  # bool: a non-first fragment (no transport header)
    tunnel: np.ndarray  # uint8 TUNNEL_* of the outermost tunnel removed
    sport: np.ndarray  # int32 (-1 when not TCP/UDP)
    dport: np.ndarray
    tcp_flags: np.ndarray  # uint8
    tcp_seq: np.ndarray  # uint32
    l3_offset: np.ndarray  # int64 into the batch buffer: the (innermost) IP header
    l4_offset: np.ndarray  # int64 into the batch buffer: the IP payload
    payload_offset: np.ndarray  # int64 into the batch buffer
    payload_len: np.ndarray  # int64 captured payload bytes (transport payload)
    payload_truncated: np.ndarray  # bool: the snap length cut the payload

    def __len__(self) -> int:
        return int(self.frame.size)


@dataclass(slots=True)
class _Layer:
    """Where each packet's current network header starts and where its bytes end."""

    l3: np.ndarray  # int64 offset of the network header
    ethertype: np.ndarray  # uint32: ET_IPV4, ET_IPV6 or 0
    end: np.ndarray  # int64: end of the captured bytes available to this layer
    wire_end: np.ndarray  # int64: where this layer's bytes end on the wire


def decode_batch(batch: PacketBatch) -> PacketColumns:
    """Decode every packet of `batch` down to its transport payload."""
    if speedups.enabled():
        return _decode_native(batch)
    g = Gather(batch.buffer)
    start = batch.data_offset
    end = start + batch.caplen
    l3, ethertype = link_layer(g, batch.linktype, start, end)
    layer = _Layer(l3, ethertype, end, start + np.maximum(batch.wirelen, batch.caplen))
    cols = _empty_columns(batch)
    todo = np.ones(len(batch), dtype=bool)
    for depth in range(MAX_TUNNEL_DEPTH + 1):
        declared_end = _decode_network(g, cols, layer, todo)
        if depth == MAX_TUNNEL_DEPTH:  # deeper tunnels are left wrapped
            break
        inner, kind = _tunnels(g, cols, layer, declared_end, todo)
        if depth == 0:
            cols.tunnel = kind
        todo = kind != TUNNEL_NONE
        if not todo.any():
            break
        _clear(cols, todo)
        layer = _select(todo, inner, layer)
    return cols


def _decode_native(batch: PacketBatch) -> PacketColumns:
    fields = speedups.decode_headers(
        batch.buffer, batch.data_offset, batch.caplen, batch.wirelen, batch.linktype
    )
    return PacketColumns(frame=batch.frame, ts_ns=batch.ts_ns, wirelen=batch.wirelen, **fields)


def link_layer(
    g: Gather, linktype: np.ndarray, start: np.ndarray, end: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Offset of the network header and its ethertype (0 when not IP) for each packet."""
    l3 = start.copy()
    ethertype = np.zeros(start.size, dtype=np.uint32)
    eth = linktype == LT_ETHERNET
    if eth.any():
        l3[eth], ethertype[eth] = _ethernet(g, start[eth])
    for lt, (et_at, header) in COOKED.items():
        sel = linktype == lt
        if sel.any():
            l3[sel], ethertype[sel] = _link_chain(g, start[sel] + header, g.u16(start[sel] + et_at))
    _raw_ip(g, linktype, start, ethertype)
    _bsd_loopback(g, linktype, start, l3, ethertype)
    ethertype[l3 >= end] = 0
    return l3, ethertype


def _ethernet(g: Gather, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ethernet II, or 802.3 with an LLC/SNAP header carrying an ethertype."""
    et = g.u16(start + ETHERNET_TYPE_AT)
    l3 = start + ETHERNET_HEADER
    snap = (et <= 1500) & (g.u32(l3) == LLC_SNAP_IP[0]) & (g.u16(l3 + 4) == LLC_SNAP_IP[1])
    et = np.where(snap, g.u16(l3 + 6), et)
    return _link_chain(g, np.where(snap, l3 + 8, l3), et)


def _link_chain(g: Gather, l3: np.ndarray, et: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Follow VLAN tags (802.1Q, QinQ), PPPoE sessions and MPLS labels down to IP."""
    for _ in range(MAX_LINK_HEADERS):
        vlan = np.isin(et, VLAN_TAGS)
        pppoe = (et == ET_PPPOE) & (g.u8(l3) == PPPOE_VER_TYPE) & (g.u8(l3 + 1) == 0)
        mpls = np.isin(et, (ET_MPLS, ET_MPLS_MULTICAST))
        if not (vlan.any() or pppoe.any() or mpls.any()):
            break
        bottom = mpls & ((g.u8(l3 + 2) & 1) == 1)
        step = np.select([vlan, pppoe, mpls], [4, PPPOE_SESSION_HEADER + 2, 4], 0)
        after = l3 + step
        et = np.select(
            [vlan, pppoe, bottom, mpls],
            [g.u16(l3 + 2), _ppp_ethertype(g.u16(l3 + 6)), _ethertype_from_version(g.u8(after)),
             et],
            et,
        ).astype(np.uint32)
        l3 = after
    return l3, np.where(np.isin(et, (ET_IPV4, ET_IPV6)), et, 0).astype(np.uint32)


def _ppp_ethertype(protocol: np.ndarray) -> np.ndarray:
    return np.select([protocol == PPP_IPV4, protocol == PPP_IPV6], [ET_IPV4, ET_IPV6], 0)


def _ethertype_from_version(first_byte: np.ndarray) -> np.ndarray:
    version = first_byte >> 4
    return np.select([version == 4, version == 6], [ET_IPV4, ET_IPV6], 0).astype(np.uint32)


def _raw_ip(g: Gather, linktype: np.ndarray, start: np.ndarray, ethertype: np.ndarray) -> None:
    """Raw IP (version from the first nibble); LINKTYPE_IPV4/IPV6 admit only their version."""
    raw = np.isin(linktype, (LT_RAW, LT_IPV4, LT_IPV6, *LT_DLT_RAW))
    if not raw.any():
        return
    et = _ethertype_from_version(g.u8(start[raw]))
    lt = linktype[raw]
    et[((lt == LT_IPV4) & (et != ET_IPV4)) | ((lt == LT_IPV6) & (et != ET_IPV6))] = 0
    ethertype[raw] = et


def _bsd_loopback(
    g: Gather, linktype: np.ndarray, start: np.ndarray, l3: np.ndarray, ethertype: np.ndarray
) -> None:
    """DLT_NULL (host byte order family) and DLT_LOOP (network order): 4-byte header."""
    sel = np.isin(linktype, (LT_NULL, LT_LOOP))
    if not sel.any():
        return
    family_be = g.u32(start[sel])
    family_le = family_be.byteswap()
    family = np.where(family_be < 256, family_be, family_le)
    ethertype[sel] = np.select(
        [family == 2, np.isin(family, (10, 23, 24, 28, 30))], [ET_IPV4, ET_IPV6], 0
    )
    l3[sel] = start[sel] + 4


def _empty_columns(batch: PacketBatch) -> PacketColumns:
    n = len(batch)

    def zeros(dtype: type) -> np.ndarray:
        return np.zeros(n, dtype=dtype)

    return PacketColumns(
        frame=batch.frame, ts_ns=batch.ts_ns, wirelen=batch.wirelen,
        ip_version=zeros(np.uint8), src_hi=zeros(np.uint64), src_lo=zeros(np.uint64),
        dst_hi=zeros(np.uint64), dst_lo=zeros(np.uint64), ip_proto=zeros(np.uint8),
        fragment=zeros(bool), later_fragment=zeros(bool), tunnel=zeros(np.uint8),
        sport=np.full(n, -1, dtype=np.int32), dport=np.full(n, -1, dtype=np.int32),
        tcp_flags=zeros(np.uint8), tcp_seq=zeros(np.uint32), l3_offset=zeros(np.int64),
        l4_offset=zeros(np.int64),
        payload_offset=zeros(np.int64), payload_len=zeros(np.int64),
        payload_truncated=zeros(bool),
    )


def _clear(cols: PacketColumns, rows: np.ndarray) -> None:
    """Forget the outer headers of `rows` before their inner packet is decoded."""
    for name in ("ip_version", "src_hi", "src_lo", "dst_hi", "dst_lo", "ip_proto", "fragment",
                 "later_fragment", "tcp_flags", "tcp_seq", "l3_offset", "l4_offset",
                 "payload_offset", "payload_len", "payload_truncated"):
        getattr(cols, name)[rows] = 0
    cols.sport[rows], cols.dport[rows] = -1, -1


def _select(rows: np.ndarray, inner: _Layer, outer: _Layer) -> _Layer:
    return _Layer(*(np.where(rows, getattr(inner, f), getattr(outer, f)) for f in _Layer.__slots__))


def _ip_header_ok(g: Gather, layer: _Layer) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose IPv4 / IPv6 fixed header is present, of the right version and sane."""
    first = g.u8(layer.l3)
    v4 = ((layer.ethertype == ET_IPV4) & (first >> 4 == 4) & ((first & 0x0F) * 4 >= IPV4_MIN)
          & (layer.l3 + IPV4_MIN <= layer.end))
    v6 = (layer.ethertype == ET_IPV6) & (first >> 4 == 6) & (layer.l3 + IPV6_HEADER <= layer.end)
    return v4, v6


def _decode_network(g: Gather, cols: PacketColumns, layer: _Layer, todo: np.ndarray) -> np.ndarray:
    """IPv4/IPv6 then TCP/UDP for the rows selected by `todo`, written into `cols`.

    Returns, per row, where the IP packet ends as declared by its header.
    """
    v4, v6 = _ip_header_ok(g, layer)
    v4 &= todo
    v6 &= todo
    l4 = np.zeros_like(layer.l3)
    ip_end = np.zeros_like(layer.l3)
    if v4.any():
        _ipv4(g, cols, layer, v4, l4, ip_end)
    if v6.any():
        _ipv6(g, cols, layer, v6, l4, ip_end)
    ip = v4 | v6
    cols.ip_version[v4], cols.ip_version[v6] = 4, 6
    cols.l3_offset[ip], cols.l4_offset[ip] = layer.l3[ip], l4[ip]
    return _transport(g, cols, l4, ip_end, layer.end, ip & ~cols.later_fragment)


def _ipv4(
    g: Gather, cols: PacketColumns, layer: _Layer, sel: np.ndarray,
    l4: np.ndarray, ip_end: np.ndarray,
) -> None:
    base = layer.l3[sel]
    ihl = (g.u8(base) & 0x0F).astype(np.int64) * 4
    total = g.u16(base + IPV4["total_length"][0]).astype(np.int64)
    frag = g.u16(base + IPV4["flags_fragment"][0])
    offset = frag & IPV4_OFFSET_MASK
    cols.fragment[sel] = ((frag & IPV4_MF) != 0) | (offset != 0)
    cols.later_fragment[sel] = offset != 0
    cols.ip_proto[sel] = g.u8(base + IPV4["protocol"][0])
    mapped = np.uint64(0xFFFF << 32)
    cols.src_lo[sel] = g.u32(base + IPV4["src"][0]).astype(np.uint64) | mapped
    cols.dst_lo[sel] = g.u32(base + IPV4["dst"][0]).astype(np.uint64) | mapped
    l4[sel] = base + ihl
    # total length 0: sent with TCP segmentation offload, the frame length is the truth
    ip_end[sel] = np.where(total == 0, layer.wire_end[sel], base + np.maximum(total, ihl))


def _ipv6(
    g: Gather, cols: PacketColumns, layer: _Layer, sel: np.ndarray,
    l4: np.ndarray, ip_end: np.ndarray,
) -> None:
    base = layer.l3[sel]
    src, dst = base + IPV6["src"][0], base + IPV6["dst"][0]
    cols.src_hi[sel], cols.src_lo[sel] = g.u64(src), g.u64(src + 8)
    cols.dst_hi[sel], cols.dst_lo[sel] = g.u64(dst), g.u64(dst + 8)
    length = g.u16(base + IPV6["payload_length"][0]).astype(np.int64)
    nxt = g.u8(base + IPV6["next_header"][0])
    # payload length 0: a jumbogram or segmentation offload, the frame length is the truth
    unsized = (length == 0) & (nxt != IPV6_NO_NEXT)
    declared = np.where(unsized, layer.wire_end[sel], base + IPV6_HEADER + length)
    ip_end[sel] = declared
    stop = np.minimum(declared, layer.end[sel])
    nxt, l4[sel], cols.fragment[sel], cols.later_fragment[sel] = _ipv6_extensions(
        g, nxt, base + IPV6_HEADER, stop
    )
    cols.ip_proto[sel] = nxt


def _ipv6_extensions(
    g: Gather, nxt: np.ndarray, pos: np.ndarray, stop: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Walk the extension headers wholly inside the captured bytes (RFC 8200 §4).

    Returns the upper-layer protocol (or the header the walk stopped at), its offset and the
    fragment marks (an atomic fragment, offset 0 and no M flag, is not a fragment).
    """
    fragment, later = np.zeros(pos.size, bool), np.zeros(pos.size, bool)
    for _ in range(MAX_EXTENSION_HEADERS):
        ext, is_frag, is_ah = np.isin(nxt, IPV6_EXTENSIONS), nxt == IPV6_FRAGMENT, nxt == IPV6_AH
        length = g.u8(pos + 1).astype(np.int64)
        step = np.select([ext, is_frag, is_ah], [(length + 1) * 8, 8, (length + 2) * 4], 0)
        walk = (step > 0) & (pos + step <= stop)
        if not walk.any():
            break
        offset_flags = g.u16(pos + 2)
        fragment |= walk & is_frag & ((offset_flags & 0xFFF9) != 0)  # offset or M flag
        later |= walk & is_frag & ((offset_flags >> 3) != 0)
        nxt = np.where(walk, g.u8(pos), nxt)
        pos = np.where(walk, pos + step, pos)
    return nxt, pos, fragment, later


def _transport(
    g: Gather, cols: PacketColumns, l4: np.ndarray, ip_end: np.ndarray, end: np.ndarray,
    sel: np.ndarray,
) -> np.ndarray:
    """TCP/UDP ports and payload bounds; returns where each payload ends as declared."""
    stop = np.minimum(ip_end, end)  # the captured part of the IP packet
    udp = sel & (cols.ip_proto == PROTO_UDP) & (l4 + UDP_HEADER <= stop)
    tcp = sel & (cols.ip_proto == PROTO_TCP) & (l4 + TCP_MIN <= stop)
    declared = ip_end.copy()
    ports = udp | tcp
    if not ports.any():
        return declared
    at, stop, udp, tcp = l4[ports], stop[ports], udp[ports], tcp[ports]
    cols.sport[ports], cols.dport[ports] = g.u16(at), g.u16(at + 2)
    tcp_header = np.maximum((g.u8(at + TCP["data_offset"][0]) >> 4).astype(np.int64) * 4, TCP_MIN)
    udp_length = g.u16(at + 4).astype(np.int64)
    payload_at = np.minimum(at + np.where(tcp, tcp_header, UDP_HEADER), stop)
    udp_end = np.where(udp_length == 0, ip_end[ports], at + np.maximum(udp_length, UDP_HEADER))
    payload_end = np.where(udp, np.minimum(udp_end, ip_end[ports]), ip_end[ports])
    cols.tcp_flags[ports] = np.where(tcp, g.u8(at + TCP["flags"][0]), 0)
    cols.tcp_seq[ports] = np.where(tcp, g.u32(at + TCP["seq"][0]), 0)
    cols.payload_offset[ports] = payload_at
    cols.payload_len[ports] = np.clip(np.minimum(payload_end, stop) - payload_at, 0, None)
    cols.payload_truncated[ports] = payload_end > stop
    declared[ports] = payload_end
    return declared


def uncaptured_udp_bytes(buffer: np.ndarray, cols: PacketColumns, rows: np.ndarray
                         ) -> np.ndarray:
    """Per UDP packet of `rows`: payload bytes its headers declare that this frame does not
    hold, because the snap length cut them or (first IP fragment) later fragments carry them.

    What Wireshark counts as the RTP packet's length: the UDP length field, bounded by the IP
    length except in a first fragment, where it is the whole reassembled datagram's.
    """
    missing = np.zeros(rows.size, np.int64)
    if not (cols.payload_truncated.any() or cols.fragment.any()):  # (most batches)
        return missing
    short = np.flatnonzero(cols.payload_truncated[rows]
                           | (cols.fragment[rows] & ~cols.later_fragment[rows]))
    at = rows[short]
    g, l3, l4 = Gather(buffer), cols.l3_offset[at], cols.l4_offset[at]
    ip_end = np.where(cols.ip_version[at] == 4,
                      l3 + g.u16(l3 + IPV4["total_length"][0]).astype(np.int64),
                      l3 + IPV6_HEADER + g.u16(l3 + IPV6["payload_length"][0]).astype(np.int64))
    udp_length = g.u16(l4 + 4).astype(np.int64)
    udp_end = np.where(udp_length >= UDP_HEADER, l4 + udp_length, ip_end)
    declared_end = np.where(cols.fragment[at], udp_end, np.minimum(udp_end, ip_end))
    captured_end = cols.payload_offset[at] + cols.payload_len[at]
    missing[short] = np.maximum(declared_end - captured_end, 0)
    return missing


def _tunnels(
    g: Gather, cols: PacketColumns, layer: _Layer, declared_end: np.ndarray, todo: np.ndarray
) -> tuple[_Layer, np.ndarray]:
    """The inner network layer and tunnel kind for GRE, GTP-U and VXLAN packets.

    A tunnel is removed only when its inner IP header is wholly captured and sane; fragments
    are left alone (the inner packet is incomplete).
    """
    n = todo.size
    inner = _Layer(np.zeros(n, np.int64), np.zeros(n, np.uint32),
                   np.minimum(declared_end, layer.end), declared_end.copy())
    kind = np.zeros(n, np.uint8)
    whole = todo & (cols.ip_version > 0) & ~cols.fragment
    gre = whole & (cols.ip_proto == PROTO_GRE)
    if gre.any():
        kind[gre] = _gre(g, cols.l4_offset[gre], inner, gre)
    udp = whole & (cols.ip_proto == PROTO_UDP) & (cols.sport >= 0)
    gtp = udp & ((cols.dport == GTPU_PORT) | (cols.sport == GTPU_PORT))
    if gtp.any():
        kind[gtp] = _gtpu(g, cols.payload_offset[gtp], inner, gtp)
    vxlan = udp & (cols.dport == VXLAN_PORT) & ~gtp
    if vxlan.any():
        kind[vxlan] = _vxlan(g, cols.payload_offset[vxlan], inner, vxlan)
    v4, v6 = _ip_header_ok(g, inner)
    kind[~(v4 | v6)] = TUNNEL_NONE
    return inner, kind


def _gre(g: Gather, at: np.ndarray, inner: _Layer, sel: np.ndarray) -> np.ndarray:
    """GRE (RFC 2784/2890, and RFC 2637 enhanced GRE for PPTP) -> inner layer; kind per row."""
    flags, proto = g.u16(at), g.u16(at + 2)
    version = flags & GRE_VERSION
    optional = (((flags & GRE_C) != 0).astype(np.int64) + ((flags & GRE_K) != 0)
                + ((flags & GRE_S) != 0))
    l3 = at + 4 + 4 * optional
    plain = (version == 0) & ((flags & GRE_R) == 0)  # source routing (RFC 1701) not followed
    teb = plain & (proto == ET_TEB)
    l3, et = _link_chain(g, l3, np.where(plain, proto, 0).astype(np.uint32))
    if teb.any():
        l3[teb], et[teb] = _ethernet(g, at[teb] + 4 + 4 * optional[teb])
    pptp = (version == 1) & (proto == ET_PPP)
    if pptp.any():
        ppp_at = at[pptp] + 8 + 4 * ((flags[pptp] & GRE_S) != 0) + 4 * ((flags[pptp] & GRE_A) != 0)
        l3[pptp], et[pptp] = _ppp(g, ppp_at)
    inner.l3[sel], inner.ethertype[sel] = l3, et
    return np.full(at.size, TUNNEL_GRE, np.uint8)


def _ppp(g: Gather, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PPP frame: optional ff 03 address/control, then a 1- or 2-byte protocol field."""
    at = np.where(g.u16(at) == 0xFF03, at + 2, at)
    short = (g.u8(at) & 1) == 1  # protocol-field compression
    proto = np.where(short, g.u8(at), g.u16(at))
    return at + np.where(short, 1, 2), _ppp_ethertype(proto).astype(np.uint32)


def _gtpu(g: Gather, at: np.ndarray, inner: _Layer, sel: np.ndarray) -> np.ndarray:
    """GTP-U (3GPP TS 29.281) G-PDU -> inner layer; kind per row (NONE if not a G-PDU)."""
    flags, msg_type = g.u8(at), g.u8(at + 1)
    gtp_end = at + GTPU_HEADER + g.u16(at + 2).astype(np.int64)
    gpdu = ((flags >> 5) == 1) & ((flags & 0x10) != 0) & (msg_type == GTPU_G_PDU)
    pos = at + GTPU_HEADER + np.where((flags & GTPU_E_S_PN) != 0, GTPU_OPTIONAL, 0)
    next_ext = np.where((flags & GTPU_E) != 0, g.u8(at + 11), 0)
    for _ in range(MAX_GTPU_EXTENSIONS):  # length in 4-octet units, next type in the last octet
        more = next_ext != 0
        if not more.any():
            break
        length = g.u8(pos).astype(np.int64) * 4
        gpdu &= ~more | (length > 0)
        next_ext = np.where(more & (length > 0), g.u8(pos + length - 1), 0)
        pos = np.where(more, pos + length, pos)
    gpdu &= next_ext == 0
    inner.l3[sel] = pos
    inner.ethertype[sel] = np.where(gpdu, _ethertype_from_version(g.u8(pos)), 0)
    inner.end[sel] = np.minimum(inner.end[sel], gtp_end)
    inner.wire_end[sel] = np.minimum(inner.wire_end[sel], gtp_end)
    return np.where(gpdu, TUNNEL_GTPU, TUNNEL_NONE).astype(np.uint8)


def _vxlan(g: Gather, at: np.ndarray, inner: _Layer, sel: np.ndarray) -> np.ndarray:
    """VXLAN (RFC 7348): 8-byte header with the I flag, then an Ethernet frame."""
    valid = (g.u8(at) & VXLAN_I_FLAG) != 0
    l3, et = _ethernet(g, at + VXLAN_HEADER)
    inner.l3[sel], inner.ethertype[sel] = l3, np.where(valid, et, 0)
    return np.where(valid, TUNNEL_VXLAN, TUNNEL_NONE).astype(np.uint8)
