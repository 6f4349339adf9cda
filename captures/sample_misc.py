"""Small samples: geolocation by RTT, hostile strings, and encryption-verdict coverage
(TLS 1.0 with RC4, DTLS 1.0 with a NULL SRTP profile, ZRTP, QUIC v1)."""

from __future__ import annotations

import datetime as dt
import struct
from typing import Any

import iptocc

from captures import common, quic, tlswire, wire
from captures.certs import CertSpec, make_cert
from captures.dtls_handshake import DtlsPeer, DtlsPlan, dtls_handshake
from captures.facts import (
    KeyFact,
    flow_frames_with_tag,
    frame_list,
    frames_with_tag,
    manifest_entry,
)
from captures.media import PathModel, RtpStream, audio_packets, pcmu_payload
from captures.netsim import Capture, Endpoint, FlowSpec, TcpConn, UdpFlow
from captures.rtpflow import MediaChannel, RtcpPlan, report_times, send_rtcp, send_rtp
from captures.sample_zoom import epoch_us
from captures.srtp import Profile, SrtpSession

HOME_MAC = "d8:3a:dd:10:7e:42"
ROUTER_MAC = "c8:d7:19:2f:64:0b"
FIBRE_KM_PER_MS = 200  # protocols.md 5.1: about 100 km of distance per ms of RTT


def home(cap_name: str, client_ip: str) -> tuple[Capture, Any]:
    cap = common.new_capture(cap_name)
    return cap, common.lan_link({client_ip: HOME_MAC}, ROUTER_MAC)


def ecdsa_server(host: str, serial: int, suite: int = tlswire.ECDHE_ECDSA_AES_128_GCM_SHA256,
                 org: str = "Example Org") -> common.TlsServer:
    key = common.ec_key(host)
    return common.TlsServer(common.web_chain(host, org, key, serial), key, suite)


# --- geo_cn_rtt.pcap --------------------------------------------------------------------------

GEO_CLIENT = "192.168.0.77"  # behind a home NAT in Montreal, Canada
CN_SERVER = "101.36.167.10"  # inside a Zoom-listed prefix whose registry country is CN
CN_RTT_US = 8_000
US_SERVER = "170.114.52.2"  # zoom.us
US_RTT_US = 40_000


def geo_cn_rtt() -> tuple[Capture, dict[str, Any]]:
    cap, link = home("geo_cn_rtt", GEO_CLIENT)
    t = epoch_us(dt.datetime(2024, 7, 8, 13, 0, 0))
    us = FlowSpec("tcp", Endpoint(GEO_CLIENT, 50811), Endpoint(US_SERVER, 443), "zoom", "zoom.us")
    plan = common.TlsPlan("zoom.us", ["h2"], ecdsa_server("zoom.us", 0x5A11, org="Zoom Video "
                                                           "Communications, Inc."))
    t = common.tls12_session(TcpConn(cap, link, us, US_RTT_US), t, plan)
    cn = FlowSpec("tcp", Endpoint(GEO_CLIENT, 50819), Endpoint(CN_SERVER, 443), "zoom")
    cn_plan = common.TlsPlan(None, [], ecdsa_server("*.zoom.us", 0x5A31, org="Zoom Video "
                                                    "Communications, Inc."), ((300, 1100),))
    common.tls12_session(TcpConn(cap, link, cn, CN_RTT_US), t + 150_000, cn_plan)
    facts = [rtt_fact(cap, cn, CN_SERVER, CN_RTT_US), rtt_fact(cap, us, US_SERVER, US_RTT_US)]
    facts.append(KeyFact("vantage", "capture taken next to a client in Canada (CA)", [],
                         {"vantage_country": "CA", "client": GEO_CLIENT}))
    desc = ("Canadian vantage (home NAT) opening TCP+TLS 1.2 to 101.36.167.10, whose registry "
            "country is CN, with an 8 ms SYN to SYN/ACK RTT (so it cannot be in China), and to "
            "the US control server zoom.us (170.114.52.2) with a 40 ms RTT.")
    return cap, manifest_entry(cap, desc, {}, facts)


