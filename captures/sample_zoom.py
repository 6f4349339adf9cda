"""Zoom samples: a meeting through a Multimedia Router (SFU) and a peer-to-peer call."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from captures import common, wire
from captures.facts import KeyFact, first_frame_of, frame_list, frames_with_tag, manifest_entry
from captures.media import (
    MediaPacket,
    PathModel,
    RtpStream,
    SenderStats,
    VideoShape,
    arrivals,
    audio_packets,
    video_packets,
)
from captures.netsim import Capture, Endpoint, FlowSpec, RtpFact, TcpConn, UdpFlow
from captures.wire import ZoomMediaHeader, ZoomMediaType

ZOOM_PROTOCOLS = frozenset({"zoom", "rtp"})
ZOOM_RTCP = frozenset({"zoom", "rtcp"})
AUDIO_IDS = bytes.fromhex("0100fb90141104ff")
VIDEO_IDS = bytes.fromhex("0100fb9016180c03")
SCREEN_IDS = bytes.fromhex("0100fb9013140801")
RTCP_IDS = bytes.fromhex("0100fb9014100000")
ZOOM_AUDIO_CLOCK = 8000  # protocols.md 1.8 (Princeton's choice)
VIDEO_CLOCK = 90000


def epoch_us(when: dt.datetime) -> int:
    return int(when.replace(tzinfo=dt.UTC).timestamp()) * 1_000_000


# --- encryption stand-ins ---------------------------------------------------------------------

Encryptor = Callable[[MediaPacket, RtpStream, bytes], bytes]


def random_ciphertext(rng: random.Random) -> Encryptor:
    """Random bytes of the plaintext's size plus a GCM tag: a stand-in for Zoom's AES-GCM."""
    return lambda pkt, stream, header: rng.randbytes(pkt.size + 16)


# --- Zoom framing -----------------------------------------------------------------------------


@dataclass
class ZoomPath:
    """A UDP flow carrying Zoom media: SFU (8-byte outer header) or P2P (none)."""

    flow: UdpFlow
    sfu: bool
    cookie: int = 0
    outer_seq: dict[bool, int] = field(default_factory=lambda: {True: 0, False: 0})
    inner_seq: dict[tuple[int, int], int] = field(default_factory=dict)

    def wrap(self, c2s: bool, inner: bytes) -> bytes:
        if not self.sfu:
            return inner
        seq = self.outer_seq[c2s]
        self.outer_seq[c2s] = seq + 1
        direction = wire.ZOOM_TO_SERVER if c2s else wire.ZOOM_FROM_SERVER
        return wire.zoom_sfu_header(seq, self.cookie, direction) + inner

    def media_header(self, media_type: int, ssrc: int, ids: bytes, time_us: int) -> ZoomMediaHeader:
        """The media header with a per-stream sequence and a millisecond timestamp."""
        seq = self.inner_seq.get((media_type, ssrc), 0)
        self.inner_seq[(media_type, ssrc)] = seq + 1
        return ZoomMediaHeader(media_type, ids, seq, time_us // 1000)

    def endpoints(self, c2s: bool) -> tuple[Endpoint, Endpoint]:
        spec = self.flow.spec
        return (spec.client, spec.server) if c2s else (spec.server, spec.client)


def rtp_extension(media: str, pkt: MediaPacket) -> bytes:
    """One-byte extensions shaped like those in Zoom's test packets (IDs 1, 3, 5, 7 or 5)."""
    if media == "audio":
        return wire.one_byte_extension([(5, bytes([0x80 | (pkt.seq % 40)]))])
    frame_info = bytes([pkt.frame_no & 0xFF, pkt.index_in_frame, pkt.pkts_in_frame])
    return wire.one_byte_extension([(1, frame_info), (3, bytes(6)), (5, b"\x00"), (7, b"\x00")])


