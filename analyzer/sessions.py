"""Slow-path session state: TCP directions, handshakes, signalling and round-trip samples.

`SessionRecorder` turns decoded handshake and signalling messages into `FlowFacts` and
`CaptureFacts`. It is driven by `analyzer.inspector.Inspector`, which owns packet selection.
"""

from __future__ import annotations

import ipaddress
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from analyzer.decode import dns, dtls, sip, stun, tls, turn
from analyzer.errors import DecodeError
from analyzer.facts import SIGNATURE, FlowFacts, HandshakeFacts, RttSample, SdpMedia
from analyzer.tcpstream import TcpReassembler

if TYPE_CHECKING:
    from analyzer.inspector import Inspector

TLS13 = 0x0304
HTTP_STARTS = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"OPTIONS ", b"PATCH ",
               b"CONNECT ", b"HTTP/1.")
Q931_DISCRIMINATOR = 0x08
ZOOM_PORTS = range(8801, 8811)
ZOOM_HANDSHAKE_VERSIONS = (b"\x00\x01", b"\x00\x02", b"\x00\x03")  # 00 01 seen in zoom.pcap
HS_CLIENT_HELLO, HS_SERVER_HELLO, HS_CERTIFICATE = 1, 2, 11
MAX_SHARED_OFFERS = 4096  # distinct offers kept to be shared (a capture has a few dozen)
T = TypeVar("T", bound=tuple[object, ...])
StreamParser = tls.TlsStreamReader | sip.SipStreamSplitter | turn.Rfc4571Splitter | \
    turn.StunTcpSplitter


@dataclass(slots=True)
class TcpDirection:
    reassembler: TcpReassembler = field(default_factory=TcpReassembler)
    app: str = ""  # '' until the first bytes are seen: 'tls' | 'sip' | 'stun' | 'dns' | 'other'
    parser: StreamParser | None = None
    dns_buffer: bytes = b""
    finished: bool = False


