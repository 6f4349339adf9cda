"""Link, network and transport header templates, and the Internet checksum (RFC 1071).

A template carries every field that stays constant in a flow; the per-packet fields (lengths,
IP identification, checksums, TCP sequence numbers) are left zero and patched later, for a whole
batch at once, at the offsets named below.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

ETH_HDR, VLAN_TAG, IPV4_HDR, IPV6_HDR, UDP_HDR, TCP_HDR = 14, 4, 20, 40, 8, 20
ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_VLAN = 0x0800, 0x86DD, 0x8100
PROTO_TCP, PROTO_UDP = 6, 17

# Offsets of the per-packet fields, relative to the start of their header.
IPV4_TOTAL_LENGTH, IPV4_IDENT, IPV4_CHECKSUM = 2, 4, 10
IPV6_PAYLOAD_LENGTH = 4
UDP_LENGTH, UDP_CHECKSUM = 4, 6
TCP_SEQ, TCP_ACK, TCP_FLAGS, TCP_CHECKSUM = 4, 8, 13, 16

TCP_FIN, TCP_SYN, TCP_PSH, TCP_ACK_FLAG = 0x01, 0x02, 0x08, 0x10
IPV4_DONT_FRAGMENT = 0x4000
TCP_WINDOW = 1026  # a scaled window, as seen mid-connection

IPAddress = IPv4Address | IPv6Address


@dataclass(frozen=True, slots=True)
class Endpoint:
    mac: bytes
    ip: IPAddress
    port: int


@dataclass(frozen=True, slots=True)
class FlowHeader:
    """Ethernet [802.1Q] + IP + UDP/TCP header of one direction of a flow."""

    data: bytes
    ip_off: int
    l4_off: int
    is_v6: bool
    proto: int
    pseudo_sum: int  # ones-complement sum of the pseudo-header's addresses and protocol


def ones_sum(data: bytes) -> int:
    """Sum of the big-endian 16-bit words of `data` (zero-padded), not yet folded."""
    if len(data) % 2:
        data += b"\0"
    return sum(struct.unpack(f">{len(data) // 2}H", data))


def internet_checksum(data: bytes) -> int:
    """The RFC 1071 checksum of `data`."""
    total = ones_sum(data)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ethernet(src: bytes, dst: bytes, ethertype: int, vlan: int | None) -> bytes:
    """Ethernet II header, with an 802.1Q tag (priority 5, the voice class) when `vlan` is set."""
    if vlan is None:
        return dst + src + struct.pack(">H", ethertype)
    tci = (5 << 13) | vlan
    return dst + src + struct.pack(">HHH", ETHERTYPE_VLAN, tci, ethertype)


def ipv4_header(src: IPv4Address, dst: IPv4Address, proto: int, ttl: int) -> bytes:
    """IPv4 header without options; length, identification and checksum are patched per packet."""
    return struct.pack(
        ">BBHHHBBH4s4s", 0x45, 0, 0, 0, IPV4_DONT_FRAGMENT, ttl, proto, 0, src.packed, dst.packed
    )


def ipv6_header(src: IPv6Address, dst: IPv6Address, proto: int, hop_limit: int) -> bytes:
    """IPv6 header without extension headers; the payload length is patched per packet."""
    return struct.pack(">IHBB16s16s", 6 << 28, 0, proto, hop_limit, src.packed, dst.packed)


def transport_header(proto: int, sport: int, dport: int) -> bytes:
    """UDP or TCP (no options) header with the per-packet fields zero."""
    if proto == PROTO_UDP:
        return struct.pack(">HHHH", sport, dport, 0, 0)
    return struct.pack(">HHIIBBHHH", sport, dport, 0, 0, 5 << 4, 0, TCP_WINDOW, 0, 0)


def flow_header(
    src: Endpoint, dst: Endpoint, proto: int, vlan: int | None, ttl: int = 64
) -> FlowHeader:
    """The constant header bytes of packets sent from `src` to `dst`."""
    is_v6 = isinstance(src.ip, IPv6Address)
    ethertype = ETHERTYPE_IPV6 if is_v6 else ETHERTYPE_IPV4
    link = ethernet(src.mac, dst.mac, ethertype, vlan)
    if isinstance(src.ip, IPv6Address) and isinstance(dst.ip, IPv6Address):
        net = ipv6_header(src.ip, dst.ip, proto, ttl)
    elif isinstance(src.ip, IPv4Address) and isinstance(dst.ip, IPv4Address):
        net = ipv4_header(src.ip, dst.ip, proto, ttl)
    else:
        raise ValueError("both ends of a flow need the same IP version")
    data = link + net + transport_header(proto, src.port, dst.port)
    pseudo = ones_sum(src.ip.packed + dst.ip.packed) + proto
    return FlowHeader(data, len(link), len(link) + len(net), is_v6, proto, pseudo)
