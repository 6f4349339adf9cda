"""teams_turn.pcap: a Teams call relayed through a Transport Relay (MS-TURN flavoured TURN)."""

from __future__ import annotations

import base64
import datetime as dt
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from captures import common, tlswire, wire
from captures.facts import KeyFact, frame_list, frames_with_tag, manifest_entry
from captures.media import PathModel, RtpStream, audio_packets
from captures.netsim import Capture, Endpoint, FlowSpec, TcpConn, UdpFlow
from captures.rtpflow import MediaChannel, RtcpPlan, report_times, send_rtcp, send_rtp
from captures.sample_zoom import epoch_us
from captures.srtp import Profile, SrtpSession
from captures.wire import StunAttr, StunClass, StunMethod

CLIENT_IP = "10.20.30.40"
CLIENT_MAC = "f8:75:a4:0b:33:9e"
GATEWAY_MAC = "00:50:56:9a:6e:01"
RESOLVER_IP = "10.20.0.53"
NAT_IP = "203.0.113.9"
RELAY_IP = "52.112.120.34"
RELAYED = Endpoint(RELAY_IP, 52877)
PEER = Endpoint("52.113.66.20", 56200)  # the far party's relayed address
TEAMS_WEB_IP = "52.113.194.132"
TEAMS_EDGE_NAME = "teams-office-com.s-0005.s-msedge.net"
RELAY_RTT_US = 9_800
CHANNEL = 0x4000
REALM = "rtcmedia"
RELAY_SOFTWARE = b"2.0.1.211"
MS_VERSION_MULTIPLEXED = 6
MS_IMPLEMENTATION = 7
SILK_WB_PT, SILK_WB_CLOCK = 104, 16000
AUDIO_DSCP_EF = 46
CALL_START = dt.datetime(2024, 2, 20, 14, 3, 37)
TURN = frozenset({"stun", "turn"})


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str
    nonce: bytes

    @property
    def key(self) -> bytes:
        return wire.long_term_key(self.username, REALM, self.password)

    def auth_attrs(self) -> list[tuple[int, bytes]]:
        return [(StunAttr.USERNAME, self.username.encode()), (StunAttr.REALM, REALM.encode()),
                (StunAttr.NONCE, self.nonce)]


def ms_attrs(stream_type: int = 1) -> list[tuple[int, bytes]]:
    """MS-VERSION 6 (multiplexed TURN), MS-SERVICE-QUALITY (audio, best effort), implementation."""
    return [(StunAttr.MS_VERSION, struct.pack("!I", MS_VERSION_MULTIPLEXED)),
            (StunAttr.MS_SERVICE_QUALITY, struct.pack("!HH", stream_type, 0)),
            (StunAttr.MS_IMPLEMENTATION_VERSION, struct.pack("!I", MS_IMPLEMENTATION))]


@dataclass
class TurnClient:
    flow: UdpFlow
    creds: Credentials
    session_id: bytes

    def transact(self, t: int, method: int, request_attrs: Sequence[tuple[int, bytes]],
                 answer: Callable[[bytes], list[tuple[int, bytes]]], tag: str) -> int:
        """An authenticated request and its success response one RTT later."""
        rng = self.flow.cap.rng
        txid = rng.randbytes(12)
        req = wire.stun_message(wire.stun_type(method, StunClass.REQUEST), txid,
                                [*request_attrs, *self.creds.auth_attrs()], self.creds.key, True)
        self.flow.send(t, True, req, TURN, tags=frozenset({tag}))
        ok = wire.stun_message(wire.stun_type(method, StunClass.SUCCESS), txid, answer(txid),
                               self.creds.key, True)
        self.flow.send(t + RELAY_RTT_US, False, ok, TURN, tags=frozenset({tag + "-ok"}))
        return t + RELAY_RTT_US


