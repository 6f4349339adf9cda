"""analyzer.packets: columnar decoding checked against scapy-built frames, tshark and real captures.

Every frame is built with scapy (or from the link-layer specs with struct), written to a pcap in
the test, read back with `CaptureReader` and decoded with `decode_batch`. The expected values are
the ones given to scapy; tshark's reading of the same files is a second, independent opinion.
The built cases, the snap-length cuts and the fuzzing run on both paths of `decode_batch`: the C
decoder (analyzer/_speedups.c, when built) and the numpy reference.
"""

from __future__ import annotations

import ipaddress
import shutil
import struct
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.contrib.gtp import GTP_U_Header, GTPPDUSessionContainer
from scapy.contrib.mpls import MPLS
from scapy.layers.inet import GRE, IP, TCP, UDP, fragment
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.ipsec import AH
from scapy.layers.l2 import (
    GRE_PPTP,
    LLC,
    SNAP,
    CookedLinux,
    CookedLinuxV2,
    Dot1AD,
    Dot1Q,
    Dot3,
    Ether,
)
from scapy.layers.ppp import HDLC, PPP, PPPoE
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet, Raw
from scapy.utils import RawPcapWriter

from analyzer import speedups
from analyzer.capture.batch import PacketBatch
from analyzer.capture.reader import CaptureReader
from analyzer.packets import (
    TUNNEL_GRE,
    TUNNEL_GTPU,
    TUNNEL_NONE,
    TUNNEL_VXLAN,
    PacketColumns,
    decode_batch,
)

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
TSHARK = shutil.which("tshark")
BASE_TS = 1_700_000_000

LT_NULL, LT_ETHERNET, LT_RAW, LT_LOOP, LT_SLL, LT_IPV4, LT_IPV6, LT_SLL2 = (
    0, 1, 101, 108, 113, 228, 229, 276,
)
MAC_SRC, MAC_DST = "02:00:00:00:00:01", "02:00:00:00:00:02"
V4 = ("192.0.2.1", "198.51.100.2")
V6 = ("2001:db8::1", "2001:db8:ffff::2")
INNER4 = ("10.1.0.1", "10.2.0.2")
INNER6 = ("fd00::1", "fd00::2")
DECODERS = ["numpy", pytest.param("c", marks=pytest.mark.skipif(
    not speedups.HAVE_SPEEDUPS, reason="extension not built"))]


@contextmanager
def decoder(name: str) -> Iterator[None]:
    """decode_batch's C path ("c") or its numpy reference ("numpy") while in the block."""
    saved = speedups.native
    speedups.native = saved if name == "c" else None
    try:
        yield
    finally:
        speedups.native = saved


# --------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Expect:
    """What decode_batch must say about one frame (values given to scapy)."""

    src: str = ""
    dst: str = ""
    proto: int = 0
    sport: int = -1
    dport: int = -1
    payload: bytes = b""
    fragment: bool = False
    later: bool = False
    tunnel: int = TUNNEL_NONE
    truncated: bool = False


@dataclass(frozen=True)
class Case:
    name: str
    linktype: int
    frame: bytes
    expect: Expect
    wirelen: int = 0  # 0: the frame is whole
    tshark: bool = True  # compare with tshark too


def udp4(payload: bytes, src: tuple[str, str] = V4, sport: int = 40000, dport: int = 50000,
         **ip: Any) -> Packet:
    return IP(src=src[0], dst=src[1], **ip) / UDP(sport=sport, dport=dport) / Raw(payload)


def udp6(payload: bytes, src: tuple[str, str] = V6, sport: int = 40001, dport: int = 50001
         ) -> Packet:
    return IPv6(src=src[0], dst=src[1]) / UDP(sport=sport, dport=dport) / Raw(payload)


def tcp4(payload: bytes, options: list[tuple[str, Any]] | None = None) -> Packet:
    tcp = TCP(sport=40002, dport=443, seq=123456789, flags="PA", options=options or [])
    return IP(src=V4[0], dst=V4[1]) / tcp / Raw(payload)


def expect_udp(payload: bytes, addrs: tuple[str, str] = V4, sport: int = 40000,
               dport: int = 50000, **extra: Any) -> Expect:
    return Expect(addrs[0], addrs[1], 17, sport, dport, payload, **extra)


def expect_udp6(payload: bytes, addrs: tuple[str, str] = V6, **extra: Any) -> Expect:
    return Expect(addrs[0], addrs[1], 17, 40001, 50001, payload, **extra)


def eth(inner: Packet) -> bytes:
    return bytes(Ether(src=MAC_SRC, dst=MAC_DST) / inner)


