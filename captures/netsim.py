"""Turns planned messages into captured frames: links, UDP flows and TCP connections.

The capture point is always next to the client (its NIC or a mirror port), so packets the client
sends appear when sent, and packets from afar appear after the path delay. Every frame carries a
`Meta` record saying what it holds; `captures.facts` turns those into the manifest, so the
manifest states what was generated rather than what someone typed.
"""

from __future__ import annotations

import ipaddress
import itertools
import random
from dataclasses import dataclass, field

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import CookedLinux, Ether
from scapy.packet import Packet, Raw

from captures.pcapio import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, Interface, Record

SLL_INBOUND = 0  # "sent to us"
SLL_OUTBOUND = 4  # "sent by us"
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD


@dataclass(frozen=True, slots=True)
class Endpoint:
    ip: str
    port: int

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.ip

    def __str__(self) -> str:
        return f"[{self.ip}]:{self.port}" if self.is_ipv6 else f"{self.ip}:{self.port}"


@dataclass(slots=True)
class FlowSpec:
    """A transport flow as the manifest describes it."""

    transport: str  # "udp" or "tcp"
    client: Endpoint
    server: Endpoint
    service: str
    server_name: str | None = None
    p2p: bool = False

    def ends(self, c2s: bool) -> tuple[Endpoint, Endpoint]:
        """(source, destination) of a packet in the given direction."""
        return (self.client, self.server) if c2s else (self.server, self.client)


@dataclass(frozen=True, slots=True)
class RtpFact:
    """What one RTP packet in a frame is, for the stream table."""

    src: Endpoint
    dst: Endpoint
    ssrc: int
    payload_type: int
    seq: int
    media: str
    clock_rate: int
    encrypted: bool


@dataclass(frozen=True, slots=True)
class Meta:
    flow: FlowSpec
    c2s: bool
    protocols: frozenset[str]
    media: str | None = None
    rtp: RtpFact | None = None
    tags: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Frame:
    time_us: int
    iface: int
    data: bytes
    meta: Meta


@dataclass(frozen=True, slots=True)
class Link:
    """How frames look on one capture interface: the local MACs and the gateway MAC."""

    iface: int
    linktype: int
    local_macs: dict[str, str]
    gateway_mac: str

    def mac_of(self, ip: str) -> str:
        return self.local_macs.get(ip, self.gateway_mac)

    def frame(self, src_ip: str, dst_ip: str, l3: Packet) -> bytes:
        if self.linktype == LINKTYPE_LINUX_SLL:
            return self._sll(src_ip, l3)
        return bytes(Ether(src=self.mac_of(src_ip), dst=self.mac_of(dst_ip)) / l3)

    def _sll(self, src_ip: str, l3: Packet) -> bytes:
        outbound = src_ip in self.local_macs
        mac = bytes.fromhex(self.mac_of(src_ip).replace(":", "")) + b"\x00\x00"
        proto = ETHERTYPE_IPV6 if ":" in src_ip else ETHERTYPE_IPV4
        pkttype = SLL_OUTBOUND if outbound else SLL_INBOUND
        head = CookedLinux(pkttype=pkttype, lladdrtype=1, lladdrlen=6, src=mac, proto=proto)
        return bytes(head / l3)


@dataclass
class Capture:
    """Frames of one sample file, with per-host IP identification counters."""

    name: str
    rng: random.Random
    interfaces: list[Interface] = field(
        default_factory=lambda: [Interface(LINKTYPE_ETHERNET, "eth0")]
    )
    frames: list[Frame] = field(default_factory=list)
    ip_ids: dict[str, int] = field(default_factory=dict)
    ttls: dict[str, int] = field(default_factory=dict)

    def add(self, time_us: int, link: Link, l3: Packet, meta: Meta) -> None:
        src, dst = l3.src, l3.dst
        self.frames.append(Frame(time_us, link.iface, link.frame(src, dst, l3), meta))

    def next_ip_id(self, ip: str) -> int:
        current = self.ip_ids.setdefault(ip, self.rng.randrange(0x10000))
        self.ip_ids[ip] = (current + 1) & 0xFFFF
        return current

    def ttl_of(self, ip: str, local: bool) -> int:
        if ip not in self.ttls:
            self.ttls[ip] = 64 if local else self.rng.choice([47, 52, 54, 56, 113, 116, 119])
        return self.ttls[ip]

    def ordered(self) -> list[Frame]:
        """Frames in capture order (stable by time: equal times keep the order of creation)."""
        return sorted(self.frames, key=lambda f: f.time_us)

    def records(self) -> list[Record]:
        return [Record(f.time_us, f.iface, f.data) for f in self.ordered()]


def ip_layer(cap: Capture, link: Link, src: str, dst: str, dont_fragment: bool) -> Packet:
    """The IPv4 or IPv6 header for a packet from src to dst as seen on the link."""
    local = src in link.local_macs
    ttl = cap.ttl_of(src, local)
    if ipaddress.ip_address(src).version == 6:
        return IPv6(src=src, dst=dst, hlim=ttl)
    flags = "DF" if dont_fragment else 0
    return IP(src=src, dst=dst, ttl=ttl, id=cap.next_ip_id(src), flags=flags)


