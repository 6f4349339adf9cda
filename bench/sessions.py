"""The kinds of calls in the synthetic capture, and how each is put together.

| kind   | media                                            | control                        |
|--------|--------------------------------------------------|--------------------------------|
| webrtc | SRTP Opus + VP8, BUNDLE, rtcp-mux (SRTCP)        | ICE (STUN), DTLS-SRTP, TLS 443 |
| zoom   | SFU encapsulation on UDP 8801, audio + video     | Zoom RTCP (type 34), TLS 443   |
| sip    | plain RTP PCMU (+ H.264), RTCP on port + 1       | SIP/SDP on UDP 5060            |
| turn   | SRTP in TURN ChannelData on UDP 3478             | Allocate, ChannelBind, TLS 443 |

A session either starts inside the capture ("fresh": its handshakes are seen) or was already
running when the capture began (mid-stream: only media, consent and reports are seen).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

from bench import media as rtp
from bench.assemble import POOL_RANDOM, POOL_SPEECH
from bench.batch import Event
from bench.handshakes import SIP_PORT, sdp_offer
from bench.streams import StreamSpec
from bench.templates import TemplateTable
from bench.timelines import (
    MS,
    Clock,
    Label,
    Leg,
    RtcpSide,
    channel_data_wrap,
    dtls_timeline,
    ice_timeline,
    rtcp_timeline,
    sip_timeline,
    tls_timeline,
    turn_setup,
)
from bench.wire import PROTO_TCP, PROTO_UDP, Endpoint, IPAddress, flow_header

# Server address ranges, for realism only (not an authoritative list). Sources, as published in
# spring 2024: Zoom firewall article (see docs protocols.md §1.1), Google "Prepare your network
# for Meet", Microsoft 365 endpoints (Teams media, ID 11), Webex media ranges. The others are
# documentation ranges (RFC 5737 / RFC 3849).
SERVICE_PREFIXES = {
    "zoom": "144.195.0.0/16",
    "meet": "74.125.250.0/24",
    "teams": "52.112.0.0/14",
    "webex": "170.72.0.0/16",
    "turn": "198.51.100.0/24",
    "sbc": "203.0.113.0/24",
    "jitsi": "192.0.2.0/24",
}
PEER_V6_PREFIX = "2001:db8:ffff::/48"
CLIENT_V6_PREFIX = "2001:db8:100::/40"
MEDIA_PORT = {"meet": 19305, "teams": 3480, "webex": 5004, "zoom": 8801, "turn": 3478}
SNI = {
    "meet": ("meet.google.com",),
    "teams": ("teams.microsoft.com",),
    "webex": ("web.webex.com",),
    "p2p6": ("meet.google.com",),
    "zoom": ("zoom.us", "www3.zoom.us", "zoomfrn99mmr.zoom.us", "zoomsjccv154mmr.sjc.zoom.us"),
    "turn": ("meet.jit.si",),
}
TLS12_SHARE = 0.25
VLANS = (None, None, None, 100, 200)  # a fifth of the hosts each on VLAN 100 and 200
ROUTER_MAC = bytes.fromhex("001b21c0ffee")

FPS30 = 33_333_333
OPUS = {"interval_ns": 20 * MS, "ts_step": 960, "len_lo": 170, "len_hi": 210}  # + SRTP tag
PCMU = {"interval_ns": 20 * MS, "ts_step": 160, "len_lo": 160, "len_hi": 160, "jitter_ns": 3 * MS}
VP8 = {"interval_ns": FPS30, "ts_step": 3000, "mean_pkts": 4.0, "key_every": 90,
       "len_lo": 1010, "len_hi": 1210, "pacing_ns": 150_000, "jitter_ns": 3 * MS}
H264 = {"interval_ns": FPS30, "ts_step": 3000, "mean_pkts": 3.0, "key_every": 60,
        "len_lo": 900, "len_hi": 1150, "pacing_ns": 200_000, "jitter_ns": 3 * MS}
ZOOM_AUDIO = {"interval_ns": 20 * MS, "ts_step": 320, "len_lo": 100, "len_hi": 200}
ZOOM_VIDEO = {"interval_ns": FPS30, "ts_step": 3000, "mean_pkts": 4.0, "key_every": 150,
              "len_lo": 950, "len_hi": 1100, "pacing_ns": 120_000, "jitter_ns": 3 * MS}


@dataclass(frozen=True, slots=True)
class Host:
    mac: bytes
    v4: IPv4Address
    v6: IPv6Address
    vlan: int | None


@dataclass(slots=True)
class Session:
    kind: str
    end_ns: int
    streams: list[StreamSpec]
    timelines: list[Iterator[Event]]
    templates: list[int]
    replaced: bool = False


@dataclass
class World:
    """What every session builder shares: randomness, templates, and the capture's epoch."""

    clock: Clock
    templates: TemplateTable
    epoch_ns: int