def link_cases() -> list[Case]:
    """One UDP/IPv4 and one UDP/IPv6 datagram over each link type."""
    cases: list[Case] = []
    headers = {
        "ethernet": (LT_ETHERNET, lambda ip, v6: eth(ip)),
        "sll": (LT_SLL, lambda ip, v6: bytes(CookedLinux(proto=0x86DD if v6 else 0x0800) / ip)),
        "sll2": (LT_SLL2, lambda ip, v6: bytes(CookedLinuxV2(proto=0x86DD if v6 else 0x0800) / ip)),
        "raw": (LT_RAW, lambda ip, v6: bytes(ip)),
        "null_le": (LT_NULL, lambda ip, v6: struct.pack("<I", 30 if v6 else 2) + bytes(ip)),
        "null_be": (LT_NULL, lambda ip, v6: struct.pack(">I", 24 if v6 else 2) + bytes(ip)),
        "loop": (LT_LOOP, lambda ip, v6: struct.pack(">I", 28 if v6 else 2) + bytes(ip)),
    }
    for name, (linktype, build) in headers.items():
        p4, p6 = f"{name} v4".encode(), f"{name} v6".encode()
        cases.append(Case(f"{name}-ipv4", linktype, build(udp4(p4), False), expect_udp(p4)))
        cases.append(Case(f"{name}-ipv6", linktype, build(udp6(p6), True), expect_udp6(p6)))
    cases.append(Case("ipv4-linktype", LT_IPV4, bytes(udp4(b"lt228")), expect_udp(b"lt228")))
    cases.append(Case("ipv6-linktype", LT_IPV6, bytes(udp6(b"lt229")), expect_udp6(b"lt229")))
    cases.append(Case("ipv6-in-ipv4-linktype", LT_IPV4, bytes(udp6(b"no")), Expect(),
                      tshark=False))
    return cases


def ethernet_cases() -> list[Case]:
    vlan = udp4(b"vlan")
    qinq = udp6(b"qinq")
    mpls = udp4(b"mpls")
    pppoe4, pppoe6 = udp4(b"pppoe4"), udp6(b"pppoe6")
    tcp = tcp4(b"tcp payload", [("MSS", 1460), ("NOP", None), ("WScale", 7)])
    return [
        Case("vlan", LT_ETHERNET, eth(Dot1Q(vlan=10) / vlan), expect_udp(b"vlan")),
        Case("qinq", LT_ETHERNET, eth(Dot1AD(vlan=100) / Dot1Q(vlan=10) / qinq),
             expect_udp6(b"qinq")),
        Case("qinq-9100", LT_ETHERNET,
             eth(Dot1Q(vlan=100, type=0x8100) / Dot1Q(vlan=10) / udp4(b"q9100")).replace(
                 b"\x81\x00", b"\x91\x00", 1),
             expect_udp(b"q9100")),
        Case("mpls", LT_ETHERNET, eth(MPLS(label=16, s=0) / MPLS(label=17, s=1) / mpls),
             expect_udp(b"mpls")),
        Case("pppoe-ipv4", LT_ETHERNET, eth(PPPoE(sessionid=7) / PPP(proto=0x21) / pppoe4),
             expect_udp(b"pppoe4")),
        Case("pppoe-ipv6", LT_ETHERNET, eth(PPPoE(sessionid=7) / PPP(proto=0x57) / pppoe6),
             expect_udp6(b"pppoe6")),
        Case("vlan-pppoe", LT_ETHERNET,
             eth(Dot1Q(vlan=5) / PPPoE(sessionid=1) / PPP(proto=0x21) / udp4(b"vp")),
             expect_udp(b"vp")),
        Case("llc-snap", LT_ETHERNET,
             bytes(Dot3(src=MAC_SRC, dst=MAC_DST) / LLC(dsap=0xAA, ssap=0xAA, ctrl=3)
                   / SNAP(OUI=0, code=0x0800) / udp4(b"snap")),
             expect_udp(b"snap")),
        Case("tcp", LT_ETHERNET, eth(tcp),
             Expect(V4[0], V4[1], 6, 40002, 443, b"tcp payload")),
        Case("arp-like", LT_ETHERNET,
             bytes(Ether(src=MAC_SRC, dst=MAC_DST, type=0x0806) / Raw(b"\0" * 28)), Expect()),
        Case("ethernet-padding", LT_ETHERNET, eth(udp4(b"p")) + b"\0" * 17, expect_udp(b"p")),
        Case("tso-total-length-0", LT_ETHERNET,
             eth(IP(bytes(tcp4(b"offloaded"))[:2] + b"\0\0" + bytes(tcp4(b"offloaded"))[4:])),
             Expect(V4[0], V4[1], 6, 40002, 443, b"offloaded")),
    ]


