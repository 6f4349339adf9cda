"""webrtc_call.pcapng: Chrome in a Google Meet call (ICE, DTLS-SRTP with AES-256-GCM)."""

from __future__ import annotations

import datetime as dt
import random
import string
import struct
from dataclasses import dataclass
from typing import Any

from captures import common, tlswire, wire
from captures.certs import CertSpec, cert_fingerprint_sha256, make_cert
from captures.dtls_handshake import (
    CHROME_DTLS_SUITES,
    DtlsPeer,
    DtlsPlan,
    dtls_handshake,
    send_application_data,
)
from captures.facts import KeyFact, first_frame_of, frame_list, frames_with_tag, manifest_entry
from captures.media import (
    MediaPacket,
    PathModel,
    RtpStream,
    VideoShape,
    audio_packets,
    video_packets,
)
from captures.netsim import Capture, Endpoint, FlowSpec, Link, TcpConn, UdpFlow
from captures.pcapio import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, Interface
from captures.rtpflow import MediaChannel, RtcpPlan, report_times, send_rtcp, send_rtp
from captures.sample_zoom import epoch_us
from captures.srtp import Profile, SrtpSession
from captures.wire import StunAttr, StunClass, StunMethod

CLIENT_IP = "192.168.0.105"
CLIENT_MAC = "3c:22:fb:5d:07:9a"
GATEWAY_MAC = "b0:be:76:4e:12:c0"
CLIENT_IP6 = "2001:db8:85a3::8a2e:370:7334"
NAT_IP = "203.0.113.77"
RESOLVER_IP = "192.168.0.1"
MEET_WEB_IP = "142.250.64.78"
MEET_MEDIA_IP = "142.250.82.76"
MEET_MEDIA_IP6 = "2001:4860:4864:5::56"
MEET_PORT = 19305
MEDIA_RTT_US = 14_600
CALL_START = dt.datetime(2024, 6, 3, 17, 20, 44)
BINDING_REQUEST = wire.stun_type(StunMethod.BINDING, StunClass.REQUEST)
BINDING_SUCCESS = wire.stun_type(StunMethod.BINDING, StunClass.SUCCESS)
OPUS_PT, VP8_PT = 111, 96
EXT_AUDIO_LEVEL, EXT_ABS_SEND_TIME, EXT_TWCC = 1, 2, 3


def ice_string(rng: random.Random, length: int) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits + "+/") for _ in range(length))


@dataclass(frozen=True, slots=True)
class IceCredentials:
    local_ufrag: str
    remote_ufrag: str
    remote_pwd: str
    tiebreaker: bytes


def binding_request(rng: random.Random, creds: IceCredentials, nominate: bool
                    ) -> tuple[bytes, bytes]:
    """Chrome's connectivity check: USERNAME, GOOG-NETWORK-INFO, ICE-CONTROLLING, [USE-CANDIDATE],
    PRIORITY, MESSAGE-INTEGRITY (short-term, remote password), FINGERPRINT."""
    txid = rng.randbytes(12)
    attrs = [(StunAttr.USERNAME, f"{creds.remote_ufrag}:{creds.local_ufrag}".encode()),
             (StunAttr.GOOG_NETWORK_INFO, struct.pack("!HH", 1, 10)),
             (StunAttr.ICE_CONTROLLING, creds.tiebreaker)]
    attrs += [(StunAttr.USE_CANDIDATE, b"")] if nominate else []
    attrs.append((StunAttr.PRIORITY, struct.pack("!I", 1853824767)))
    msg = wire.stun_message(BINDING_REQUEST, txid, attrs, creds.remote_pwd.encode(), True)
    return msg, txid


def binding_response(txid: bytes, mapped: Endpoint, creds: IceCredentials) -> bytes:
    attrs = [(StunAttr.XOR_MAPPED_ADDRESS, wire.xor_address(mapped.ip, mapped.port, txid))]
    return wire.stun_message(BINDING_SUCCESS, txid, attrs, creds.remote_pwd.encode(), True)