@dataclass
class UdpFlow:
    cap: Capture
    link: Link
    spec: FlowSpec
    dscp: int = 0

    def send(
        self,
        time_us: int,
        c2s: bool,
        payload: bytes,
        protocols: frozenset[str] | set[str],
        media: str | None = None,
        rtp: RtpFact | None = None,
        tags: frozenset[str] = frozenset(),
    ) -> None:
        src, dst = self.spec.ends(c2s)
        l3 = ip_layer(self.cap, self.link, src.ip, dst.ip, dont_fragment=False)
        if isinstance(l3, IP):
            l3.tos = self.dscp << 2
        l3 = l3 / UDP(sport=src.port, dport=dst.port) / Raw(payload)
        meta = Meta(self.spec, c2s, frozenset(protocols), media, rtp, tags)
        self.cap.add(time_us, self.link, l3, meta)


SYN_OPTIONS_CLIENT = [("MSS", 1460), ("NOP", None), ("WScale", 8), ("NOP", None), ("NOP", None),
                      ("SAckOK", b"")]
SYN_OPTIONS_SERVER = [("MSS", 1400), ("NOP", None), ("NOP", None), ("SAckOK", b""), ("NOP", None),
                      ("WScale", 9)]
MSS = 1400  # the smaller of the two sides' MSS options
ACK_DELAY_US = 120  # the client's kernel answers a burst quickly on a LAN capture


@dataclass
class TcpConn:
    """A TCP connection with real sequence numbers, seen from next to the client."""

    cap: Capture
    link: Link
    spec: FlowSpec
    rtt_us: int
    seq: dict[bool, int] = field(default_factory=dict)  # keyed by "from client"

    def __post_init__(self) -> None:
        self.seq = {True: self.cap.rng.getrandbits(32), False: self.cap.rng.getrandbits(32)}

    def _emit(self, time_us: int, c2s: bool, flags: str, payload: bytes = b"",
              protocols: frozenset[str] = frozenset(), options: list | None = None,
              tags: frozenset[str] = frozenset()) -> None:
        src, dst = self.spec.ends(c2s)
        window = 502 if c2s else 1040
        tcp = TCP(sport=src.port, dport=dst.port, flags=flags, seq=self.seq[c2s] & 0xFFFFFFFF,
                  ack=self.seq[not c2s] & 0xFFFFFFFF if "A" in flags else 0,
                  window=64240 if "S" in flags else window, options=options or [])
        l3 = ip_layer(self.cap, self.link, src.ip, dst.ip, dont_fragment=True) / tcp
        if payload:
            l3 = l3 / Raw(payload)
        meta = Meta(self.spec, c2s, frozenset({"tcp"}) | protocols, tags=tags)
        self.cap.add(time_us, self.link, l3, meta)
        self.seq[c2s] += len(payload) + (1 if ("S" in flags or "F" in flags) else 0)

    def handshake(self, time_us: int) -> int:
        """SYN, SYN/ACK one RTT later, ACK; returns the time of the ACK."""
        self._emit(time_us, True, "S", options=SYN_OPTIONS_CLIENT, tags=frozenset({"tcp-syn"}))
        self._emit(time_us + self.rtt_us, False, "SA", options=SYN_OPTIONS_SERVER,
                   tags=frozenset({"tcp-synack"}))
        ack_time = time_us + self.rtt_us + 45
        self._emit(ack_time, True, "A")
        return ack_time

    def send(self, time_us: int, c2s: bool, data: bytes, protocols: frozenset[str],
             cuts: tuple[int, ...] = (), tags: frozenset[str] = frozenset()) -> int:
        """Send data as MSS-sized segments (or cut at the given offsets); returns the last time."""
        pieces = _split(data, cuts) if cuts else _split(data, tuple(range(MSS, len(data), MSS)))
        gap = 30 if c2s else 12  # the far side's burst arrives back to back
        for i, piece in enumerate(pieces):
            flags = "PA" if i == len(pieces) - 1 else "A"
            self._emit(time_us + i * gap, c2s, flags, piece, protocols, tags=tags)
        return time_us + (len(pieces) - 1) * gap

    def ack(self, time_us: int, c2s: bool) -> int:
        self._emit(time_us, c2s, "A")
        return time_us

    def close(self, time_us: int) -> int:
        """Client-initiated close: FIN/ACK, FIN/ACK, ACK."""
        self._emit(time_us, True, "FA")
        self._emit(time_us + self.rtt_us, False, "FA")
        self._emit(time_us + self.rtt_us + 50, True, "A")
        return time_us + self.rtt_us + 50


def _split(data: bytes, cuts: tuple[int, ...]) -> list[bytes]:
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def exchange(conn: TcpConn, time_us: int, request: bytes, response: bytes,
             protocols: frozenset[str], think_us: int = 300) -> int:
    """Client request, then the server's answer one RTT (plus think time) later, then an ACK."""
    sent = conn.send(time_us, True, request, protocols) if request else time_us
    if not response:
        return conn.ack(sent + conn.rtt_us, False)
    answered = conn.send(sent + conn.rtt_us + think_us, False, response, protocols)
    return conn.ack(answered + ACK_DELAY_US, True)