def ipv6_extension_cases() -> list[Case]:
    base = IPv6(src=V6[0], dst=V6[1])
    udp = UDP(sport=40001, dport=50001)
    chain = (IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting(addresses=["2001:db8::99"])
             / IPv6ExtHdrDestOpt())
    whole = base / IPv6ExtHdrFragment(m=1, offset=0, id=77) / udp / Raw(b"first6" * 10)
    later = base / IPv6ExtHdrFragment(m=0, offset=9, id=77, nh=17) / Raw(b"later6")
    atomic = base / IPv6ExtHdrFragment(m=0, offset=0, id=78) / udp / Raw(b"atomic")
    # RFC 4302 §2.2: Payload Len is the AH length in 4-octet units minus 2 (here 24 bytes)
    ah = base / AH(nh=17, payloadlen=4, spi=1, icv=b"\0" * 12) / udp / Raw(b"ah")
    first_payload = b"first6" * 10
    return [
        Case("ipv6-ext-chain", LT_ETHERNET, eth(base / chain / udp / Raw(b"ext")),
             expect_udp6(b"ext")),
        Case("ipv6-first-fragment", LT_ETHERNET, eth(whole),
             expect_udp6(first_payload, fragment=True)),
        Case("ipv6-later-fragment", LT_ETHERNET, eth(later),
             Expect(V6[0], V6[1], 17, fragment=True, later=True)),
        Case("ipv6-atomic-fragment", LT_ETHERNET, eth(atomic), expect_udp6(b"atomic")),
        Case("ipv6-ah", LT_ETHERNET, eth(ah), expect_udp6(b"ah")),
        Case("ipv6-ext-tcp", LT_ETHERNET,
             eth(base / IPv6ExtHdrDestOpt() / TCP(sport=1, dport=2, seq=5) / Raw(b"t")),
             Expect(V6[0], V6[1], 6, 1, 2, b"t")),
    ]


def ipv4_fragment_cases() -> list[Case]:
    payload = bytes(range(256)) * 2
    frags = fragment(udp4(payload, id=4242), fragsize=200)
    cases = [Case("ipv4-first-fragment", LT_ETHERNET, eth(frags[0]),
                  expect_udp(payload[: 200 - 8], fragment=True))]
    for i, frag in enumerate(frags[1:], 2):
        cases.append(Case(f"ipv4-fragment-{i}", LT_ETHERNET, eth(frag),
                          Expect(V4[0], V4[1], 17, fragment=True, later=True)))
    return cases


def gre_cases() -> list[Case]:
    outer = IP(src=V4[0], dst=V4[1])
    inner4, inner6 = udp4(b"gre4", INNER4), udp6(b"gre6", INNER6)
    teb = Ether(src=MAC_SRC, dst=MAC_DST) / Dot1Q(vlan=3) / udp4(b"teb", INNER4)
    flagged = GRE(chksum_present=1, key_present=1, key=0xABCD, seqnum_present=1,
                  sequence_number=9)
    return [
        Case("gre-ipv4", LT_ETHERNET, eth(outer / GRE() / inner4),
             expect_udp(b"gre4", INNER4, tunnel=TUNNEL_GRE)),
        Case("gre-ipv6", LT_ETHERNET, eth(outer / GRE() / inner6),
             expect_udp6(b"gre6", INNER6, tunnel=TUNNEL_GRE)),
        Case("gre-key-seq-csum", LT_ETHERNET, eth(outer / flagged / inner4),
             expect_udp(b"gre4", INNER4, tunnel=TUNNEL_GRE)),
        Case("gre-key-over-ipv6", LT_ETHERNET,
             eth(IPv6(src=V6[0], dst=V6[1]) / GRE(key_present=1, key=1) / inner4),
             expect_udp(b"gre4", INNER4, tunnel=TUNNEL_GRE)),
        Case("gre-teb", LT_ETHERNET, eth(outer / GRE(proto=0x6558) / teb),
             expect_udp(b"teb", INNER4, tunnel=TUNNEL_GRE)),
        Case("gre-mpls", LT_ETHERNET, eth(outer / GRE(proto=0x8847) / MPLS(s=1) / inner4),
             expect_udp(b"gre4", INNER4, tunnel=TUNNEL_GRE)),
        Case("pptp-gre-hdlc", LT_ETHERNET,
             eth(outer / GRE_PPTP(seqnum_present=1, sequence_number=5, acknum_present=1,
                                  ack_number=4, call_id=9) / HDLC() / PPP(proto=0x21) / inner4),
             expect_udp(b"gre4", INNER4, tunnel=TUNNEL_GRE)),
        Case("pptp-gre-compressed", LT_ETHERNET,
             eth(outer / GRE_PPTP(seqnum_present=1, sequence_number=6, call_id=9)
                 / Raw(b"\x57") / inner6),
             expect_udp6(b"gre6", INNER6, tunnel=TUNNEL_GRE), tshark=False),
        Case("gre-routing-not-followed", LT_ETHERNET,
             eth(outer / GRE(routing_present=1, chksum_present=1) / inner4),
             Expect(V4[0], V4[1], 47), tshark=False),
    ]