def rtt_fact(cap: Capture, spec: FlowSpec, ip: str, rtt_us: int) -> KeyFact:
    country = iptocc.country_code(ip)
    syn = flow_frames_with_tag(cap, spec, "tcp-syn")[0]
    synack = flow_frames_with_tag(cap, spec, "tcp-synack")[0]
    max_km = rtt_us / 1000 / 2 * FIBRE_KM_PER_MS
    return KeyFact(f"rtt_{ip}", f"server {ip} registry {country}: SYN (frame {syn}) to SYN/ACK "
                   f"(frame {synack}) RTT {rtt_us / 1000:g} ms, so at most {max_km:g} km away",
                   [syn, synack], {"ip": ip, "registry_country": country,
                                   "syn_rtt_ms": rtt_us / 1000, "max_distance_km": max_km})


# --- hostile_strings.pcap ---------------------------------------------------------------------

HOSTILE_CLIENT = "192.168.0.66"
HOSTILE_SNI = "<script>alert(1)</script>.example"
HOSTILE_DISPLAY = '"><img src=x onerror=alert(1)>'
HOSTILE_FORMULA = "=cmd|' /C calc'!A0"
HOSTILE_DNS_NAME = "<img src=x onerror=alert(1)>.example"


def hostile_sip(rng: Any) -> bytes:
    call_id = rng.randbytes(8).hex()
    headers = [("Via", f"SIP/2.0/UDP {HOSTILE_CLIENT}:5060;branch=z9hG4bK{rng.randbytes(5).hex()}"),
               ("Max-Forwards", "70"),
               ("From", f'"{HOSTILE_DISPLAY}" <sip:{HOSTILE_FORMULA}@example.net>;tag=1'),
               ("To", f'"{HOSTILE_DISPLAY}" <sip:bob@example.net>'),
               ("Call-ID", call_id), ("CSeq", "1 OPTIONS"), ("User-Agent", HOSTILE_FORMULA)]
    return wire.sip_message("OPTIONS sip:bob@example.net SIP/2.0", headers)


def hostile_strings() -> tuple[Capture, dict[str, Any]]:
    cap, link = home("hostile_strings", HOSTILE_CLIENT)
    rng = cap.rng
    t = epoch_us(dt.datetime(2024, 7, 9, 8, 30, 0))
    dns = common.Dns(cap, link, HOSTILE_CLIENT, "192.168.0.1", 3_100)
    records = [("evil.example", wire.DNS_TYPE_CNAME, HOSTILE_DNS_NAME, 60),
               (HOSTILE_DNS_NAME, wire.DNS_TYPE_A, "203.0.113.80", 60)]
    t = dns.lookup(t, "evil.example", records, tag="hostile-dns")
    tls = FlowSpec("tcp", Endpoint(HOSTILE_CLIENT, 51515), Endpoint("203.0.113.80", 443), "other",
                   HOSTILE_SNI)
    plan = common.TlsPlan(HOSTILE_SNI, ["h2"], ecdsa_server("evil.example", 0x66))
    t = common.tls12_session(TcpConn(cap, link, tls, 31_000), t + 500, plan)
    sip = FlowSpec("udp", Endpoint(HOSTILE_CLIENT, 5060), Endpoint("198.51.100.66", 5060), "sip")
    UdpFlow(cap, link, sip).send(t + 50_000, True, hostile_sip(rng), {"sip"},
                                 tags=frozenset({"hostile-sip"}))
    facts = [KeyFact("hostile_sni", f"TLS SNI {HOSTILE_SNI!r}",
                     frames_with_tag(cap, "tls-client-hello"), {"value": HOSTILE_SNI}),
             KeyFact("hostile_sip", "SIP From/To display names and User-Agent carry HTML and a "
                     "spreadsheet formula", frames_with_tag(cap, "hostile-sip"),
                     {"display": HOSTILE_DISPLAY, "user_agent": HOSTILE_FORMULA}),
             KeyFact("hostile_dns", f"DNS answer names with HTML: {HOSTILE_DNS_NAME!r}",
                     frames_with_tag(cap, "hostile-dns"), {"value": HOSTILE_DNS_NAME})]
    desc = ("Hostile text in protocol fields, for output escaping: a TLS SNI with a script tag, "
            "SIP From/To/User-Agent with an HTML image handler and a spreadsheet formula, a DNS "
            "CNAME answer whose name is HTML.")
    return cap, manifest_entry(cap, desc, dns.answers, facts)