def ice_checks(flow: UdpFlow, times: list[int], creds: IceCredentials, mapped: Endpoint,
               rtt_us: int, nominate_first: bool) -> None:
    rng = flow.cap.rng
    for i, t in enumerate(times):
        request, txid = binding_request(rng, creds, nominate_first and i == 0)
        flow.send(t, True, request, {"stun"}, tags=frozenset({"ice-request"}))
        flow.send(t + rtt_us, False, binding_response(txid, mapped, creds), {"stun"},
                  tags=frozenset({"ice-response"}))


def chrome_extensions(media: str, start_us: int) -> Any:
    """Chrome's one-byte extensions: audio level (audio), abs-send-time and transport-wide CC."""
    counter = iter(range(1000, 100000))

    def build(pkt: MediaPacket) -> bytes:
        abs_send = (((pkt.send_us - start_us) << 18) // 1_000_000) & 0xFFFFFF
        elements = [(EXT_ABS_SEND_TIME, abs_send.to_bytes(3, "big")),
                    (EXT_TWCC, next(counter).to_bytes(2, "big"))]
        if media == "audio":
            elements.insert(0, (EXT_AUDIO_LEVEL, bytes([0x80 | (pkt.seq % 60)])))
        return wire.one_byte_extension(elements)
    return build


def vp8_payload(rng: random.Random) -> Any:
    """VP8 payload descriptor (RFC 7741: X, S on first packet, 15-bit PictureID) + frame bytes."""
    def build(pkt: MediaPacket) -> bytes:
        start = 0x10 if pkt.index_in_frame == 0 else 0x00
        picture_id = struct.pack("!H", 0x8000 | (pkt.frame_no & 0x7FFF))
        descriptor = bytes([0x80 | start, 0x80]) + picture_id
        return descriptor + rng.randbytes(pkt.size - 4)
    return build


def meet_web_session(cap: Capture, link: Link, dns: common.Dns, t: int) -> int:
    t = dns.lookup(t, "meet.google.com", [("meet.google.com", wire.DNS_TYPE_A, MEET_WEB_IP, 300)],
                   service="google-meet")
    spec = FlowSpec("tcp", Endpoint(CLIENT_IP, 50512), Endpoint(MEET_WEB_IP, 443), "google-meet",
                    "meet.google.com")
    key = common.ec_key("meet.google.com")
    server = common.TlsServer(common.web_chain("meet.google.com", "Google LLC", key, 0x6001),
                              key, tlswire.TLS_AES_128_GCM_SHA256)
    plan = common.TlsPlan("meet.google.com", ["h2", "http/1.1"], server, ((600, 5200), (900, 700)))
    return common.tls13_session(TcpConn(cap, link, spec, 12_900), t + 150, plan)


def dtls_certs() -> DtlsPlan:
    start = dt.datetime(2024, 6, 2, 17, 20, 0)
    server_key = common.rsa_key("hangouts")
    server = DtlsPeer(make_cert(CertSpec("hangouts", None, 0x1A2B3C4D, start, 30), server_key),
                      server_key)
    client_key = common.ec_key("chrome-webrtc")
    client = DtlsPeer(make_cert(CertSpec("WebRTC", None, 0x0BADCAFE, start, 30), client_key),
                      client_key)
    offered = [tlswire.SrtpProfile.AES128_CM_HMAC_SHA1_80, tlswire.SrtpProfile.AEAD_AES_256_GCM,
               tlswire.SrtpProfile.AEAD_AES_128_GCM]
    return DtlsPlan(client, server, offered, tlswire.SrtpProfile.AEAD_AES_256_GCM,
                    CHROME_DTLS_SUITES, tlswire.ECDHE_RSA_AES_128_GCM_SHA256)


VP8_SHAPE = VideoShape(fps=30, keyframe_every=90, key_packets=5, delta_packets=(1, 2),
                       packet_size=(300, 1000))


def webrtc_call() -> tuple[Capture, dict[str, Any]]:
    cap = common.new_capture("webrtc_call")
    cap.interfaces = [Interface(LINKTYPE_ETHERNET, "eth0"), Interface(LINKTYPE_LINUX_SLL, "any")]
    rng = cap.rng
    eth = common.lan_link({CLIENT_IP: CLIENT_MAC, RESOLVER_IP: GATEWAY_MAC}, GATEWAY_MAC)
    sll = common.lan_link({CLIENT_IP6: CLIENT_MAC}, GATEWAY_MAC, iface=1,
                          linktype=LINKTYPE_LINUX_SLL)
    dns = common.Dns(cap, eth, CLIENT_IP, RESOLVER_IP, 9_800)
    t = meet_web_session(cap, eth, dns, epoch_us(CALL_START))
    creds = IceCredentials(ice_string(rng, 4), ice_string(rng, 16), ice_string(rng, 24),
                           rng.randbytes(8))
    v6 = FlowSpec("udp", Endpoint(CLIENT_IP6, 52815), Endpoint(MEET_MEDIA_IP6, MEET_PORT),
                  "google-meet")
    ice_checks(UdpFlow(cap, sll, v6), [t + 120_000, t + 170_000, t + 2_620_000], creds,
               v6.client, 16_200, nominate_first=False)
    spec = FlowSpec("udp", Endpoint(CLIENT_IP, 52814), Endpoint(MEET_MEDIA_IP, MEET_PORT),
                    "google-meet")
    flow = UdpFlow(cap, eth, spec)
    ice_checks(flow, [t + 121_000, t + 2_480_000], creds, Endpoint(NAT_IP, 52814), MEDIA_RTT_US,
               nominate_first=True)
    plan = dtls_certs()
    result = dtls_handshake(flow, t + 121_000 + MEDIA_RTT_US + 800, MEDIA_RTT_US, plan)
    t = result.done_us
    send_application_data(flow, result, t + 9_000, [112, 64, 380], MEDIA_RTT_US)
    keys = media_keys(rng)
    streams = send_media(flow, rng, t + 2_000, t + 2_000 + 2_600_000, keys)
    facts = webrtc_facts(cap, spec, plan, keys, streams)
    desc = ("Chrome in a Google Meet call, pcapng with two interfaces (eth0 Ethernet, 'any' Linux "
            "SLL carrying IPv6 ICE checks): TLS 1.3 to meet.google.com, ICE with "
            "GOOG-NETWORK-INFO, "
            "DTLS 1.2 (server CN=hangouts, client CN=WebRTC) negotiating SRTP_AEAD_AES_256_GCM, "
            "then SRTP Opus audio and VP8 video really encrypted with AES-256-GCM, and SRTCP.")
    return cap, manifest_entry(cap, desc, dns.answers, facts)


def media_keys(rng: random.Random) -> dict[str, tuple[bytes, bytes]]:
    """The two directions' master key and salt (in reality exported from the DTLS session)."""
    return {"client": (rng.randbytes(32), rng.randbytes(12)),
            "server": (rng.randbytes(32), rng.randbytes(12))}


def send_media(flow: UdpFlow, rng: random.Random, start: int, end: int,
               keys: dict[str, tuple[bytes, bytes]]) -> dict[str, RtpStream]:
    one_way = MEDIA_RTT_US // 2
    sessions = {side: SrtpSession(Profile.AEAD_AES_256_GCM, *keys[side]) for side in keys}
    chans = {True: MediaChannel(flow, True, sessions["client"]),
             False: MediaChannel(flow, False, sessions["server"], delay_us=one_way)}
    streams = {}
    received = {}
    nets = {("audio", True): PathModel(0, 250),
            ("audio", False): PathModel(one_way, 2500, frozenset({44, 101}), frozenset({70})),
            ("video", True): PathModel(0, 250),
            ("video", False): PathModel(one_way, 3500, frozenset({52}), frozenset({23}))}
    sent = {}
    for (media, c2s), net in nets.items():
        pt, clock = (OPUS_PT, 48000) if media == "audio" else (VP8_PT, 90000)
        stream = RtpStream(rng.getrandbits(32), pt, clock, media, rng.randrange(0x8000),
                           rng.getrandbits(32))
        packets = (audio_packets(rng, stream, start, end, (40, 110)) if media == "audio"
                   else video_packets(rng, stream, start, end, VP8_SHAPE))
        payload = (lambda p: rng.randbytes(p.size)) if media == "audio" else vp8_payload(rng)
        received[(media, c2s)] = send_rtp(chans[c2s], stream, packets, net, payload,
                                          chrome_extensions(media, start))
        streams[f"{media}-{'c2s' if c2s else 's2c'}"], sent[(media, c2s)] = stream, packets
    for (media, c2s), stream in ((k, streams[f"{k[0]}-{'c2s' if k[1] else 's2c'}"]) for k in nets):
        other = streams[f"{media}-{'s2c' if c2s else 'c2s'}"]
        plan = RtcpPlan(stream, sent[(media, c2s)], "q7Yt0XkEu3kRmF2b" if c2s else "hangouts-sfu",
                        other, received[(media, not c2s)])
        send_rtcp(chans[c2s], report_times(rng, start, end, 900_000), plan,
                  frozenset({"srtcp"}))
    return streams


def webrtc_facts(cap: Capture, spec: FlowSpec, plan: DtlsPlan,
                 keys: dict[str, tuple[bytes, bytes]], streams: dict[str, RtpStream]
                 ) -> list[KeyFact]:
    hello = frames_with_tag(cap, "dtls-client-hello")
    server_hello = frames_with_tag(cap, "dtls-server-hello")
    srtcp = frames_with_tag(cap, "srtcp")
    ice = frames_with_tag(cap, "ice-request")
    return [
        KeyFact("dtls_srtp_profile", "DTLS ClientHello (frame " + frame_list(hello) + ") offers "
                "use_srtp 0x0001, 0x0008, 0x0007; the ServerHello (frame " + frame_list(
                    server_hello[:1]) + ") selects 0x0008 SRTP_AEAD_AES_256_GCM",
                hello + server_hello[:1], {"offered": [f"0x{p:04x}" for p in plan.offered_profiles],
                                           "selected": f"0x{plan.chosen_profile:04x}"}),
        KeyFact("dtls_certificates", "DTLS certificates: server CN=hangouts (RSA), client "
                "CN=WebRTC (ECDSA P-256)", server_hello,
                {"server_sha256": cert_fingerprint_sha256(plan.server.cert),
                 "client_sha256": cert_fingerprint_sha256(plan.client.cert)}),
        KeyFact("ice_goog_network_info", "ICE Binding requests carry GOOG-NETWORK-INFO (0xC057), "
                "ICE-CONTROLLING, MESSAGE-INTEGRITY and FINGERPRINT at frames " + frame_list(ice),
                ice),
        KeyFact("dtls_application_data", "DTLS application_data records (data channel) at "
                "frames " + frame_list(frames_with_tag(cap, "dtls-app-data")),
                frames_with_tag(cap, "dtls-app-data")),
        KeyFact("srtcp_packets", "SRTCP (AES-256-GCM, E flag set) at frames " + frame_list(srtcp),
                srtcp),
        KeyFact("srtp_keys_not_on_wire", "SRTP master keys come from the DTLS exporter and do "
                "not appear on the wire; listed here so a test can decrypt",
                [first_frame_of(cap, spec)],
                {side: {"key": k.hex(), "salt": s.hex()} for side, (k, s) in keys.items()}
                | {"ssrcs": {name: f"0x{s.ssrc:08x}" for name, s in streams.items()}}),
    ]