def gtp_cases() -> list[Case]:
    outer = IP(src=V4[0], dst=V4[1]) / UDP(sport=2152, dport=2152)
    container = GTPPDUSessionContainer(type=1, QFI=9)
    return [
        Case("gtpu-plain", LT_ETHERNET,
             eth(outer / GTP_U_Header(teid=1) / udp4(b"gtp", INNER4)),
             expect_udp(b"gtp", INNER4, tunnel=TUNNEL_GTPU)),
        Case("gtpu-seq", LT_ETHERNET,
             eth(outer / GTP_U_Header(teid=1, S=1, seq=77) / udp6(b"gtp6", INNER6)),
             expect_udp6(b"gtp6", INNER6, tunnel=TUNNEL_GTPU)),
        Case("gtpu-pn", LT_ETHERNET,
             eth(outer / GTP_U_Header(teid=1, PN=1, npdu=3) / udp4(b"gtppn", INNER4)),
             expect_udp(b"gtppn", INNER4, tunnel=TUNNEL_GTPU)),
        Case("gtpu-extension", LT_ETHERNET,
             eth(outer / GTP_U_Header(teid=1, E=1, next_ex=0x85) / container
                 / udp4(b"gtpext", INNER4)),
             expect_udp(b"gtpext", INNER4, tunnel=TUNNEL_GTPU)),
        Case("gtpu-over-ipv6", LT_ETHERNET,
             eth(IPv6(src=V6[0], dst=V6[1]) / UDP(sport=2152, dport=2152)
                 / GTP_U_Header(teid=2) / udp4(b"g", INNER4)),
             expect_udp(b"g", INNER4, tunnel=TUNNEL_GTPU)),
        Case("gtpu-echo-not-unwrapped", LT_ETHERNET,
             eth(outer / GTP_U_Header(teid=0, gtp_type=1, S=1) / Raw(b"")),
             expect_udp(bytes(GTP_U_Header(teid=0, gtp_type=1, S=1)), sport=2152, dport=2152),
             tshark=False),
    ]


def other_tunnel_cases() -> list[Case]:
    vxlan = (IP(src=V4[0], dst=V4[1]) / UDP(sport=33333, dport=4789) / VXLAN(vni=42)
             / Ether(src=MAC_SRC, dst=MAC_DST) / udp6(b"vxlan", INNER6))
    nested = (IP(src=V4[0], dst=V4[1]) / GRE()
              / IP(src="172.16.0.1", dst="172.16.0.2") / UDP(sport=2152, dport=2152)
              / GTP_U_Header(teid=3) / udp4(b"nested", INNER4))
    return [
        Case("vxlan", LT_ETHERNET, eth(vxlan), expect_udp6(b"vxlan", INNER6,
                                                         tunnel=TUNNEL_VXLAN)),
        Case("gre-then-gtpu", LT_ETHERNET, eth(nested),
             expect_udp(b"nested", INNER4, tunnel=TUNNEL_GRE)),
        Case("gre-in-sll2", LT_SLL2, bytes(CookedLinuxV2(proto=0x0800) / IP(src=V4[0], dst=V4[1])
                                           / GRE() / udp4(b"sllgre", INNER4)),
             expect_udp(b"sllgre", INNER4, tunnel=TUNNEL_GRE)),
    ]


def deep_tunnel_case() -> Case:
    """Four GRE layers: three are removed (MAX_TUNNEL_DEPTH), the fourth is reported."""
    packet = udp4(b"deep", INNER4)
    for level in range(4, 0, -1):
        packet = IP(src=f"172.16.{level}.1", dst=f"172.16.{level}.2") / GRE() / packet
    return Case("gre-four-deep", LT_ETHERNET, eth(packet),
                Expect("172.16.4.1", "172.16.4.2", 47, tunnel=TUNNEL_GRE), tshark=False)


def snaplen_cases() -> list[Case]:
    payload = b"0123456789" * 10
    frame = eth(udp4(payload))
    tcp = eth(tcp4(payload))
    return [
        Case("cut-in-udp-payload", LT_ETHERNET, frame[:14 + 20 + 8 + 30],
             expect_udp(payload[:30], truncated=True), wirelen=len(frame)),
        Case("cut-after-udp-header", LT_ETHERNET, frame[:14 + 20 + 8],
             expect_udp(b"", truncated=True), wirelen=len(frame)),
        Case("cut-in-udp-header", LT_ETHERNET, frame[:14 + 20 + 5],
             Expect(V4[0], V4[1], 17), wirelen=len(frame), tshark=False),
        Case("cut-in-ip-header", LT_ETHERNET, frame[:14 + 19], Expect(), wirelen=len(frame),
             tshark=False),
        Case("cut-in-tcp-payload", LT_ETHERNET, tcp[:14 + 20 + 20 + 7],
             Expect(V4[0], V4[1], 6, 40002, 443, payload[:7], truncated=True),
             wirelen=len(tcp)),
        Case("cut-in-ethernet", LT_ETHERNET, frame[:10], Expect(), wirelen=len(frame),
             tshark=False),
    ]