class SessionRecorder:
    def __init__(self, inspector: Inspector) -> None:
        # (a weak reference: the inspector owns this recorder, and a cycle between them would
        # leave a capture's whole state to the cycle collector once the analysis is done)
        self.inspector: Inspector = weakref.proxy(inspector)
        self._tcp: dict[tuple[int, int], TcpDirection] = {}
        self._dtls: dict[tuple[int, int], dtls.DtlsHandshakeAssembler] = {}
        self._hello_time: dict[tuple[int, str], tuple[float, int, int]] = {}
        self._syn: dict[int, tuple[float, int, int]] = {}
        self._stun_pending: dict[tuple[int, bytes], tuple[float, int, int]] = {}
        self._offers: dict[tuple[object, ...], tuple[object, ...]] = {}  # `_shared`

    def _shared(self, offered: T) -> T:
        """One object for each of the few distinct lists clients offer (cipher suites,
        versions, ALPN), kept on many flows: a tuple of twenty suites is 200 bytes."""
        known = self._offers.get(offered)
        if known is not None:
            return known  # type: ignore[return-value]
        if len(self._offers) < MAX_SHARED_OFFERS:
            self._offers[offered] = offered
        return offered

    def _facts(self, fi: int) -> FlowFacts:
        return self.inspector.facts[fi]

    # ------------------------------------------------------------------ round trips

    def _rtt(self, fi: int, kind: str, request: tuple[float, int, int], ts: float, frame: int,
             d: int) -> None:
        req_ts, req_frame, req_dir = request
        if req_dir != d and ts >= req_ts:
            sample = RttSample(kind, round((ts - req_ts) * 1000, 3), req_frame, frame)
            facts = self._facts(fi)
            if not facts.rtt or sample.rtt_ms < facts.rtt[0].rtt_ms:
                facts.rtt = (sample,)  # (only the fastest is reported: a flood keeps one)

    def tcp_syn(self, fi: int, d: int, frame: int, ts: float, is_synack: bool) -> None:
        if not is_synack:
            self._syn.setdefault(fi, (ts, frame, d))
        elif fi in self._syn:
            self._rtt(fi, "tcp-handshake", self._syn.pop(fi), ts, frame, d)

    def stun_transaction(self, fi: int, d: int, frame: int, ts: float,
                         msg: stun.StunMessage) -> None:
        key = (fi, msg.transaction_id)
        if msg.msg_class == "request":
            self._stun_pending.setdefault(key, (ts, frame, d))
        elif msg.msg_class in ("success", "error") and key in self._stun_pending:
            self._rtt(fi, "stun", self._stun_pending.pop(key), ts, frame, d)

    # ------------------------------------------------------------------ TLS, DTLS, QUIC

    def dtls_assembler(self, fi: int, d: int) -> dtls.DtlsHandshakeAssembler:
        assembler = self._dtls.get((fi, d))
        if assembler is None:  # (made when missing only: not one per packet to be dropped)
            assembler = self._dtls[(fi, d)] = dtls.DtlsHandshakeAssembler()
        return assembler

    def _handshake(self, fi: int, protocol: str) -> HandshakeFacts:
        facts = self._facts(fi)
        current = getattr(facts, protocol)
        if current is None:
            current = HandshakeFacts(protocol=protocol)
            setattr(facts, protocol, current)
        facts.add_protocol(protocol)
        return current

    def handshake_message(self, fi: int, d: int, frame: int, ts: float,
                          message: tls.HandshakeMessage, protocol: str) -> None:
        try:
            if message.msg_type == HS_CLIENT_HELLO:
                hello = tls.parse_client_hello(message.body, dtls=protocol == "dtls")
                self._hello_time.setdefault((fi, protocol), (ts, frame, d))
                self.client_hello(fi, frame, ts, hello, protocol)
            elif message.msg_type == HS_SERVER_HELLO:
                self._server_hello(fi, d, frame, ts, message.body, protocol)
            elif message.msg_type == HS_CERTIFICATE:
                self._certificates(fi, d, frame, message.body, protocol)
        except DecodeError as exc:
            self._facts(fi).note_damage(f"frame {frame}: {protocol} handshake: {exc}")

    def client_hello(self, fi: int, frame: int, ts: float, hello: tls.ClientHello,
                     protocol: str) -> None:
        hs = self._handshake(fi, protocol)
        if hs.client_hello_frame:
            return
        hs.client_hello_frame = frame
        hs.sni = hello.sni or ""
        shared = self._shared
        hs.offered_versions = shared(hello.supported_versions or (hello.legacy_version,))
        hs.alpn, hs.offered_suites = shared(hello.alpn), shared(hello.cipher_suites)
        hs.srtp_offered, hs.ech = shared(hello.use_srtp_profiles), hello.ech
        self._facts(fi).add_name(hs.sni, f"{protocol}-sni", frame)

    def _server_hello(self, fi: int, d: int, frame: int, ts: float, body: bytes,
                      protocol: str) -> None:
        hello = tls.parse_server_hello(body, dtls=protocol == "dtls")
        hs = self._handshake(fi, protocol)
        if hs.server_hello_frame:
            return
        hs.server_hello_frame = frame
        hs.version, hs.cipher_suite = hello.version, hello.cipher_suite
        hs.srtp_profile = hello.use_srtp_profile if hello.use_srtp_profile is not None else -1
        request = self._hello_time.get((fi, protocol))
        if request is not None:
            self._rtt(fi, f"{protocol}-hello", request, ts, frame, d)

    def _certificates(self, fi: int, d: int, frame: int, body: bytes, protocol: str) -> None:
        hs = self._handshake(fi, protocol)
        hello = self._hello_time.get((fi, protocol))
        from_client = hello is not None and hello[2] == d
        for der in tls.parse_certificate_message(body, tls13=hs.version == TLS13)[:1]:
            info = tls.certificate_summary(der)
            if from_client:  # DTLS clients present certificates too (WebRTC): not a server name
                hs.client_certificate_subjects.append(info.subject)
                hs.client_certificate_fingerprints.append(info.sha256_fingerprint)
                continue
            hs.certificate_subjects.append(info.subject)
            hs.certificate_fingerprints.append(info.sha256_fingerprint)
            for name in (info.subject_cn, *info.san_dns):
                if name and name not in hs.certificate_names:
                    hs.certificate_names.append(name)
                    self._facts(fi).add_name(name, f"{protocol}-certificate", frame)

    # ------------------------------------------------------------------ Zoom control packets

    def zoom_handshake(self, fi: int, d: int, frame: int, ts: float, data: bytes) -> None:
        """Zoom SFU handshake: type 1 (client) and type 2 (server), `0t 00 02|03` (nDPI)."""
        flow = self.inspector.flows.flows[fi]
        if flow.a[2] not in ZOOM_PORTS and flow.b[2] not in ZOOM_PORTS:
            return
        if len(data) < 3 or data[0] not in (1, 2) or data[1:3] not in ZOOM_HANDSHAKE_VERSIONS:
            return
        facts = self._facts(fi)
        facts.add_protocol("zoom")
        facts.add_evidence(SIGNATURE, "zoom", f"Zoom SFU handshake type {data[0]}", frame)
        if data[0] == 1:
            self._hello_time.setdefault((fi, "zoom"), (ts, frame, d))
        elif (fi, "zoom") in self._hello_time:
            self._rtt(fi, "zoom-handshake", self._hello_time.pop((fi, "zoom")), ts, frame, d)

    def zoom_p2p_setup(self, fi: int, d: int, frame: int, ts: float, data: bytes) -> None:
        """Zoom P2P setup packets: media type 0x1f, `1f 02 01`, an ASCII IP and a UUID."""
        if len(data) < 8 or data[:2] != b"\x1f\x02":
            return
        known = self.inspector.capture.zoom_stun_clients
        endpoints = (self.inspector.endpoint(fi, 0), self.inspector.endpoint(fi, 1))
        if not any(ep in known for ep in endpoints):
            return
        facts = self._facts(fi)
        facts.zoom_p2p = True
        facts.add_protocol("zoom")
        facts.add_evidence(SIGNATURE, "zoom", "Zoom peer-to-peer setup packet (type 0x1f) "
                           "from an address that did Zoom STUN", frame)

    def discord_ip_discovery(self, fi: int, frame: int, data: bytes) -> None:
        """Discord voice IP discovery: type 1 (request) or 2 (response), length 70, SSRC,
        a 64-byte NUL-padded address and a port: 74 bytes (Discord developer docs, Voice)."""
        if len(data) in (8, 12) and data[:4] == b"\x13\x37\xca\xfe":
            self._facts(fi).add_evidence(SIGNATURE, "discord", "Discord voice-server latency "
                                         "probe (magic 0x1337CAFE)", frame)
            return
        if len(data) != 74 or data[:4] not in (b"\x00\x01\x00\x46", b"\x00\x02\x00\x46"):
            return
        facts = self._facts(fi)
        facts.add_protocol("discord-ip-discovery")
        kind = "request" if data[1] == 1 else "response"
        facts.add_evidence(SIGNATURE, "discord", f"Discord voice IP discovery {kind}", frame)

    # ------------------------------------------------------------------ SIP and DNS

    def sip_message(self, fi: int, d: int, frame: int, ts: float, data: bytes,
                    over_tls: bool) -> None:
        try:
            message = sip.parse_sip(data)
        except DecodeError:
            return
        facts = self._facts(fi)
        facts.add_protocol("sip")
        what = message.method or f"{message.status_code} response"
        facts.add_evidence(SIGNATURE, "sip", "SIP signalling", frame)
        call_id = message.call_id or ""
        if call_id:
            self.inspector.capture.sip_calls.setdefault(call_id, []).append(frame)
        self.inspector.capture.sip_messages.append(_sip_row(fi, frame, what, message))
        host = sip_uri_host(message.request_uri or "")
        if message.is_request and host:
            facts.add_name(host, "sip-request-uri", frame)
        if message.sdp is not None:
            self._sdp(fi, frame, call_id, message.sdp, over_tls, message.is_request)

    def _sdp(self, fi: int, frame: int, call_id: str, sdp: object, over_tls: bool,
             offer: bool) -> None:
        capture = self.inspector.capture
        for m in getattr(sdp, "media", ()):
            if not m.connection_address or m.port <= 0:
                continue
            entry = SdpMedia(
                call_id=call_id, media=m.media, proto=m.proto,
                clock_rates={pt: r.clock_rate for pt, r in m.rtpmap.items()},
                encodings={pt: r.encoding for pt, r in m.rtpmap.items()},
                sdes_suites=tuple(c.suite for c in m.crypto),
                fingerprint=" ".join(m.fingerprint) if m.fingerprint else "",
                setup=m.setup or "", frame=frame, over_tls=over_tls, offer=offer,
            )
            rtcp_port = m.port if m.rtcp_mux else (m.rtcp_port or m.port + 1)
            for port in {m.port, rtcp_port}:
                capture.add_sdp((m.connection_address, port), entry)
                capture.learned.setdefault(
                    (m.connection_address, port), (fi, f"SDP m={m.media} line in frame {frame}",
                                                   frame))

    def dns_message(self, fi: int, frame: int, data: bytes) -> None:
        try:
            message = dns.parse_dns(data)
        except DecodeError:
            return
        facts = self._facts(fi)
        facts.add_protocol("dns")
        for question in message.questions[:1]:
            facts.add_name(question.name.lower().rstrip("."), "dns-query", frame)
        if not message.is_response:
            return
        for address, names in dns.address_names(message).items():
            for name in names:
                self.inspector.capture.add_dns(address, name, frame)

    # ------------------------------------------------------------------ TCP streams

    def tcp_direction(self, fi: int, d: int) -> TcpDirection:
        stream = self._tcp.get((fi, d))
        if stream is None:  # (made when missing only: not one per segment to be dropped)
            stream = self._tcp[(fi, d)] = TcpDirection()
        return stream

    def tcp_data(self, fi: int, d: int, frame: int, ts: float, data: bytes) -> None:
        stream = self.tcp_direction(fi, d)
        if not stream.app:
            self._detect_tcp_app(fi, frame, stream, data)
        if stream.app == "tls":
            self._tls_bytes(fi, d, frame, ts, stream, data)
        elif stream.app == "sip":
            assert isinstance(stream.parser, sip.SipStreamSplitter)
            for message in stream.parser.feed(data):
                self.sip_message(fi, d, frame, ts, message, over_tls=False)
        elif stream.app == "stun":
            self._stun_bytes(fi, d, frame, ts, stream, data)
        elif stream.app == "dns":
            self._dns_bytes(fi, frame, stream, data)
        else:
            stream.finished = True

    def _detect_tcp_app(self, fi: int, frame: int, stream: TcpDirection, data: bytes) -> None:
        flow = self.inspector.flows.flows[fi]
        if tls.looks_like_tls_record(data):
            stream.app, stream.parser = "tls", tls.TlsStreamReader()
        elif sip.looks_like_sip(data):
            stream.app, stream.parser = "sip", sip.SipStreamSplitter()
        elif stun.looks_like_stun(data) or turn.looks_like_channel_data(data, over_tcp=True):
            stream.app, stream.parser = "stun", turn.StunTcpSplitter()
        elif len(data) > 2 and stun.looks_like_stun(data[2:]):
            stream.app, stream.parser = "stun", turn.Rfc4571Splitter()
        elif data[:2] == b"WA" and len(data) > 3 and 1 <= data[2] <= 9:
            stream.app = "whatsapp"
            self._facts(fi).add_protocol("whatsapp")
            self._facts(fi).add_evidence(
                SIGNATURE, "whatsapp", "WhatsApp 'WA' chat-protocol header on TCP", frame)
        elif data.startswith(HTTP_STARTS):
            stream.app = "http"
            self._facts(fi).add_protocol("http")
        elif len(data) >= 5 and data[:2] == b"\x03\x00" and data[4] == Q931_DISCRIMINATOR:
            stream.app = "h323"  # TPKT (RFC 1006) carrying Q.931 / H.225 call signalling
            self._facts(fi).add_protocol("h323")
        elif 53 in (flow.a[2], flow.b[2]):
            stream.app = "dns"
        else:
            stream.app = "other"

    def _tls_bytes(self, fi: int, d: int, frame: int, ts: float, stream: TcpDirection,
                   data: bytes) -> None:
        reader = stream.parser
        assert isinstance(reader, tls.TlsStreamReader)
        for message in reader.feed(data):
            self.handshake_message(fi, d, frame, ts, message, "tls")
        if reader.stopped:
            hs = self._handshake(fi, "tls")
            hs.encrypted_seen |= reader.encrypted_seen
            stream.finished = True

    def _stun_bytes(self, fi: int, d: int, frame: int, ts: float, stream: TcpDirection,
                    data: bytes) -> None:
        assert isinstance(stream.parser, turn.Rfc4571Splitter | turn.StunTcpSplitter)
        for message in stream.parser.feed(data):
            if stun.looks_like_stun(message):
                try:
                    self.inspector.stun_message(fi, d, frame, ts, stun.parse_stun(message))
                except DecodeError:
                    continue
        if self._facts(fi).stun and self._facts(fi).stun.messages > 50:  # type: ignore[union-attr]
            stream.finished = True

    def _dns_bytes(self, fi: int, frame: int, stream: TcpDirection, data: bytes) -> None:
        messages, stream.dns_buffer = dns.split_dns_tcp(stream.dns_buffer + data)
        for message in messages:
            self.dns_message(fi, frame, message)


def sip_uri_host(uri: str) -> str:
    """The domain of a sip:/sips: URI (user@host:port;params), '' for IP literals."""
    if not uri.lower().startswith(("sip:", "sips:")):
        return ""
    rest = uri.split(":", 1)[1].split(";", 1)[0].split("?", 1)[0]
    host = rest.rsplit("@", 1)[-1]
    host = host[1:].split("]", 1)[0] if host.startswith("[") else host.split(":", 1)[0]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host.lower()
    return ""


def _sip_row(fi: int, frame: int, what: str, message: sip.SipMessage) -> dict[str, object]:
    sdp = message.sdp
    return {
        "frame": frame, "flow_index": fi, "message": what, "call_id": message.call_id or "",
        "from_uri": message.from_uri or "", "to_uri": message.to_uri or "",
        "user_agent": message.user_agent or message.server or "",
        "sdp_media": " ".join(f"{m.media}/{m.port}/{m.proto}" for m in sdp.media) if sdp else "",
        "sdes_keys": bool(sdp and sdp.crypto),
    }
