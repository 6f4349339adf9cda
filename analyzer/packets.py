"""Columnar decoding of link, IP and transport headers for a whole `PacketBatch`.

Every field is read with one numpy gather per byte over the batch; no Python loop runs per
packet. Reads past a packet's captured end are clamped and then masked out by length checks, so
a packet cut by the snap length simply decodes as far as its bytes go.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analyzer.capture.batch import PacketBatch

# LINKTYPE_* values (tcpdump.org/linktypes.html)
LT_NULL, LT_ETHERNET, LT_RAW, LT_LOOP, LT_LINUX_SLL = 0, 1, 101, 108, 113
LT_IPV4, LT_IPV6, LT_LINUX_SLL2 = 228, 229, 276
LT_DLT_RAW = (12, 14)  # DLT_RAW on some BSDs / OpenBSD

ET_IPV4, ET_IPV6, ET_VLAN, ET_QINQ, ET_QINQ_OLD = 0x0800, 0x86DD, 0x8100, 0x88A8, 0x9100
ET_MPLS, ET_PPPOE, ET_TEB, ET_PPP = 0x8847, 0x8864, 0x6558, 0x880B
PROTO_TCP, PROTO_UDP, PROTO_GRE = 6, 17, 47
IPV6_EXTENSIONS = (0, 43, 60, 135, 139, 140, 253, 254)  # length in 8-octet units
IPV6_FRAGMENT, IPV6_AH = 44, 51
GTPU_PORT, VXLAN_PORT = 2152, 4789
MAX_TUNNEL_DEPTH = 3

TUNNEL_NONE, TUNNEL_GRE, TUNNEL_GTPU, TUNNEL_VXLAN = 0, 1, 2, 3


class Gather:
    """Big-endian field reads at per-packet byte positions of one buffer."""

    def __init__(self, buffer: np.ndarray) -> None:
        self.buffer = buffer
        self.last = max(buffer.size - 1, 0)

    def u8(self, pos: np.ndarray) -> np.ndarray:
        return self.buffer.take(np.minimum(pos, self.last)).astype(np.uint32)

    def u16(self, pos: np.ndarray) -> np.ndarray:
        return (self.u8(pos) << 8) | self.u8(pos + 1)

    def u32(self, pos: np.ndarray) -> np.ndarray:
        return (self.u16(pos) << 16) | self.u16(pos + 2)

    def u64(self, pos: np.ndarray) -> np.ndarray:
        return (self.u32(pos).astype(np.uint64) << np.uint64(32)) | self.u32(pos + 4)


@dataclass(slots=True)
class PacketColumns:
    """Per-packet header fields of a batch (one element per packet, in frame order)."""

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
    l4_offset: np.ndarray  # int64 into the batch buffer: the IP payload
    payload_offset: np.ndarray  # int64 into the batch buffer
    payload_len: np.ndarray  # int64 captured payload bytes (transport payload)
    payload_truncated: np.ndarray  # bool: the snap length cut the payload

    def __len__(self) -> int:
        return int(self.frame.size)


def decode_batch(batch: PacketBatch) -> PacketColumns:
    """Decode every packet of `batch` down to its transport payload."""
    g = Gather(batch.buffer)
    start = batch.data_offset
    end = start + batch.caplen
    l3, ethertype = link_layer(g, batch.linktype, start, end)
    cols = _empty_columns(batch)
    tunnel = np.zeros(len(batch), dtype=np.uint8)
    todo = np.ones(len(batch), dtype=bool)
    for depth in range(MAX_TUNNEL_DEPTH + 1):
        _decode_network(g, cols, l3, ethertype, end, todo)
        inner_l3, inner_et, kind = _tunnels(g, cols, end, todo)
        todo = kind != TUNNEL_NONE
        if depth == 0:
            tunnel = kind.astype(np.uint8)
        if not todo.any():
            break
        l3, ethertype = np.where(todo, inner_l3, l3), np.where(todo, inner_et, ethertype)
    cols.tunnel = tunnel
    return cols


def link_layer(
    g: Gather, linktype: np.ndarray, start: np.ndarray, end: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Offset of the network header and its ethertype (0 when not IP) for each packet."""
    l3 = start.copy()
    ethertype = np.zeros(start.size, dtype=np.uint32)
    eth = linktype == LT_ETHERNET
    if eth.any():
        l3[eth], ethertype[eth] = _ethernet(g, start[eth])
    for lt, et_at, header in ((LT_LINUX_SLL, 14, 16), (LT_LINUX_SLL2, 0, 20)):
        sel = linktype == lt
        if sel.any():
            ethertype[sel], l3[sel] = g.u16(start[sel] + et_at), start[sel] + header
    raw = np.isin(linktype, (LT_RAW, LT_IPV4, LT_IPV6, *LT_DLT_RAW))
    ethertype[raw] = _ethertype_from_version(g.u8(start[raw]))
    _bsd_loopback(g, linktype, start, l3, ethertype)
    ethertype[l3 >= end] = 0
    return l3, ethertype