CASES = [
    *link_cases(), *ethernet_cases(), *ipv6_extension_cases(), *ipv4_fragment_cases(),
    *gre_cases(), *gtp_cases(), *other_tunnel_cases(), deep_tunnel_case(), *snaplen_cases(),
]
BY_NAME = {case.name: case for case in CASES}


# --------------------------------------------------------------------------- writing and reading


def write_pcaps(directory: Path, cases: list[Case]) -> dict[str, tuple[Path, int]]:
    """One pcap per link type; returns case name -> (file, frame number)."""
    groups: dict[int, list[Case]] = defaultdict(list)
    for case in cases:
        groups[case.linktype].append(case)
    where: dict[str, tuple[Path, int]] = {}
    for linktype, group in groups.items():
        path = directory / f"linktype{linktype}.pcap"
        writer = RawPcapWriter(str(path), linktype=linktype, nano=True, snaplen=65535)
        writer.linktype = linktype  # scapy drops a linktype of 0 (DLT_NULL) as "not given"
        writer.write_header(None)
        for frame, case in enumerate(group, 1):
            writer.write_packet(case.frame, sec=BASE_TS + frame, usec=frame * 1001,
                                wirelen=case.wirelen or len(case.frame))
            where[case.name] = (path, frame)
        writer.close()
    return where


@dataclass
class Row:
    """One decoded packet, as plain Python values."""

    frame: int
    ts_ns: int
    ip_version: int
    src: str
    dst: str
    proto: int
    sport: int
    dport: int
    payload: bytes
    fragment: bool
    later: bool
    tunnel: int
    truncated: bool
    extra: dict[str, int] = field(default_factory=dict)


def address(hi: int, lo: int, version: int) -> str:
    if version == 4:
        return str(ipaddress.IPv4Address(lo & 0xFFFFFFFF))
    if version == 6:
        return str(ipaddress.IPv6Address((hi << 64) | lo))
    return ""


def rows_of(batch: PacketBatch, cols: PacketColumns) -> list[Row]:
    rows = []
    for i in range(len(cols)):
        version = int(cols.ip_version[i])
        start, length = int(cols.payload_offset[i]), int(cols.payload_len[i])
        rows.append(Row(
            frame=int(cols.frame[i]), ts_ns=int(cols.ts_ns[i]), ip_version=version,
            src=address(int(cols.src_hi[i]), int(cols.src_lo[i]), version),
            dst=address(int(cols.dst_hi[i]), int(cols.dst_lo[i]), version),
            proto=int(cols.ip_proto[i]), sport=int(cols.sport[i]), dport=int(cols.dport[i]),
            payload=batch.buffer[start : start + length].tobytes(),
            fragment=bool(cols.fragment[i]), later=bool(cols.later_fragment[i]),
            tunnel=int(cols.tunnel[i]), truncated=bool(cols.payload_truncated[i]),
            extra={"tcp_seq": int(cols.tcp_seq[i]), "tcp_flags": int(cols.tcp_flags[i])},
        ))
    return rows


def read_rows(path: Path, chunk_bytes: int = 64 << 20) -> list[Row]:
    reader = CaptureReader(path, chunk_bytes=chunk_bytes)
    rows = []
    for batch in reader.batches():
        rows.extend(rows_of(batch, decode_batch(batch)))
    assert reader.info.damage is None, reader.info.damage
    return rows


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, int]]:
    return write_pcaps(tmp_path_factory.mktemp("cases"), CASES)


@pytest.fixture(scope="module", params=DECODERS)
def decoded(request: pytest.FixtureRequest, written: dict[str, tuple[Path, int]]
            ) -> dict[str, Row]:
    with decoder(request.param):
        rows = {path: read_rows(path) for path in {p for p, _ in written.values()}}
    return {name: rows[path][frame - 1] for name, (path, frame) in written.items()}


# --------------------------------------------------------------------------- against scapy