@dataclass
class SessionBuilder:
    world: World
    kind: str
    start: int
    end: int
    fresh: bool
    media_start: int = 0
    host: Host = field(init=False)
    rtt_ns: int = field(init=False)
    session: Session = field(init=False)

    def __post_init__(self) -> None:
        self.host = self.new_host()
        self.rtt_ns = self.clock.ns(10, 120)
        self.session = Session(self.kind, self.end, [], [], [])

    @property
    def clock(self) -> Clock:
        return self.world.clock

    def chance(self, p: float) -> bool:
        return bool(self.clock.rng.random() < p)

    def pick(self, options: tuple[Any, ...]) -> Any:
        return options[self.clock.integer(0, len(options) - 1)]

    def new_host(self) -> Host:
        vlan = self.pick(VLANS)
        site = 0 if vlan is None else vlan // 100
        mac = bytes([0x02]) + self.clock.bytes(5)
        v4 = IPv4Address(f"10.{site}.{self.clock.integer(0, 255)}.{self.clock.integer(2, 254)}")
        return Host(mac, v4, random_address(self.clock, CLIENT_V6_PREFIX), vlan)  # type: ignore[arg-type]

    def port(self) -> int:
        return self.clock.integer(49152, 65534) & ~1  # even, so that port + 1 is free for RTCP

    def client(self, v6: bool = False, port: int | None = None) -> Endpoint:
        ip = self.host.v6 if v6 else self.host.v4
        return Endpoint(self.host.mac, ip, port or self.port())

    def server(self, service: str, port: int) -> Endpoint:
        prefix = PEER_V6_PREFIX if service == "p2p6" else SERVICE_PREFIXES[service]
        return Endpoint(ROUTER_MAC, random_address(self.clock, prefix), port)

    def leg(self, client: Endpoint, server: Endpoint, proto: int = PROTO_UDP) -> Leg:
        up = self.template(client, server, proto, None)
        down = self.template(server, client, proto, None)
        return Leg(up, down, client, server, self.rtt_ns)

    def template(self, src: Endpoint, dst: Endpoint, proto: int, app: rtp.AppHeader | None,
                 pool: int = POOL_RANDOM) -> int:
        ttl = 64 if src.mac != ROUTER_MAC else 52
        iface = 0 if self.host.vlan is None else 1
        header = flow_header(src, dst, proto, self.host.vlan, ttl)
        tpl = self.world.templates.add(header, app, pool, iface)
        self.session.templates.append(tpl)
        return tpl

    def media(self, leg: Leg, upward: bool, app: rtp.AppHeader, label: Label,
              profile: dict[str, Any], pool: int = POOL_RANDOM) -> StreamSpec:
        src, dst = (leg.client, leg.server) if upward else (leg.server, leg.client)
        spec = StreamSpec(
            tpl=self.template(src, dst, PROTO_UDP, app, pool), label=label,
            next_ns=self.media_start + self.clock.ns(0, profile["interval_ns"] / MS),
            end_ns=self.end, seq=self.clock.integer(0, 65535), ts0=self.clock.u32(),
            frame=0 if self.fresh else self.clock.integer(0, 100_000), **profile,
        )
        self.session.streams.append(spec)
        return spec

    def timeline(self, events: Iterator[Event]) -> None:
        self.session.timelines.append(events)

    def rtcp(self, side: RtcpSide, period_ms: float, wrap: Callable[[bytes, int], bytes]) -> None:
        self.timeline(rtcp_timeline(self.clock, side, period_ms, self.end, self.world.epoch_ns,
                                    wrap))

    def tls(self, service: str, server: Endpoint | None = None) -> None:
        """The signalling connection of the session (TLS over TCP 443)."""
        remote = server or self.server(service, 443)
        leg = self.leg(self.client(), Endpoint(ROUTER_MAC, remote.ip, 443), PROTO_TCP)
        sni = self.pick(SNI[service])
        self.timeline(tls_timeline(self.clock, leg, self.start, self.end, self.fresh, sni,
                                   self.chance(TLS12_SHARE)))

    def srtcp_wrap(self) -> Callable[[bytes, int], bytes]:
        def wrap(compound: bytes, index: int) -> bytes:
            return rtp.srtcp(compound, index, self.clock.bytes(len(compound) + rtp.SRTP_TAG))

        return wrap