def _ethernet(g: Gather, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    et = g.u16(start + 12)
    l3 = start + 14
    for _ in range(3):  # 802.1Q, QinQ (802.1ad) and the old 0x9100 tag
        tagged = np.isin(et, (ET_VLAN, ET_QINQ, ET_QINQ_OLD))
        if not tagged.any():
            break
        et = np.where(tagged, g.u16(l3 + 2), et)
        l3 = np.where(tagged, l3 + 4, l3)
    pppoe = et == ET_PPPOE  # PPPoE session: 6-byte header, then the PPP protocol
    if pppoe.any():
        ppp = g.u16(l3 + 6)
        et = np.where(pppoe, np.select([ppp == 0x21, ppp == 0x57], [ET_IPV4, ET_IPV6], 0), et)
        l3 = np.where(pppoe, l3 + 8, l3)
    return _mpls(g, l3, et)


def _mpls(g: Gather, l3: np.ndarray, et: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mpls = et == ET_MPLS
    for _ in range(8):  # pop labels to the bottom of the stack, then guess IP by version
        if not mpls.any():
            break
        bottom = mpls & ((g.u8(l3 + 2) & 1) == 1)
        l3 = np.where(mpls, l3 + 4, l3)
        et = np.where(bottom, _ethertype_from_version(g.u8(l3)), et)
        mpls = mpls & ~bottom
    return l3, np.where(mpls, 0, et)


def _ethertype_from_version(first_byte: np.ndarray) -> np.ndarray:
    version = first_byte >> 4
    return np.select([version == 4, version == 6], [ET_IPV4, ET_IPV6], 0).astype(np.uint32)


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
        tcp_flags=zeros(np.uint8), tcp_seq=zeros(np.uint32), l4_offset=zeros(np.int64),
        payload_offset=zeros(np.int64), payload_len=zeros(np.int64),
        payload_truncated=zeros(bool),
    )


def _decode_network(
    g: Gather, cols: PacketColumns, l3: np.ndarray, ethertype: np.ndarray,
    end: np.ndarray, todo: np.ndarray,
) -> None:
    """IPv4/IPv6 then TCP/UDP for the packets selected by `todo`, written into `cols`."""
    version = g.u8(l3) >> 4
    v4 = todo & (ethertype == ET_IPV4) & (version == 4) & (l3 + 20 <= end)
    v6 = todo & (ethertype == ET_IPV6) & (version == 6) & (l3 + 40 <= end)
    cols.ip_version[todo] = 0
    l4 = np.zeros_like(l3)
    ip_end = np.zeros_like(l3)
    if v4.any():
        _ipv4(g, cols, l3, v4, l4, ip_end)
    if v6.any():
        _ipv6(g, cols, l3, v6, l4, ip_end)
    ip = v4 | v6
    cols.ip_version[v4], cols.ip_version[v6] = 4, 6
    cols.l4_offset[ip] = l4[ip]
    _transport(g, cols, l4, np.minimum(ip_end, end), ip_end > end, ip & ~cols.later_fragment)


def _ipv4(
    g: Gather, cols: PacketColumns, l3: np.ndarray, sel: np.ndarray,
    l4: np.ndarray, ip_end: np.ndarray,
) -> None:
    base = l3[sel]
    ihl = (g.u8(base) & 0x0F).astype(np.int64) * 4
    total = g.u16(base + 2).astype(np.int64)
    frag = g.u16(base + 6)
    offset = frag & 0x1FFF
    cols.fragment[sel] = ((frag & 0x2000) != 0) | (offset != 0)
    cols.later_fragment[sel] = offset != 0
    cols.ip_proto[sel] = g.u8(base + 9)
    cols.src_hi[sel], cols.dst_hi[sel] = 0, 0
    mapped = np.uint64(0xFFFF << 32)
    cols.src_lo[sel] = g.u32(base + 12).astype(np.uint64) | mapped
    cols.dst_lo[sel] = g.u32(base + 16).astype(np.uint64) | mapped
    l4[sel] = base + np.maximum(ihl, 20)
    ip_end[sel] = base + np.where(total >= ihl, total, 0)


def _ipv6(
    g: Gather, cols: PacketColumns, l3: np.ndarray, sel: np.ndarray,
    l4: np.ndarray, ip_end: np.ndarray,
) -> None:
    base = l3[sel]
    cols.src_hi[sel], cols.src_lo[sel] = g.u64(base + 8), g.u64(base + 16)
    cols.dst_hi[sel], cols.dst_lo[sel] = g.u64(base + 24), g.u64(base + 32)
    ip_end[sel] = base + 40 + g.u16(base + 4).astype(np.int64)
    nxt, pos = g.u8(base + 6), base + 40
    fragment, later = np.zeros(base.size, bool), np.zeros(base.size, bool)
    for _ in range(8):  # walk extension headers
        ext = np.isin(nxt, IPV6_EXTENSIONS)
        is_frag, is_ah = nxt == IPV6_FRAGMENT, nxt == IPV6_AH
        step = np.select(
            [ext, is_frag, is_ah],
            [(g.u8(pos + 1).astype(np.int64) + 1) * 8, 8, (g.u8(pos + 1).astype(np.int64) + 2) * 4],
            0,
        )
        if not step.any():
            break
        fragment |= is_frag
        later |= is_frag & ((g.u16(pos + 2) >> 3) != 0)
        nxt = np.where(step > 0, g.u8(pos), nxt)
        pos = pos + step
    cols.ip_proto[sel], cols.fragment[sel], cols.later_fragment[sel] = nxt, fragment, later
    l4[sel] = pos


def _transport(
    g: Gather, cols: PacketColumns, l4: np.ndarray, stop: np.ndarray,
    truncated: np.ndarray, sel: np.ndarray,
) -> None:
    """TCP/UDP ports and payload bounds; `stop` is where the captured IP payload ends."""
    udp = sel & (cols.ip_proto == PROTO_UDP) & (l4 + 8 <= stop)
    tcp = sel & (cols.ip_proto == PROTO_TCP) & (l4 + 20 <= stop)
    ports = udp | tcp
    if not ports.any():
        return
    at, stop, udp, tcp = l4[ports], stop[ports], udp[ports], tcp[ports]
    cols.sport[ports], cols.dport[ports] = g.u16(at), g.u16(at + 2)
    tcp_header = (g.u8(at + 12) >> 4).astype(np.int64) * 4
    payload_at = at + np.where(tcp, np.maximum(tcp_header, 20), 8)
    payload_end = np.where(udp, np.minimum(at + g.u16(at + 4).astype(np.int64), stop), stop)
    cols.tcp_flags[ports] = np.where(tcp, g.u8(at + 13), 0)
    cols.tcp_seq[ports] = np.where(tcp, g.u32(at + 4), 0)
    cols.payload_offset[ports] = payload_at
    cols.payload_len[ports] = np.clip(payload_end - payload_at, 0, None)
    cols.payload_truncated[ports] = truncated[ports]


def _tunnels(
    g: Gather, cols: PacketColumns, end: np.ndarray, todo: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inner network header offset, ethertype and tunnel kind for GRE, GTP-U and VXLAN."""
    n = todo.size
    inner_l3, inner_et = np.zeros(n, np.int64), np.zeros(n, np.uint32)
    kind = np.zeros(n, np.uint8)
    gre = todo & (cols.ip_proto == PROTO_GRE) & ~cols.later_fragment & (cols.ip_version > 0)
    if gre.any():
        _gre(g, cols, gre, inner_l3, inner_et, kind)
    udp = todo & (cols.ip_proto == PROTO_UDP) & (cols.payload_len >= 8)
    gtp = udp & ((cols.dport == GTPU_PORT) | (cols.sport == GTPU_PORT))
    if gtp.any():
        _gtpu(g, cols, gtp, inner_l3, inner_et, kind)
    vxlan = udp & (cols.dport == VXLAN_PORT)
    if vxlan.any():
        at = cols.payload_offset[vxlan] + 8
        inner_l3[vxlan], inner_et[vxlan] = _ethernet(g, at)
        kind[vxlan] = TUNNEL_VXLAN
    kind[(inner_et == 0) | (inner_l3 >= end)] = TUNNEL_NONE
    return inner_l3, inner_et, kind


def _gre(
    g: Gather, cols: PacketColumns, sel: np.ndarray,
    inner_l3: np.ndarray, inner_et: np.ndarray, kind: np.ndarray,
) -> None:
    at = cols.l4_offset[sel]
    flags = g.u16(at)
    proto = g.u16(at + 2)
    header = 4 + 4 * (((flags & 0x8000) != 0).astype(np.int64) + ((flags & 0x2000) != 0)
                      + ((flags & 0x1000) != 0))
    version = flags & 0x7
    plain = version == 0
    ip_inner = plain & np.isin(proto, (ET_IPV4, ET_IPV6))
    eth_inner = plain & (proto == ET_TEB)
    l3, et = at + header, np.where(ip_inner, proto, 0).astype(np.uint32)
    if eth_inner.any():
        e_l3, e_et = _ethernet(g, l3[eth_inner])
        l3[eth_inner], et[eth_inner] = e_l3, e_et
    pptp = (version == 1) & (proto == ET_PPP)  # RFC 2637 enhanced GRE: key always, ack flag
    if pptp.any():
        ppp_at = at[pptp] + 8 + 4 * ((flags[pptp] & 0x1000) != 0) + 4 * ((flags[pptp] & 0x80) != 0)
        l3[pptp], et[pptp] = _ppp(g, ppp_at)
    inner_l3[sel], inner_et[sel] = l3, et
    kind[sel] = TUNNEL_GRE


def _ppp(g: Gather, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PPP frame: optional ff 03 address/control, then a 1- or 2-byte protocol field."""
    at = np.where(g.u16(at) == 0xFF03, at + 2, at)
    short = (g.u8(at) & 1) == 1  # protocol-field compression
    proto = np.where(short, g.u8(at), g.u16(at))
    et = np.select([proto == 0x21, proto == 0x57], [ET_IPV4, ET_IPV6], 0).astype(np.uint32)
    return at + np.where(short, 1, 2), et


def _gtpu(
    g: Gather, cols: PacketColumns, sel: np.ndarray,
    inner_l3: np.ndarray, inner_et: np.ndarray, kind: np.ndarray,
) -> None:
    at = cols.payload_offset[sel]
    flags, msg_type = g.u8(at), g.u8(at + 1)
    gpdu = ((flags >> 5) == 1) & ((flags & 0x10) != 0) & (msg_type == 0xFF)
    pos = at + np.where((flags & 0x07) != 0, 12, 8)
    next_ext = np.where((flags & 0x04) != 0, g.u8(at + 11), 0)
    for _ in range(4):  # GTP-U extension headers: length in 4-octet units, next type last
        more = next_ext != 0
        if not more.any():
            break
        length = g.u8(pos).astype(np.int64) * 4
        next_ext = np.where(more, g.u8(pos + length - 1), 0)
        pos = np.where(more, pos + np.maximum(length, 4), pos)
    inner_l3[sel] = pos
    inner_et[sel] = np.where(gpdu, _ethertype_from_version(g.u8(pos)), 0)
    kind[sel] = TUNNEL_GTPU