@pytest.mark.parametrize("name", list(BY_NAME))
def test_case_decodes_as_built(name: str, decoded: dict[str, Row],
                               written: dict[str, tuple[Path, int]]) -> None:
    case, row = BY_NAME[name], decoded[name]
    expect = case.expect
    assert row.frame == written[name][1]
    assert (row.src, row.dst, row.proto) == (expect.src, expect.dst, expect.proto)
    assert (row.sport, row.dport) == (expect.sport, expect.dport)
    assert row.payload == expect.payload
    assert (row.fragment, row.later) == (expect.fragment, expect.later)
    assert row.tunnel == expect.tunnel
    assert row.truncated == expect.truncated


def test_timestamps_are_exact_to_the_nanosecond(decoded: dict[str, Row],
                                                written: dict[str, tuple[Path, int]]) -> None:
    for name, row in decoded.items():
        frame = written[name][1]
        assert row.ts_ns == (BASE_TS + frame) * 1_000_000_000 + frame * 1001


def test_tcp_fields(decoded: dict[str, Row]) -> None:
    row = decoded["tcp"]
    assert row.extra == {"tcp_seq": 123456789, "tcp_flags": 0x18}


def test_ip_fragment_marks_cover_the_datagram(decoded: dict[str, Row]) -> None:
    """The fragments of one datagram: exactly one first fragment, the rest later ones."""
    frags = [row for name, row in decoded.items() if name.startswith("ipv4-") and row.fragment]
    assert len(frags) == len(fragment(udp4(bytes(512), id=4242), fragsize=200))
    assert sum(not row.later for row in frags) == 1


# --------------------------------------------------------------------------- against tshark

TSHARK_FIELDS = (
    "frame.number", "frame.time_epoch", "frame.protocols", "ip.src", "ip.dst", "ipv6.src",
    "ipv6.dst", "udp.srcport", "udp.dstport", "tcp.srcport", "tcp.dstport", "udp.length",
    "tcp.len", "ip.flags.mf", "ip.frag_offset", "ipv6.fraghdr.offset", "ipv6.fraghdr.more",
)
TSHARK_PREFS = ("ip.defragment:FALSE", "ipv6.defragment:FALSE", "tcp.desegment_tcp_streams:FALSE")


@cache
def tshark_rows(path: Path) -> dict[int, dict[str, str]]:
    """tshark's innermost value of each field, per frame, IP reassembly off."""
    assert TSHARK is not None
    command = [TSHARK, "-n", "-r", str(path), "-T", "fields", "-E", "occurrence=l"]
    for pref in TSHARK_PREFS:
        command += ["-o", pref]
    for name in TSHARK_FIELDS:
        command += ["-e", name]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rows = {}
    for line in out.splitlines():
        values = dict(zip(TSHARK_FIELDS, line.split("\t"), strict=True))
        rows[int(values["frame.number"])] = values
    return rows


def tshark_view(values: dict[str, str]) -> dict[str, Any]:
    """tshark's fields in decode_batch's terms (innermost IP layer per frame.protocols)."""
    layers = [p for p in values["frame.protocols"].split(":") if p in ("ip", "ipv6")]
    family = layers[-1] if layers else ""
    if family and values[f"{family}.src"] == "":
        family = ""
    port_kind = "udp" if values["udp.srcport"] else "tcp" if values["tcp.srcport"] else ""
    view: dict[str, Any] = {
        "src": values[f"{family}.src"] if family else "",
        "dst": values[f"{family}.dst"] if family else "",
        "sport": int(values[f"{port_kind}.srcport"]) if port_kind else -1,
        "dport": int(values[f"{port_kind}.dstport"]) if port_kind else -1,
    }
    view["fragment"], view["later"] = fragment_marks(values, family)
    if port_kind == "udp":
        view["declared_payload"] = int(values["udp.length"]) - 8
    elif port_kind == "tcp":
        view["declared_payload"] = int(values["tcp.len"])
    return view


def fragment_marks(values: dict[str, str], family: str) -> tuple[bool, bool]:
    """(a fragment, a later fragment) from tshark's IPv4 flags or IPv6 fragment header."""
    if family == "ip" and values["ip.flags.mf"]:
        offset = values["ip.frag_offset"] != "0"
        return values["ip.flags.mf"] == "1" or offset, offset
    if family == "ipv6" and values["ipv6.fraghdr.offset"]:
        offset = values["ipv6.fraghdr.offset"] != "0"
        return values["ipv6.fraghdr.more"] == "1" or offset, offset
    return False, False


def time_epoch_ns(text: str) -> int:
    seconds, _, fraction = text.partition(".")
    return int(seconds) * 1_000_000_000 + int(fraction.ljust(9, "0")[:9])


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
@pytest.mark.parametrize("name", [c.name for c in CASES if c.tshark])
def test_case_agrees_with_tshark(name: str, decoded: dict[str, Row],
                                 written: dict[str, tuple[Path, int]]) -> None:
    path, frame = written[name]
    values = tshark_rows(path)[frame]
    theirs, row = tshark_view(values), decoded[name]
    assert time_epoch_ns(values["frame.time_epoch"]) == row.ts_ns
    assert (row.src, row.dst, row.sport, row.dport) == (
        theirs["src"], theirs["dst"], theirs["sport"], theirs["dport"]
    )
    assert (row.fragment, row.later) == (theirs["fragment"], theirs["later"])
    if "declared_payload" in theirs and not (row.truncated or row.fragment):
        assert len(row.payload) == theirs["declared_payload"]