def allocate(turn: TurnClient, t: int) -> int:
    """Unauthenticated Allocate, 401 with REALM/NONCE, authenticated Allocate, success."""
    rng = turn.flow.cap.rng
    first = [(StunAttr.REQUESTED_TRANSPORT, bytes([17, 0, 0, 0])), *ms_attrs()]
    txid = rng.randbytes(12)
    allocate_req = wire.stun_type(StunMethod.ALLOCATE, StunClass.REQUEST)
    turn.flow.send(t, True, wire.stun_message(allocate_req, txid, first), TURN,
                   tags=frozenset({"turn-allocate"}))
    challenge = [(StunAttr.ERROR_CODE, wire.error_code(401, "Unauthorized")),
                 (StunAttr.REALM, REALM.encode()), (StunAttr.NONCE, turn.creds.nonce),
                 (StunAttr.SOFTWARE, RELAY_SOFTWARE)]
    error = wire.stun_message(wire.stun_type(StunMethod.ALLOCATE, StunClass.ERROR), txid, challenge)
    turn.flow.send(t + RELAY_RTT_US, False, error, TURN, tags=frozenset({"turn-401"}))

    def granted(txid: bytes) -> list[tuple[int, bytes]]:
        return [(StunAttr.XOR_RELAYED_ADDRESS, wire.xor_address(RELAYED.ip, RELAYED.port, txid)),
                (StunAttr.XOR_MAPPED_ADDRESS, wire.xor_address(NAT_IP, 50004, txid)),
                (StunAttr.LIFETIME, struct.pack("!I", 3600)),
                (StunAttr.MS_MULTIPLEXED_TURN_SESSION_ID, turn.session_id),
                (StunAttr.SOFTWARE, RELAY_SOFTWARE)]
    return turn.transact(t + RELAY_RTT_US + 600, StunMethod.ALLOCATE, first, granted,
                         "turn-allocate-auth")


def bind(turn: TurnClient, t: int) -> int:
    peer = lambda txid: (StunAttr.XOR_PEER_ADDRESS, wire.xor_address(PEER.ip, PEER.port, txid))  # noqa: E731
    rng = turn.flow.cap.rng
    txid = rng.randbytes(12)
    t = turn.transact(t, StunMethod.CREATE_PERMISSION, [peer(txid)],
                      lambda _: [(StunAttr.SOFTWARE, RELAY_SOFTWARE)], "turn-permission")
    txid = rng.randbytes(12)
    attrs = [(StunAttr.CHANNEL_NUMBER, struct.pack("!HH", CHANNEL, 0)), peer(txid)]
    return turn.transact(t + 300, StunMethod.CHANNEL_BIND, attrs,
                         lambda _: [(StunAttr.SOFTWARE, RELAY_SOFTWARE)], "turn-channel-bind")


def teams_web(cap: Capture, link: Any, t: int) -> tuple[int, dict[str, list[str]]]:
    dns = common.Dns(cap, link, CLIENT_IP, RESOLVER_IP, 4_200)
    chain = [("teams.microsoft.com", wire.DNS_TYPE_CNAME, TEAMS_EDGE_NAME, 3600),
             (TEAMS_EDGE_NAME, wire.DNS_TYPE_A, TEAMS_WEB_IP, 240)]
    t = dns.lookup(t, "teams.microsoft.com", chain, service="teams")
    spec = FlowSpec("tcp", Endpoint(CLIENT_IP, 61022), Endpoint(TEAMS_WEB_IP, 443), "teams",
                    "teams.microsoft.com")
    key = common.ec_key("teams.microsoft.com")
    chain_der = common.web_chain("teams.microsoft.com", "Microsoft Corporation", key, 0x7E01,
                                 ["*.teams.microsoft.com", "teams.office.com"])
    plan = common.TlsPlan("teams.microsoft.com", ["h2", "http/1.1"],
                          common.TlsServer(chain_der, key, tlswire.ECDHE_ECDSA_AES_256_GCM_SHA384),
                          ((700, 3100), (1500, 820)))
    return common.tls12_session(TcpConn(cap, link, spec, 8_700), t + 100, plan), dns.answers


def teams_turn() -> tuple[Capture, dict[str, Any]]:
    cap = common.new_capture("teams_turn")
    rng = cap.rng
    cap.ttls[CLIENT_IP] = 128  # Windows
    link = common.lan_link({CLIENT_IP: CLIENT_MAC, RESOLVER_IP: GATEWAY_MAC}, GATEWAY_MAC)
    t, answers = teams_web(cap, link, epoch_us(CALL_START))
    spec = FlowSpec("udp", Endpoint(CLIENT_IP, 50004), Endpoint(RELAY_IP, 3478), "teams")
    flow = UdpFlow(cap, link, spec, dscp=AUDIO_DSCP_EF)
    creds = Credentials(base64.b64encode(rng.randbytes(24)).decode(),
                        base64.b64encode(rng.randbytes(16)).decode(),
                        rng.randbytes(16).hex().encode())
    turn = TurnClient(flow, creds, rng.randbytes(8))
    t = allocate(turn, t + 90_000)
    start, end = t + 20_000, t + 20_000 + 3_000_000
    keys = {c2s: (rng.randbytes(16), rng.randbytes(14)) for c2s in (True, False)}
    bound_at = bind(turn, t + 250_000)
    media(flow, RelayFraming(turn.session_id, bound_at), keys, start, end)
    return cap, manifest_entry(cap, describe(), answers, teams_facts(cap, turn, keys))