# --- tls10_weak.pcap --------------------------------------------------------------------------

LEGACY_SUITES = (tlswire.RSA_RC4_128_SHA, tlswire.RSA_AES_128_CBC_SHA, tlswire.RSA_3DES_EDE_CBC_SHA,
                 tlswire.ECDHE_RSA_AES_128_CBC_SHA)


def tls10_weak() -> tuple[Capture, dict[str, Any]]:
    cap, link = home("tls10_weak", "192.168.0.90")
    key = common.rsa_key("legacy-pbx")
    host = "legacy-pbx.example.net"
    chain = [make_cert(CertSpec(host, "Example Telecom", 0x0100, dt.datetime(2019, 1, 1), 3650,
                                (host,)), key)]
    server = common.TlsServer(chain, key, tlswire.RSA_RC4_128_SHA)
    plan = common.TlsPlan(host, [], server, ((240, 880),), version=tlswire.TLS_1_0,
                          suites=LEGACY_SUITES, record_overhead=tlswire.RC4_SHA_OVERHEAD)
    spec = FlowSpec("tcp", Endpoint("192.168.0.90", 49702), Endpoint("198.51.100.25", 443),
                    "other", host)
    conn = TcpConn(cap, link, spec, 23_000)
    conn.close(common.tls12_session(conn, epoch_us(dt.datetime(2024, 7, 10, 9, 0, 0)), plan) + 9000)
    hello = frames_with_tag(cap, "tls-server-hello")
    facts = [KeyFact("tls10_rc4", "TLS 1.0 ServerHello selects TLS_RSA_WITH_RC4_128_SHA (0x0005), "
                     "RSA key exchange (no forward secrecy), at frame " + frame_list(hello[:1]),
                     hello[:1], {"version": "0x0301", "cipher_suite": "0x0005"})]
    desc = ("TLS 1.0 to a legacy server: ClientHello offers RC4, CBC and 3DES suites; the server "
            "picks TLS_RSA_WITH_RC4_128_SHA and a self-signed RSA certificate.")
    return cap, manifest_entry(cap, desc, {}, facts)


# --- dtls10_null_srtp.pcap --------------------------------------------------------------------

GATEWAY_IP = "198.51.100.40"


def dtls10_null_srtp() -> tuple[Capture, dict[str, Any]]:
    cap, link = home("dtls10_null_srtp", "192.168.0.91")
    rng = cap.rng
    spec = FlowSpec("udp", Endpoint("192.168.0.91", 42000), Endpoint(GATEWAY_IP, 20000), "webrtc")
    flow = UdpFlow(cap, link, spec)
    start = dt.datetime(2024, 7, 10, 9, 30, 0)
    server_key, client_key = common.rsa_key("legacy-pbx"), common.ec_key("old-webrtc-client")
    plan = DtlsPlan(DtlsPeer(make_cert(CertSpec("WebRTC", None, 7, start, 30), client_key),
                             client_key),
                    DtlsPeer(make_cert(CertSpec("asterisk", None, 8, start, 365), server_key),
                             server_key),
                    [tlswire.SrtpProfile.AES128_CM_HMAC_SHA1_80,
                     tlswire.SrtpProfile.NULL_HMAC_SHA1_80],
                    tlswire.SrtpProfile.NULL_HMAC_SHA1_80,
                    [tlswire.RSA_AES_128_CBC_SHA, tlswire.ECDHE_RSA_AES_128_CBC_SHA],
                    tlswire.RSA_AES_128_CBC_SHA, version=tlswire.DTLS_1_0)
    t = dtls_handshake(flow, epoch_us(start), 19_000, plan).done_us
    media_start, end = t + 3_000, t + 3_000 + 2_000_000
    streams = {}
    for c2s in (True, False):
        stream = RtpStream(rng.getrandbits(32), 0, 8000, "audio", rng.randrange(0x8000),
                           rng.getrandbits(32))
        packets = audio_packets(rng, stream, media_start, end, (160, 161))
        chan = MediaChannel(flow, c2s, SrtpSession(Profile.NULL_HMAC_SHA1_80, rng.randbytes(16),
                                                   rng.randbytes(14)), delay_us=0 if c2s else 9_500)
        net = PathModel(0 if c2s else 9_500, 300 if c2s else 2500)
        received = send_rtp(chan, stream, packets, net, lambda p: pcmu_payload(rng, p, True))
        streams[c2s] = (chan, stream, packets, received)
    for c2s, (chan, stream, packets, _) in streams.items():
        other = streams[not c2s]
        send_rtcp(chan, report_times(rng, media_start, end, 900_000),
                  RtcpPlan(stream, packets, "legacy", other[1], other[3]))
    server_hello = frames_with_tag(cap, "dtls-server-hello")
    facts = [KeyFact("dtls10_null_profile", "DTLS 1.0 ServerHello selects SRTP_NULL_HMAC_SHA1_80 "
                     "(0x0005): media is authenticated but not encrypted", server_hello[:1],
                     {"dtls_version": "0xfeff", "selected": "0x0005"})]
    desc = ("DTLS 1.0 (TLS_RSA_WITH_AES_128_CBC_SHA) negotiating SRTP_NULL_HMAC_SHA1_80, then "
            "SRTP whose PCMU payload is in clear with a 10-byte HMAC-SHA1 tag.")
    return cap, manifest_entry(cap, desc, {}, facts)