# --------------------------------------------------------------------------- snap length


def batch_of(frames: list[tuple[int, bytes]], gap: bytes = b"") -> PacketBatch:
    """A batch over one buffer holding `frames` (linktype, bytes) separated by `gap`."""
    buffer, offsets = bytearray(), []
    for _, frame in frames:
        offsets.append(len(buffer))
        buffer += frame + gap
    n = len(frames)
    return PacketBatch(
        buffer=np.frombuffer(bytes(buffer) or b"\0", dtype=np.uint8),
        frame=np.arange(1, n + 1, dtype=np.int64), ts_ns=np.zeros(n, dtype=np.int64),
        data_offset=np.array(offsets, dtype=np.int64),
        caplen=np.array([len(f) for _, f in frames], dtype=np.int64),
        wirelen=np.array([len(f) for _, f in frames], dtype=np.int64),
        linktype=np.array([lt for lt, _ in frames], dtype=np.int32),
    )


def relative(batch: PacketBatch, cols: PacketColumns) -> list[tuple[Any, ...]]:
    """Each packet's decoded fields with buffer offsets made relative to the packet start."""
    start = batch.data_offset
    rows = []
    for i in range(len(cols)):
        payload_at = int(cols.payload_offset[i] - start[i]) if cols.payload_len[i] else 0
        rows.append((
            int(cols.ip_version[i]), int(cols.src_hi[i]), int(cols.src_lo[i]),
            int(cols.dst_hi[i]), int(cols.dst_lo[i]), int(cols.ip_proto[i]),
            bool(cols.fragment[i]), bool(cols.later_fragment[i]), int(cols.tunnel[i]),
            int(cols.sport[i]), int(cols.dport[i]), int(cols.tcp_flags[i]), int(cols.tcp_seq[i]),
            payload_at, int(cols.payload_len[i]), bool(cols.payload_truncated[i]),
        ))
    return rows


def assert_within_captured(batch: PacketBatch, cols: PacketColumns) -> None:
    """Payload bounds lie inside each packet's captured bytes (none given: both zero)."""
    end = batch.data_offset + batch.caplen
    assert np.all(cols.payload_len >= 0)
    none = (cols.sport < 0) & (cols.payload_offset == 0) & (cols.payload_len == 0)
    inside = (cols.payload_offset >= batch.data_offset) & (
        cols.payload_offset + cols.payload_len <= end)
    assert np.all(none | inside)


@pytest.mark.parametrize("name", ["tcp", "gtpu-extension", "ipv6-ext-chain", "gre-teb",
                                  "vxlan", "sll2-ipv6", "qinq"])
@pytest.mark.parametrize("path", DECODERS)
def test_every_snap_length_decodes_a_prefix(name: str, path: str) -> None:
    """Cut at every length: no read past the cut, and payload is a prefix of the whole."""
    with decoder(path):
        every_snap_length_decodes_a_prefix(BY_NAME[name])


def every_snap_length_decodes_a_prefix(case: Case) -> None:
    cuts = [(case.linktype, case.frame[:n]) for n in range(len(case.frame) + 1)]
    batch = batch_of(cuts, gap=b"\xff" * 64)
    cols = decode_batch(batch)
    assert_within_captured(batch, cols)
    zeros = batch_of(cuts, gap=b"\0" * 64)
    assert relative(batch, cols) == relative(zeros, decode_batch(zeros))
    rows = rows_of(batch, cols)
    whole = rows[-1]
    assert whole.payload == case.expect.payload
    for n, row in enumerate(rows):
        if row.tunnel != whole.tunnel:  # cut inside the tunnel: the outer packet is reported
            assert row.tunnel == TUNNEL_NONE
            continue
        assert whole.payload.startswith(row.payload)
        if row.sport >= 0:
            assert (row.src, row.dst, row.sport, row.dport) == (
                whole.src, whole.dst, whole.sport, whole.dport)
            assert row.truncated == (n < len(case.frame) and len(row.payload) < len(whole.payload))


# --------------------------------------------------------------------------- fuzzing

MUTABLE = [c for c in CASES if c.wirelen == 0]


@st.composite
def mutated_frames(draw: st.DrawFn) -> tuple[int, bytes]:
    case = draw(st.sampled_from(MUTABLE))
    frame = bytearray(case.frame)
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(frame) - 1))
        frame[at] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(frame)))
    linktype = draw(st.sampled_from([case.linktype, case.linktype, LT_RAW, LT_NULL, LT_SLL]))
    return linktype, bytes(frame[:cut])