def random_address(clock: Clock, prefix: str) -> IPAddress:
    network: IPv4Network | IPv6Network = (
        IPv6Network(prefix) if ":" in prefix else IPv4Network(prefix)
    )
    offset = int.from_bytes(clock.bytes(16), "big") % (network.num_addresses - 2) + 1
    return network[offset]


def ssrc(b: SessionBuilder) -> int:
    return b.clock.u32()


def rtcp_sides(leg: Leg, label: Label, up: StreamSpec | None, down: StreamSpec | None,
               ssrcs: tuple[int, int], cname: str) -> list[RtcpSide]:
    """The two reporting sides of one RTP session (up = the client's stream)."""
    sides = []
    if down is not None:
        sides.append(RtcpSide(leg.up, label, up, ssrcs[0], down, ssrcs[1], cname))
    if up is not None:
        sides.append(RtcpSide(leg.down, label, down, ssrcs[1], up, ssrcs[0], "sfu"))
    return sides


def build_webrtc(b: SessionBuilder) -> None:
    service = b.pick(("meet", "meet", "teams", "teams", "webex", "p2p6"))
    v6 = service == "p2p6"
    b.media_start = b.start + 350 * MS if b.fresh else 0
    port = b.port() if v6 else MEDIA_PORT[service]
    leg = b.leg(b.client(v6), b.server(service, port))
    ssrcs = (ssrc(b), ssrc(b))
    ext = rtp.audio_level_extension()
    up = b.media(leg, True, rtp.plain_rtp(111, ssrcs[0], ext), Label.SRTP_AUDIO, OPUS)
    down = b.media(leg, False, rtp.plain_rtp(111, ssrcs[1], ext), Label.SRTP_AUDIO, OPUS)
    if b.chance(0.75):
        for upward in (True, False):
            app = rtp.plain_rtp(96, ssrc(b), bytes([0x22, 0, 0, 0]))  # abs-send-time, id 2
            b.media(leg, upward, app, Label.SRTP_VIDEO, VP8)
    b.timeline(ice_timeline(b.clock, leg, b.start, b.end, b.fresh, full_ice=v6))
    if b.fresh:
        b.timeline(dtls_timeline(b.clock, leg, b.start + 200 * MS))
    for side in rtcp_sides(leg, Label.SRTCP, up, down, ssrcs, b.clock.bytes(8).hex()):
        b.rtcp(side, 1000, b.srtcp_wrap())
    b.tls(service if not v6 else "meet")


def build_zoom(b: SessionBuilder) -> None:
    b.media_start = b.start + 500 * MS if b.fresh else 0
    server = b.server("zoom", MEDIA_PORT["zoom"])
    audio = b.leg(b.client(), server)
    ssrcs = (ssrc(b), ssrc(b))
    cookie = b.clock.u32()
    up = b.media(audio, True, rtp.zoom_media(rtp.ZOOM_AUDIO, cookie, True, 112, ssrcs[0]),
                 Label.ZOOM_AUDIO, ZOOM_AUDIO)
    down = b.media(audio, False, rtp.zoom_media(rtp.ZOOM_AUDIO, cookie, False, 112, ssrcs[1]),
                   Label.ZOOM_AUDIO, ZOOM_AUDIO)
    if b.chance(0.8):
        video = b.leg(b.client(), server)
        cookie_v = b.clock.u32()
        for upward in (True, False):
            app = rtp.zoom_media(rtp.ZOOM_VIDEO, cookie_v, upward, 98, ssrc(b))
            b.media(video, upward, app, Label.ZOOM_VIDEO, ZOOM_VIDEO)
    for side in rtcp_sides(audio, Label.ZOOM_RTCP, up, down, ssrcs, "zoom"):
        b.rtcp(side, 2000, zoom_rtcp_wrap(cookie, to_server=side.tpl == audio.up))
    b.tls("zoom", server)


def zoom_rtcp_wrap(cookie: int, to_server: bool) -> Callable[[bytes, int], bytes]:
    """RTCP inside the SFU header and a type-34 media encapsulation (protocols.md §1.5)."""
    prefix = rtp.zoom_sfu(cookie, to_server) + rtp.zoom_inner(rtp.ZOOM_RTCP_SR_SDES)
    return lambda compound, _index: prefix + compound