# --- zrtp_call.pcap ---------------------------------------------------------------------------

ZRTP_VERSION = b"1.10"
ZRTP_CLIENT_ID = b"LINPHONE-ZRTPCPP"


def zrtp_hello(rng: Any, zid: bytes) -> bytes:
    """Hello: version, client id, H3, ZID, flags/counts, then one algorithm of each kind, MAC."""
    algos = [b"S256", b"AES1", b"HS80", b"EC25", b"B32 "]
    counts = struct.pack("!I", (1 << 16) | (1 << 12) | (1 << 8) | (1 << 4) | 1)
    body = ZRTP_VERSION + ZRTP_CLIENT_ID + rng.randbytes(32) + zid + counts + b"".join(algos)
    return wire.zrtp_message("Hello   ", body + rng.randbytes(8))


def zrtp_messages(rng: Any, zids: dict[bool, bytes]) -> list[tuple[bool, str, bytes]]:
    """The RFC 6189 exchange, initiator = the capturing phone (c2s)."""
    commit = (rng.randbytes(32) + zids[True] + b"S256AES1HS80EC25B32 " + rng.randbytes(32)
              + rng.randbytes(8))
    dh_part = lambda: (rng.randbytes(32) + rng.randbytes(32) + rng.randbytes(64)  # noqa: E731
                       + rng.randbytes(8))
    confirm = lambda: rng.randbytes(8) + rng.randbytes(16) + rng.randbytes(40)  # noqa: E731
    return [(True, "Hello   ", zrtp_hello(rng, zids[True])),
            (False, "Hello   ", zrtp_hello(rng, zids[False])),
            (True, "HelloACK", wire.zrtp_message("HelloACK", b"")),
            (False, "HelloACK", wire.zrtp_message("HelloACK", b"")),
            (True, "Commit  ", wire.zrtp_message("Commit  ", commit)),
            (False, "DHPart1 ", wire.zrtp_message("DHPart1 ", dh_part())),
            (True, "DHPart2 ", wire.zrtp_message("DHPart2 ", dh_part())),
            (False, "Confirm1", wire.zrtp_message("Confirm1", confirm())),
            (True, "Confirm2", wire.zrtp_message("Confirm2", confirm())),
            (False, "Conf2ACK", wire.zrtp_message("Conf2ACK", b""))]