@pytest.mark.parametrize("path", DECODERS)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutated_frames(), min_size=1, max_size=6), st.binary(min_size=1, max_size=80))
def test_decoding_never_reads_beyond_a_packet(path: str, frames: list[tuple[int, bytes]],
                                              gap: bytes) -> None:
    """A packet decodes the same whatever bytes follow it in the buffer."""
    with decoder(path):
        decodes_alone(frames, gap)


def decodes_alone(frames: list[tuple[int, bytes]], gap: bytes) -> None:
    zero = batch_of(frames, gap=b"\0" * 80)
    noise = batch_of(frames, gap=gap * (80 // len(gap) + 1))
    zero_cols, noise_cols = decode_batch(zero), decode_batch(noise)
    assert_within_captured(zero, zero_cols)
    assert_within_captured(noise, noise_cols)
    assert relative(zero, zero_cols) == relative(noise, noise_cols)
    alone = [relative(b, decode_batch(b))[0] for b in (batch_of([f]) for f in frames)]
    assert relative(zero, zero_cols) == alone


@pytest.mark.parametrize("path", DECODERS)
@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0, 1, 12, 101, 108, 113, 228, 229, 276, 147]),
                          st.binary(max_size=120)), min_size=1, max_size=5))
def test_arbitrary_bytes_never_raise(path: str, frames: list[tuple[int, bytes]]) -> None:
    batch = batch_of(frames)
    with decoder(path):
        cols = decode_batch(batch)
    assert len(cols) == len(frames)
    assert_within_captured(batch, cols)


def test_empty_and_zero_length_packets() -> None:
    batch = batch_of([(LT_ETHERNET, b""), (LT_RAW, b"")])
    cols = decode_batch(batch)
    assert list(cols.ip_version) == [0, 0]
    assert list(cols.sport) == [-1, -1]


# --------------------------------------------------------------------------- real captures

CORPUS_FILES = [
    *sorted(p for p in (CORPUS / "ndpi").glob("*.pcap*") if not p.name.endswith(".out")),
    CORPUS / "sngrep" / "aaa.pcap",
]


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.name)
def test_real_capture_agrees_with_tshark(path: Path) -> None:
    if not path.exists():
        pytest.skip("corpus not present")
    rows = read_rows(path)
    theirs = tshark_rows(path)
    assert [row.frame for row in rows] == sorted(theirs)
    for row in rows:
        values = theirs[row.frame]
        if "icmp" in values["frame.protocols"]:  # tshark's innermost IP is the quoted one
            continue
        view = tshark_view(values)
        assert time_epoch_ns(values["frame.time_epoch"]) == row.ts_ns, row.frame
        assert (row.src, row.dst, row.sport, row.dport) == (
            view["src"], view["dst"], view["sport"], view["dport"]), row.frame
        assert (row.fragment, row.later) == (view["fragment"], view["later"]), row.frame
        if "declared_payload" in view and not (row.truncated or row.fragment):
            assert len(row.payload) == view["declared_payload"], row.frame


def test_corpus_gre_capture_is_unwrapped() -> None:
    path = CORPUS / "ndpi" / "gre.pcapng"
    if not path.exists():
        pytest.skip("corpus not present")
    (row,) = read_rows(path)
    assert row.tunnel == TUNNEL_GRE


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**128 - 1))
def test_address_text_is_ipaddress_text(v4: int, v6: int) -> None:
    """Flows print IPv4 addresses without ipaddress (ten times faster): the same text."""
    import ipaddress

    from analyzer.flows import address_text, address_value

    assert address_text(0, 0xFFFF << 32 | v4) == str(ipaddress.IPv4Address(v4))
    assert address_value(0, 0xFFFF << 32 | v4) == (4, v4)
    hi, lo = v6 >> 64, v6 & (2**64 - 1)
    if not (hi == 0 and lo >> 32 == 0xFFFF):
        assert address_text(hi, lo) == str(ipaddress.IPv6Address(v6))
        assert address_value(hi, lo) == (6, v6)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(
    st.integers(0, 2**32 - 1).map(lambda v4: (0, 0xFFFF << 32 | v4)),
    st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))), max_size=60))
def test_address_texts_at_once_are_each_address_text(addresses: list[tuple[int, int]]) -> None:
    """The flow table writes all its flows' address texts at once (IPv4 by Arrow)."""
    from analyzer.flows import address_text, address_texts

    endpoints = [(hi, lo, 0) for hi, lo in addresses]
    assert address_texts(endpoints) == [address_text(hi, lo) for hi, lo in addresses]