def build_sip(b: SessionBuilder) -> None:
    sig = b.leg(b.client(port=SIP_PORT), b.server("sbc", SIP_PORT))
    b.media_start = b.start + 1500 * MS + 2 * sig.rtt_ns if b.fresh else 0
    client_port, server_port = b.port(), b.clock.integer(5000, 9999) * 2
    media = b.leg(b.client(port=client_port), Endpoint(ROUTER_MAC, sig.server.ip, server_port))
    one_way = b.chance(0.1)  # an announcement: the phone only listens and sends RTCP RR
    ssrcs = (ssrc(b), ssrc(b))
    pcmu = (rtp.plain_rtp(0, ssrcs[0]), rtp.plain_rtp(0, ssrcs[1]))
    down = b.media(media, False, pcmu[1], Label.RTP_AUDIO, PCMU, POOL_SPEECH)
    up = None if one_way else b.media(media, True, pcmu[0], Label.RTP_AUDIO, PCMU, POOL_SPEECH)
    video = not one_way and b.chance(0.2)
    if video:
        video_leg = b.leg(b.client(port=client_port + 2),
                          Endpoint(ROUTER_MAC, sig.server.ip, server_port + 2))
        for upward in (True, False):
            b.media(video_leg, upward, rtp.h264_rtp(98, ssrc(b)), Label.RTP_VIDEO, H264)
    rtcp_leg = b.leg(b.client(port=client_port + 1),
                     Endpoint(ROUTER_MAC, sig.server.ip, server_port + 1))
    for side in rtcp_sides(rtcp_leg, Label.RTCP, up, down, ssrcs, f"alice@{b.host.v4}"):
        b.rtcp(side, 5000, lambda compound, _i: compound)
    offer = sdp_offer(b.clock.u32(), b.host.v4, client_port, client_port + 2 if video else None)
    answer = sdp_offer(b.clock.u32(), sig.server.ip, server_port,
                       server_port + 2 if video else None)
    b.timeline(sip_timeline(b.clock, sig, b.start, b.end, b.fresh, offer, answer))


def build_turn(b: SessionBuilder) -> None:
    b.media_start = b.start + 300 * MS if b.fresh else 0
    relay = b.server("turn", MEDIA_PORT["turn"])
    leg = b.leg(b.client(), relay)
    channel = 0x4000 + b.clock.integer(0, 0x0FFF)
    ssrcs = (ssrc(b), ssrc(b))
    ext = rtp.audio_level_extension()

    def relayed(pt: int, ssrc_: int, extension: bytes) -> rtp.AppHeader:
        return rtp.channel_data(channel, rtp.plain_rtp(pt, ssrc_, extension))

    up = b.media(leg, True, relayed(111, ssrcs[0], ext), Label.TURN_CHANNELDATA, OPUS)
    down = b.media(leg, False, relayed(111, ssrcs[1], ext), Label.TURN_CHANNELDATA, OPUS)
    if b.chance(0.5):
        for upward in (True, False):
            b.media(leg, upward, relayed(96, ssrc(b), bytes([0x22, 0, 0, 0])),
                    Label.TURN_CHANNELDATA, VP8)
    if b.fresh:
        peer = b.server("jitsi", b.port())
        relayed_at = Endpoint(ROUTER_MAC, relay.ip, b.port())
        b.timeline(turn_setup(b.clock, leg, b.start, channel, relayed_at, peer))
    wrap_channel = channel_data_wrap(channel)
    secure = b.srtcp_wrap()
    for side in rtcp_sides(leg, Label.TURN_CHANNELDATA, up, down, ssrcs, "turn"):
        b.rtcp(side, 1000, lambda compound, index: wrap_channel(secure(compound, index)))
    b.tls("turn")


BUILDERS: dict[str, tuple[float, Callable[[SessionBuilder], None]]] = {
    "webrtc": (0.35, build_webrtc),
    "zoom": (0.30, build_zoom),
    "sip": (0.20, build_sip),
    "turn": (0.15, build_turn),
}


def build_session(world: World, start: int, end: int, fresh: bool) -> Session:
    kinds = list(BUILDERS)
    weights = [BUILDERS[k][0] for k in kinds]
    kind = kinds[int(world.clock.rng.choice(len(kinds), p=weights))]
    builder = SessionBuilder(world, kind, start, end, fresh)
    BUILDERS[kind][1](builder)
    return builder.session