@dataclass(frozen=True, slots=True)
class RelayFraming:
    """MS-TURN 0xFF10 multiplexed framing until the channel is bound, ChannelData after."""

    session_id: bytes
    bound_at: int

    def wrap(self, data: bytes, send_us: int) -> bytes:
        if send_us < self.bound_at:
            return wire.ms_turn_multiplexed(self.session_id, data)
        return wire.channel_data(CHANNEL, data)

    def tags(self, send_us: int) -> frozenset[str]:
        return frozenset({"ms-turn-ff10" if send_us < self.bound_at else "turn-channel-data"})


def media(flow: UdpFlow, framing: RelayFraming, keys: dict[bool, tuple[bytes, bytes]],
          start: int, end: int) -> None:
    """SILK-WB SRTP both ways through the relay, then SR/RR compounds as SRTCP."""
    rng = flow.cap.rng
    one_way = RELAY_RTT_US // 2
    nets = {True: PathModel(0, 200),
            False: PathModel(one_way + 22_000, 6000, frozenset({66}), frozenset({90}))}
    streams, sent, received, chans = {}, {}, {}, {}
    for c2s in (True, False):
        stream = RtpStream(rng.getrandbits(32), SILK_WB_PT, SILK_WB_CLOCK, "audio",
                           rng.randrange(0x8000), rng.getrandbits(32))
        packets = audio_packets(rng, stream, start, end, (45, 90))
        session = SrtpSession(Profile.AES_CM_128_HMAC_SHA1_80, *keys[c2s])
        chans[c2s] = MediaChannel(flow, c2s, session, framing.wrap, frozenset({"turn"}),
                                  delay_us=0 if c2s else one_way)
        received[c2s] = send_rtp(chans[c2s], stream, packets, nets[c2s],
                                 lambda p: rng.randbytes(p.size),
                                 tags_fn=lambda p: framing.tags(p.send_us))
        streams[c2s], sent[c2s] = stream, packets
    for c2s in (True, False):
        plan = RtcpPlan(streams[c2s], sent[c2s], f"{{{rng.randbytes(16).hex()}}}",
                        streams[not c2s], received[not c2s])
        send_rtcp(chans[c2s], report_times(rng, framing.bound_at, end, 1_000_000), plan,
                  frozenset({"turn-channel-data", "srtcp"}))


def describe() -> str:
    return ("Teams-style relayed call: DNS (CNAME chain) and TLS 1.2 to teams.microsoft.com, then "
            "client UDP 50004 to Transport Relay 52.112.120.34:3478: Allocate (401 challenge with "
            "REALM rtcmedia, MS-VERSION 6, MS-SERVICE-QUALITY, MS-IMPLEMENTATION-VERSION), "
            "CreatePermission, ChannelBind 0x4000; SRTP SILK-WB (PT 104) and SRTCP in MS-TURN "
            "0xFF10 frames before the bind and in ChannelData after it.")


def teams_facts(cap: Capture, turn: TurnClient, keys: dict[bool, tuple[bytes, bytes]]
                ) -> list[KeyFact]:
    ff10 = frames_with_tag(cap, "ms-turn-ff10")
    bind_frames = frames_with_tag(cap, "turn-channel-bind") + frames_with_tag(
        cap, "turn-channel-bind-ok")
    allocs = sorted(frames_with_tag(cap, "turn-allocate") + frames_with_tag(cap, "turn-401")
                    + frames_with_tag(cap, "turn-allocate-auth")
                    + frames_with_tag(cap, "turn-allocate-auth-ok"))
    return [
        KeyFact("turn_allocate", "TURN Allocate with MS attributes 0x8008, 0x8055, 0x8070 and a "
                "401 challenge (REALM rtcmedia) at frames " + frame_list(allocs), allocs,
                {"relayed_address": str(RELAYED), "realm": REALM}),
        KeyFact("turn_channel_bind", f"ChannelBind of channel 0x{CHANNEL:04x} to {PEER} at frames "
                + frame_list(bind_frames), bind_frames, {"channel": CHANNEL, "peer": str(PEER)}),
        KeyFact("ms_turn_ff10", "MS-TURN multiplexed frames (0xFF10, session id "
                f"{turn.session_id.hex()}) at frames " + frame_list(ff10), ff10,
                {"session_id": turn.session_id.hex()}),
        KeyFact("srtp_keys_not_on_wire", "SRTP keys travel in the TLS signalling channel and are "
                "not on the wire; listed so a test can decrypt", [],
                {("c2s" if c2s else "s2c"): {"key": k.hex(), "salt": s.hex()}
                 for c2s, (k, s) in keys.items()}),
    ]