def zoom_inner(path: ZoomPath, stream: RtpStream, pkt: MediaPacket, send_us: int,
               payload_fn: Encryptor) -> bytes:
    """RTP header + (encrypted) payload inside the type-specific media encapsulation."""
    header = wire.rtp_header(stream.payload_type, pkt.seq, pkt.ts, stream.ssrc, pkt.marker,
                             rtp_extension(stream.media, pkt))
    rtp = header + payload_fn(pkt, stream, header)
    if stream.media == "audio":
        head = path.media_header(ZoomMediaType.AUDIO, stream.ssrc, AUDIO_IDS, send_us)
        return wire.zoom_audio(head, rtp)
    if stream.media == "video":
        head = path.media_header(ZoomMediaType.VIDEO, stream.ssrc, VIDEO_IDS, send_us)
        return wire.zoom_video(head, pkt.frame_no, pkt.pkts_in_frame, rtp)
    nested = path.media_header(ZoomMediaType.SCREEN_P2P, stream.ssrc, SCREEN_IDS, send_us)
    if not path.sfu:
        return wire.zoom_screen_p2p(nested, rtp)
    return wire.zoom_screen_server(send_us // 1000, nested.seq, nested, rtp)


TagsFn = Callable[[MediaPacket], frozenset[str]]


def send_stream(path: ZoomPath, c2s: bool, stream: RtpStream, packets: list[MediaPacket],
                net: PathModel, payload_fn: Encryptor, tags_fn: TagsFn | None = None
                ) -> SenderStats:
    """Emit a stream's packets at their arrival times; returns the sender's counters."""
    src, dst = path.endpoints(c2s)
    stats = SenderStats()
    rng = path.flow.cap.rng
    for arrival, pkt in arrivals(rng, packets, net):
        inner = zoom_inner(path, stream, pkt, pkt.send_us, payload_fn)
        fact = RtpFact(src, dst, stream.ssrc, stream.payload_type, pkt.seq, stream.media,
                       stream.clock_rate, True)
        tags = tags_fn(pkt) if tags_fn else frozenset()
        path.flow.send(arrival, c2s, path.wrap(c2s, inner), ZOOM_PROTOCOLS, stream.media, fact,
                       tags)
    for pkt in packets:
        stats.count(pkt.size)
    return stats


def send_sender_reports(path: ZoomPath, c2s: bool, stream: RtpStream, packets: list[MediaPacket],
                        times: range, delay_us: int) -> None:
    """Type-34 RTCP: SR with the counts so far, plus an SDES with an empty CNAME (as Zoom does)."""
    for t in times:
        sent = [p for p in packets if p.send_us < t]
        if not sent:
            continue
        rtp_ts = stream.ts0 + (t - packets[0].send_us) * stream.clock_rate // 1_000_000
        sr = wire.rtcp_sr(stream.ssrc, t, rtp_ts, len(sent), sum(p.size + 16 for p in sent))
        sdes = wire.rtcp_sdes(stream.ssrc, "")
        head = path.media_header(ZoomMediaType.RTCP, stream.ssrc, RTCP_IDS, t)
        inner = wire.zoom_rtcp(head, 0x00 if c2s else 0xFF, sr + sdes)
        path.flow.send(t + delay_us, c2s, path.wrap(c2s, inner), ZOOM_RTCP, stream.media)


def sfu_handshake(path: ZoomPath, time_us: int, rtt_us: int) -> int:
    """Types 1 and 2 (the server hands out the cookie), then a type-3 keep-alive."""
    rng = path.flow.cap.rng
    txid, echo = rng.randbytes(16), rng.getrandbits(24)
    hello = wire.zoom_sfu_client_hello(txid, echo, rng.randbytes(84))
    path.flow.send(time_us, True, hello, {"zoom"})
    path.cookie = rng.getrandbits(31)
    answer = wire.zoom_sfu_server_hello(txid, path.cookie, echo)
    path.flow.send(time_us + rtt_us, False, answer, {"zoom"})
    keepalive = wire.zoom_sfu_keepalive(1, rng.getrandbits(32), path.cookie)
    path.flow.send(time_us + rtt_us + 30, False, keepalive, {"zoom"})
    return time_us + rtt_us + 30


# --- sample 1: zoom_meeting.pcap --------------------------------------------------------------

CLIENT_IP = "192.168.1.23"
CLIENT_MAC = "a4:83:e7:3c:91:0e"
GATEWAY_MAC = "e4:8d:8c:21:0a:f1"
RESOLVER_IP = "192.168.1.1"
ZOOM_WEB_IP = "170.114.52.2"
MMR_IP = "144.195.52.154"
MMR_NAME = "zoomsjccv154mmr.sjc.zoom.us"
MMR_RTT_US = 18_300
MEETING_START = dt.datetime(2024, 5, 14, 15, 2, 11)

VIDEO_SHAPE = VideoShape(fps=30, keyframe_every=60, key_packets=5, delta_packets=(1, 2),
                         packet_size=(250, 1020))
SCREEN_SHAPE = VideoShape(fps=8, keyframe_every=100, key_packets=6, delta_packets=(1, 1),
                          packet_size=(120, 1050))


@dataclass(frozen=True, slots=True)
class ZoomStreams:
    """The Zoom SSRC convention seen in real traffic: 0x0100PPKK, PP participant, KK kind."""

    participant: int

    def stream(self, media: str, rng: random.Random) -> RtpStream:
        kind, pt, clock = {"video": (1, 98, VIDEO_CLOCK), "audio": (2, 112, ZOOM_AUDIO_CLOCK),
                           "screen": (3, 99, VIDEO_CLOCK)}[media]
        ssrc = 0x01000000 | (self.participant << 8) | kind
        return RtpStream(ssrc, pt, clock, media, rng.randrange(0x10000), rng.getrandbits(32))


def zoom_tls_server(host: str, serial: int, wildcard: str) -> common.TlsServer:
    key = common.ec_key(host)
    chain = common.web_chain(host, "Zoom Video Communications, Inc.", key, serial, [wildcard])
    return common.TlsServer(chain, key, common.tlswire.ECDHE_ECDSA_AES_128_GCM_SHA256)


def zoom_web_and_mmr_tls(cap: Capture, link: Any, dns: common.Dns, t: int) -> int:
    t = dns.lookup(t, "zoom.us", [("zoom.us", wire.DNS_TYPE_A, ZOOM_WEB_IP, 60)], service="zoom")
    web = FlowSpec("tcp", Endpoint(CLIENT_IP, 51234), Endpoint(ZOOM_WEB_IP, 443), "zoom", "zoom.us")
    server = zoom_tls_server("zoom.us", 0x5A11, "*.zoom.us")
    plan = common.TlsPlan("zoom.us", ["h2", "http/1.1"], server, ((520, 2400), (380, 900)))
    t = common.tls12_session(TcpConn(cap, link, web, 24_100), t + 200, plan)
    t = dns.lookup(t + 20_000, MMR_NAME, [(MMR_NAME, wire.DNS_TYPE_A, MMR_IP, 300)],
                   service="zoom")
    mmr = FlowSpec("tcp", Endpoint(CLIENT_IP, 51240), Endpoint(MMR_IP, 443), "zoom", MMR_NAME)
    mmr_server = zoom_tls_server(MMR_NAME, 0x5A12, "*.sjc.zoom.us")
    mmr_plan = common.TlsPlan(MMR_NAME, [], mmr_server, ((310, 640), (900, 420), (260, 1300)))
    return common.tls12_session(TcpConn(cap, link, mmr, MMR_RTT_US), t + 300, mmr_plan)


def zoom_meeting() -> tuple[Capture, dict[str, Any]]:
    cap = common.new_capture("zoom_meeting")
    rng = cap.rng
    link = common.lan_link({CLIENT_IP: CLIENT_MAC, RESOLVER_IP: GATEWAY_MAC}, GATEWAY_MAC)
    dns = common.Dns(cap, link, CLIENT_IP, RESOLVER_IP, 11_800)
    t0 = epoch_us(MEETING_START)
    t = zoom_web_and_mmr_tls(cap, link, dns, t0)
    me, them = ZoomStreams(0x08), ZoomStreams(0x04)
    paths = {}
    for media, port in (("audio", 60653), ("video", 60654), ("screen", 60655)):
        spec = FlowSpec("udp", Endpoint(CLIENT_IP, port), Endpoint(MMR_IP, 8801), "zoom", MMR_NAME)
        paths[media] = ZoomPath(UdpFlow(cap, link, spec), sfu=True)
        t = sfu_handshake(paths[media], t + 15_000, MMR_RTT_US)
    start, end = t + 40_000, t + 40_000 + 3_000_000
    enc = random_ciphertext(rng)
    one_way = MMR_RTT_US // 2
    plans: list[tuple[str, bool, ZoomStreams, PathModel, tuple[int, int] | VideoShape]] = [
        ("audio", True, me, PathModel(0, 300), (70, 130)),
        ("audio", False, them, PathModel(one_way, 3000, frozenset({37, 92}), frozenset({61})),
         (70, 130)),
        ("video", True, me, PathModel(0, 300), VIDEO_SHAPE),
        ("video", False, them, PathModel(one_way, 4000, frozenset({40}), frozenset({75})),
         VIDEO_SHAPE),
        ("screen", False, them, PathModel(one_way, 4000), SCREEN_SHAPE),
    ]
    for media, c2s, who, net, shape in plans:
        stream = who.stream(media, rng)
        if isinstance(shape, VideoShape):
            packets = video_packets(rng, stream, start, end, shape)
        else:
            packets = audio_packets(rng, stream, start, end, shape)
        send_stream(paths[media], c2s, stream, packets, net, enc)
        delay = 0 if c2s else one_way
        send_sender_reports(paths[media], c2s, stream, packets,
                            range(start + 700_000, end, 1_000_000), delay)
    tls_flow = next(f.meta.flow for f in cap.frames if f.meta.flow.server == Endpoint(MMR_IP, 443))
    media_flow = paths["audio"].flow.spec
    facts = [KeyFact("mmr_tls_same_ip", f"TLS with SNI {MMR_NAME} goes to {MMR_IP}, the same "
                     "address as the UDP 8801 media",
                     [first_frame_of(cap, tls_flow), first_frame_of(cap, media_flow)],
                     {"ip": MMR_IP, "sni": MMR_NAME})]
    facts.append(KeyFact("tls_client_hellos", "TLS ClientHellos at frames "
                         + frame_list(frames_with_tag(cap, "tls-client-hello")),
                         frames_with_tag(cap, "tls-client-hello")))
    desc = ("Zoom meeting through a Multimedia Router: DNS, TLS 1.2 to zoom.us and to the MMR, "
            "then UDP 8801 SFU media (audio type 15, video type 16, screen share 13/30, RTCP 34) "
            "with random bytes standing in for AES-GCM ciphertext; loss and reordering on the "
            "server-to-client audio and video.")
    return cap, manifest_entry(cap, desc, dns.answers, facts)


# --- sample 2: zoom_p2p.pcap ------------------------------------------------------------------

P2P_LOCAL_IP = "192.168.1.226"
P2P_LOCAL_MAC = "ac:bc:32:7a:fa:ad"
P2P_NAT_IP = "203.0.113.45"
P2P_PEER_IP = "198.51.100.77"
P2P_PEER_PRIVATE_IP = "10.0.0.12"
ZOOM_STUN_IP = "206.247.87.213"
ZOOM_STUN_VALUE = b"12345678901234567890"
P2P_RTT_US = 31_000
P2P_START = dt.datetime(2024, 5, 16, 9, 41, 5)
RFC3489_SOURCE_ADDRESS = 0x0004
RFC3489_CHANGED_ADDRESS = 0x0005


def classic_stun_probe(cap: Capture, link: Any, local: Endpoint, t: int) -> tuple[FlowSpec, int]:
    """Zoom's RFC 3489 Binding request (attribute 0x0101) and the MAPPED-ADDRESS answer."""
    spec = FlowSpec("udp", local, Endpoint(ZOOM_STUN_IP, 3478), "zoom")
    flow = UdpFlow(cap, link, spec)
    txid = cap.rng.randbytes(16)
    request = wire.classic_stun_message(0x0001, txid, [(wire.StunAttr.ZOOM_CLASSIC_0101,
                                                        ZOOM_STUN_VALUE)])
    flow.send(t, True, request, {"stun"}, tags=frozenset({"stun-request"}))
    attrs = [(wire.StunAttr.MAPPED_ADDRESS, wire.plain_address(P2P_NAT_IP, local.port)),
             (RFC3489_SOURCE_ADDRESS, wire.plain_address(ZOOM_STUN_IP, 3478)),
             (RFC3489_CHANGED_ADDRESS, wire.plain_address(ZOOM_STUN_IP, 3479))]
    response = wire.classic_stun_message(0x0101, txid, attrs)
    flow.send(t + 22_400, False, response, {"stun"}, tags=frozenset({"stun-response"}))
    return spec, t + 22_400


def p2p_setup(path: ZoomPath, t: int, rtt_us: int) -> int:
    """Type 0x1F packets: each side announces its own private address as ASCII text."""
    rng = path.flow.cap.rng
    announcements = ((True, P2P_LOCAL_IP, t), (False, P2P_PEER_PRIVATE_IP, t + rtt_us // 2),
                     (True, P2P_LOCAL_IP, t + rtt_us))
    for c2s, ip_text, when in announcements:
        uuid_text = "{" + rng.randbytes(16).hex().upper() + "}"
        packet = wire.zoom_p2p_setup(ip_text, uuid_text, rng.randbytes(21))
        path.flow.send(when, c2s, packet, {"zoom"}, tags=frozenset({"zoom-p2p-setup"}))
    return t + rtt_us


def zoom_p2p() -> tuple[Capture, dict[str, Any]]:
    cap = common.new_capture("zoom_p2p")
    rng = cap.rng
    link = common.lan_link({P2P_LOCAL_IP: P2P_LOCAL_MAC}, GATEWAY_MAC)
    local = Endpoint(P2P_LOCAL_IP, 46757)
    stun_spec, t = classic_stun_probe(cap, link, local, epoch_us(P2P_START))
    spec = FlowSpec("udp", local, Endpoint(P2P_PEER_IP, 39065), "zoom", p2p=True)
    path = ZoomPath(UdpFlow(cap, link, spec), sfu=False)
    t = p2p_setup(path, t + 180_000, P2P_RTT_US)
    start, end = t + 30_000, t + 30_000 + 2_500_000
    enc = random_ciphertext(rng)
    me, peer = ZoomStreams(0x08), ZoomStreams(0x04)
    one_way = P2P_RTT_US // 2
    plans = [("audio", True, me, PathModel(0, 300)),
             ("audio", False, peer, PathModel(one_way, 5000, frozenset({20}), frozenset({50}))),
             ("video", True, me, PathModel(0, 300)),
             ("video", False, peer, PathModel(one_way, 5000, frozenset({33}))),
             ("screen", False, peer, PathModel(one_way, 5000))]
    shapes = {"video": VIDEO_SHAPE, "screen": SCREEN_SHAPE}
    for media, c2s, who, net in plans:
        stream = who.stream(media, rng)
        packets = (audio_packets(rng, stream, start, end, (70, 130)) if media == "audio"
                   else video_packets(rng, stream, start, end, shapes[media]))
        send_stream(path, c2s, stream, packets, net, enc)
        send_sender_reports(path, c2s, stream, packets, range(start + 600_000, end, 1_000_000),
                            0 if c2s else one_way)
    stun_frames = frames_with_tag(cap, "stun-request") + frames_with_tag(cap, "stun-response")
    setup_frames = frames_with_tag(cap, "zoom-p2p-setup")
    facts = [
        KeyFact("zoom_classic_stun", f"Classic STUN (no magic cookie, attribute 0x0101 "
                f"'{ZOOM_STUN_VALUE.decode()}') to {ZOOM_STUN_IP}:3478 at frames "
                + frame_list(stun_frames), stun_frames,
                {"local": str(local), "mapped": f"{P2P_NAT_IP}:{local.port}"}),
        KeyFact("zoom_p2p_local_match", f"P2P flow {spec.client} <-> {spec.server} reuses the "
                f"local address of the STUN flow ({stun_spec.client})", [first_frame_of(cap, spec)],
                {"stun_local": str(stun_spec.client), "p2p_local": str(spec.client)}),
        KeyFact("zoom_p2p_setup_ascii_ip", "Type 0x1f setup packets carry private IPs "
                f"{P2P_LOCAL_IP} and {P2P_PEER_PRIVATE_IP} in ASCII at frames "
                + frame_list(setup_frames), setup_frames),
    ]
    desc = ("Zoom peer-to-peer call: classic (RFC 3489) STUN to a Zoom server with attribute "
            "0x0101, then media between the two clients with no SFU header (0x1f setup, audio "
            "15, video 16, screen 30, RTCP 34); random bytes stand in for the ciphertext.")
    return cap, manifest_entry(cap, desc, {}, facts)