def zrtp_call() -> tuple[Capture, dict[str, Any]]:
    cap, link = home("zrtp_call", "192.168.0.93")
    rng = cap.rng
    spec = FlowSpec("udp", Endpoint("192.168.0.93", 7078), Endpoint("198.51.100.60", 7078), "sip",
                    p2p=True)
    flow = UdpFlow(cap, link, spec)
    t = epoch_us(dt.datetime(2024, 7, 11, 18, 12, 40))
    ssrcs = {True: rng.getrandbits(32), False: rng.getrandbits(32)}
    seqs = {True: 0, False: 0}
    for i, (c2s, name, message) in enumerate(zrtp_messages(rng, {True: rng.randbytes(12),
                                                                  False: rng.randbytes(12)})):
        seqs[c2s] += 1
        packet = wire.zrtp_packet(seqs[c2s], ssrcs[c2s], message)
        flow.send(t + i * 24_000, c2s, packet, {"zrtp"}, tags=frozenset({"zrtp", name.strip()}))
    start, end = t + 260_000, t + 2_260_000
    for c2s in (True, False):
        stream = RtpStream(ssrcs[c2s], 0, 8000, "audio", rng.randrange(0x8000), rng.getrandbits(32))
        srtp = SrtpSession(Profile.AES_CM_128_HMAC_SHA1_80, rng.randbytes(16), rng.randbytes(14))
        net = PathModel(0, 300) if c2s else PathModel(12_000, 3000, frozenset({40}))
        send_rtp(MediaChannel(flow, c2s, srtp), stream, audio_packets(rng, stream, start, end,
                                                                     (160, 161)),
                 net, lambda p: pcmu_payload(rng, p, True))
    zrtp = frames_with_tag(cap, "zrtp")
    facts = [KeyFact("zrtp_exchange", "ZRTP Hello/HelloACK/Commit/DHPart1/DHPart2/Confirm1/"
                     "Confirm2/Conf2ACK at frames " + frame_list(zrtp) + ", then SRTP", zrtp)]
    desc = ("SIP-less view of a ZRTP call between two phones on UDP 7078: the ZRTP key agreement "
            "in the media path (with CRC-32C), then SRTP AES_CM_128_HMAC_SHA1_80 on the same "
            "SSRCs.")
    return cap, manifest_entry(cap, desc, {}, facts)


# --- quic_meet.pcap ---------------------------------------------------------------------------

QUIC_CLIENT = "192.168.0.94"
MEET_WEB_IP = "142.250.64.78"
# (RFC 9000 section 18.2 id, value): idle timeout, max UDP payload, initial max data and stream
# data (bidi local, bidi remote, uni), max bidi and uni streams
QUIC_TRANSPORT_PARAMS = b"".join(
    quic.varint(pid) + quic.varint(len(quic.varint(v))) + quic.varint(v)
    for pid, v in ((0x01, 30000), (0x03, 1472), (0x04, 15728640), (0x05, 6291456),
                   (0x06, 6291456), (0x07, 6291456), (0x08, 100), (0x09, 103)))


def quic_client_hello(rng: Any) -> bytes:
    share = tlswire.EcdheShare.make(tlswire.Group.X25519, rng)
    exts = [tlswire.ext_server_name("meet.google.com"),
            tlswire.ext_supported_groups([tlswire.Group.X25519, tlswire.Group.SECP256R1]),
            tlswire.ext_alpn(["h3"]), tlswire.ext_signature_algorithms(),
            tlswire.ext_key_share_client(share.group, share.public),
            tlswire.ext_psk_key_exchange_modes(),
            tlswire.ext_supported_versions_client([tlswire.TLS_1_3]),
            tlswire.extension(tlswire.Ext.QUIC_TRANSPORT_PARAMETERS, QUIC_TRANSPORT_PARAMS)]
    hello = tlswire.ClientHello(tlswire.TLS_1_2, rng.randbytes(32),
                                [tlswire.TLS_AES_128_GCM_SHA256, tlswire.TLS_AES_256_GCM_SHA384,
                                 tlswire.TLS_CHACHA20_POLY1305_SHA256], exts)
    return tlswire.tls_handshake(tlswire.HandshakeType.CLIENT_HELLO, hello.body())


def quic_server_hello(rng: Any) -> bytes:
    share = tlswire.EcdheShare.make(tlswire.Group.X25519, rng)
    exts = [tlswire.ext_key_share_server(share.group, share.public),
            tlswire.ext_supported_versions_server(tlswire.TLS_1_3)]
    body = tlswire.server_hello_body(tlswire.TLS_1_2, rng.randbytes(32), b"",
                                     tlswire.TLS_AES_128_GCM_SHA256, exts)
    return tlswire.tls_handshake(tlswire.HandshakeType.SERVER_HELLO, body)


def quic_meet() -> tuple[Capture, dict[str, Any]]:
    cap, link = home("quic_meet", QUIC_CLIENT)
    rng = cap.rng
    spec = FlowSpec("udp", Endpoint(QUIC_CLIENT, 58312), Endpoint(MEET_WEB_IP, 443), "google-meet",
                    "meet.google.com")
    flow = UdpFlow(cap, link, spec)
    t = epoch_us(dt.datetime(2024, 7, 12, 10, 0, 0))
    dcid, client_scid, server_scid = rng.randbytes(8), rng.randbytes(8), rng.randbytes(8)
    initial = quic.client_initial(dcid, client_scid, 0, quic_client_hello(rng))
    flow.send(t, True, initial, {"quic"}, tags=frozenset({"quic-client-initial"}))
    reply = quic.server_initial(dcid, client_scid, server_scid, quic_server_hello(rng))
    reply += quic.opaque_handshake(client_scid, server_scid, 0, rng.randbytes(1000))
    flow.send(t + 17_300, False, reply, {"quic"}, tags=frozenset({"quic-server-initial"}))
    more = quic.opaque_handshake(client_scid, server_scid, 1, rng.randbytes(1150))
    flow.send(t + 17_400, False, more, {"quic"})
    for i in range(6):  # 1-RTT short-header packets, opaque
        c2s = i % 2 == 0
        short = bytes([0x40 | rng.randrange(0x40)]) + (server_scid if c2s else client_scid)
        flow.send(t + 18_000 + i * 9_000, c2s, short + rng.randbytes(rng.randrange(40, 900)),
                  {"quic"})
    initial_frames = frames_with_tag(cap, "quic-client-initial")
    facts = [KeyFact("quic_initial_sni", "QUIC v1 Initial (really protected per RFC 9001) "
                     "carries a ClientHello with SNI meet.google.com and ALPN h3 at frame "
                     + frame_list(initial_frames), initial_frames,
                     {"dcid": dcid.hex(), "sni": "meet.google.com"})]
    desc = ("QUIC v1 to a Google front end: a client Initial with real RFC 9001 packet "
            "protection (SNI meet.google.com, ALPN h3), the server Initial (ServerHello) and "
            "opaque Handshake and 1-RTT packets.")
    return cap, manifest_entry(cap, desc, {}, facts)


# --- opaque_traffic.pcap ----------------------------------------------------------------------


def opaque_traffic() -> tuple[Capture, dict[str, Any]]:
    """Traffic with nothing to judge by: no handshake, no signalling, no known structure."""
    cap, link = home("opaque_traffic", "192.168.0.95")
    start = epoch_us(dt.datetime(2024, 7, 11, 14, 0, 0))
    udp = UdpFlow(cap, link, FlowSpec("udp", Endpoint("192.168.0.95", 41000),
                                      Endpoint("198.51.100.90", 40000), "other"))
    for i in range(40):  # first byte 4-15: RFC 7983's "drop" range, no protocol claims it
        payload = bytes([4 + i % 12]) + cap.rng.randbytes(cap.rng.randrange(60, 400))
        udp.send(start + i * 25_000, i % 2 == 0, payload, set())
    tcp = TcpConn(cap, link, FlowSpec("tcp", Endpoint("192.168.0.95", 52100),
                                      Endpoint("198.51.100.91", 7000), "other"), 30_000)
    t = start + 1_200_000  # joined mid-connection: no SYN, no handshake in the capture
    for i in range(12):
        t = tcp.send(t, i % 2 == 0, b"\x5a" + cap.rng.randbytes(500), frozenset()) + 20_000
    desc = ("Opaque traffic: a UDP flow of unstructured bytes on unassigned ports and a TCP "
            "connection joined mid-stream; nothing in the capture says whether it is encrypted.")
    return cap, manifest_entry(cap, desc, {}, [])
