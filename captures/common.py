"""Building blocks shared by the sample scenarios: links, DNS lookups and TLS sessions."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from captures import certs, tlswire
from captures.netsim import ACK_DELAY_US, Capture, Endpoint, FlowSpec, Link, TcpConn, UdpFlow
from captures.pcapio import LINKTYPE_ETHERNET
from captures.tlswire import ContentType, HandshakeType, tls_handshake, tls_records
from captures.wire import DNS_TYPE_A, dns_answer, dns_query

TLS = frozenset({"tls"})
CERT_START = dt.datetime(2024, 3, 1)
SAMPLE_CA_NAME = "confscope Sample Issuing CA (test data)"


def seeded_rng(name: str) -> random.Random:
    return random.Random(hashlib.sha256(name.encode()).digest())


def new_capture(name: str) -> Capture:
    return Capture(name=name, rng=seeded_rng(name))


def lan_link(hosts: dict[str, str], gateway_mac: str, iface: int = 0,
             linktype: int = LINKTYPE_ETHERNET) -> Link:
    return Link(iface, linktype, hosts, gateway_mac)


@dataclass
class Dns:
    """The client's resolver and the answers handed out so far (for the manifest)."""

    cap: Capture
    link: Link
    client_ip: str
    resolver_ip: str
    rtt_us: int
    answers: dict[str, list[str]] = field(default_factory=dict)

    def lookup(self, time_us: int, name: str, records: Sequence[tuple[str, int, str, int]],
               qtype: int = DNS_TYPE_A, tag: str = "dns-answer", service: str = "other") -> int:
        """Query from a fresh source port, answer one resolver RTT later; returns its time.

        `service` is the service the looked-up name belongs to: a lookup of zoom.us is part of
        using Zoom (the reference classifier labels such flows DNS.Zoom too)."""
        port = self.cap.rng.randrange(32768, 61000)
        spec = FlowSpec("udp", Endpoint(self.client_ip, port), Endpoint(self.resolver_ip, 53),
                        service)  # the resolver has no name of its own here
        flow = UdpFlow(self.cap, self.link, spec)
        txid = self.cap.rng.getrandbits(16)
        flow.send(time_us, True, dns_query(txid, name, qtype), {"dns"})
        flow.send(time_us + self.rtt_us, False, dns_answer(txid, name, records, qtype), {"dns"},
                  tags=frozenset({tag}))
        addresses = [rdata for _, rtype, rdata, _ in records if rtype == qtype]
        self.answers.setdefault(name, []).extend(a for a in addresses if a not in
                                                 self.answers.get(name, []))
        return time_us + self.rtt_us


# --- keys and certificates --------------------------------------------------------------------


@functools.cache
def rsa_key(seed: str) -> certs.rsa.RSAPrivateKey:
    return certs.rsa_key(seed)


@functools.cache
def ec_key(seed: str) -> certs.ec.EllipticCurvePrivateKey:
    return certs.ec_key(seed)


@functools.cache
def sample_ca() -> tuple[bytes, certs.ec.EllipticCurvePrivateKey]:
    key = ec_key("sample-ca")
    spec = certs.CertSpec(SAMPLE_CA_NAME, "confscope test data", 1, dt.datetime(2023, 1, 1), 3650)
    return certs.make_cert(spec, key, is_ca=True), key


def web_chain(host: str, organization: str, key: certs.PrivateKey, serial: int,
              extra_names: Sequence[str] = ()) -> list[bytes]:
    """A leaf for host (plus SANs) issued by the sample CA, followed by the CA certificate."""
    ca_der, ca_key = sample_ca()
    issuer = certs.x509.load_der_x509_certificate(ca_der).subject
    spec = certs.CertSpec(host, organization, serial, CERT_START, 397, (host, *extra_names))
    return [certs.make_cert(spec, key, issuer, ca_key), ca_der]


# --- TLS over TCP -----------------------------------------------------------------------------

CHROME_SUITES = (tlswire.TLS_AES_128_GCM_SHA256, tlswire.TLS_AES_256_GCM_SHA384,
                 tlswire.TLS_CHACHA20_POLY1305_SHA256, tlswire.ECDHE_ECDSA_AES_128_GCM_SHA256,
                 tlswire.ECDHE_RSA_AES_128_GCM_SHA256, tlswire.ECDHE_ECDSA_AES_256_GCM_SHA384,
                 tlswire.ECDHE_RSA_AES_256_GCM_SHA384, tlswire.ECDHE_RSA_AES_128_CBC_SHA,
                 tlswire.RSA_AES_128_CBC_SHA)


@dataclass(frozen=True, slots=True)
class TlsServer:
    chain: list[bytes]
    key: certs.PrivateKey
    suite: int


def client_hello(rng: random.Random, sni: str | None, alpn: Sequence[str],
                 tls13: bool, suites: Sequence[int] = CHROME_SUITES,
                 version: int = tlswire.TLS_1_2) -> tuple[bytes, bytes]:
    """A browser-like ClientHello record; returns (record bytes, client random)."""
    random_bytes = rng.randbytes(32)
    exts = [tlswire.ext_server_name(sni)] if sni else []
    exts += [tlswire.ext_extended_master_secret(), tlswire.ext_renegotiation_info(),
             tlswire.ext_supported_groups([tlswire.Group.X25519, tlswire.Group.SECP256R1]),
             tlswire.ext_ec_point_formats(), tlswire.ext_session_ticket()]
    exts += [tlswire.ext_alpn(alpn)] if alpn else []
    exts.append(tlswire.ext_signature_algorithms())
    if tls13:
        share = tlswire.EcdheShare.make(tlswire.Group.X25519, rng)
        exts += [tlswire.ext_key_share_client(share.group, share.public),
                 tlswire.ext_psk_key_exchange_modes(),
                 tlswire.ext_supported_versions_client([tlswire.TLS_1_3, tlswire.TLS_1_2])]
    hello = tlswire.ClientHello(version, random_bytes, suites, exts,
                                session_id=rng.randbytes(32) if tls13 else b"")
    body = tls_handshake(HandshakeType.CLIENT_HELLO, hello.body())
    record_version = tlswire.TLS_1_0 if version >= tlswire.TLS_1_2 else version
    return tls_records(ContentType.HANDSHAKE, record_version, body), random_bytes


def tls12_server_flight(rng: random.Random, server: TlsServer, client_random: bytes,
                        alpn: str | None, version: int = tlswire.TLS_1_2) -> bytes:
    """ServerHello, Certificate, ServerKeyExchange (really signed), ServerHelloDone."""
    server_random = rng.randbytes(32)
    exts = [tlswire.ext_renegotiation_info(), tlswire.ext_ec_point_formats()]
    exts += [tlswire.ext_alpn([alpn])] if alpn else []
    hello = tlswire.server_hello_body(version, server_random, rng.randbytes(32), server.suite, exts)
    messages = tls_handshake(HandshakeType.SERVER_HELLO, hello)
    messages += tls_handshake(HandshakeType.CERTIFICATE, tlswire.certificate_body(server.chain))
    if _is_ecdhe(server.suite):
        share = tlswire.EcdheShare.make(tlswire.Group.SECP256R1, rng)
        ske = tlswire.server_key_exchange_body(share, client_random, server_random, server.key,
                                               with_sig_alg=version >= tlswire.TLS_1_2)
        messages += tls_handshake(HandshakeType.SERVER_KEY_EXCHANGE, ske)
    messages += tls_handshake(HandshakeType.SERVER_HELLO_DONE, b"")
    return tls_records(ContentType.HANDSHAKE, version, messages)


def _is_ecdhe(suite: int) -> bool:
    return suite >> 8 == 0xC0


def tls12_client_finish(rng: random.Random, version: int, ecdhe: bool, overhead: int) -> bytes:
    """ClientKeyExchange, ChangeCipherSpec and the encrypted Finished."""
    if ecdhe:
        share = tlswire.EcdheShare.make(tlswire.Group.SECP256R1, rng)
        cke = tlswire.client_key_exchange_body(share)
    else:
        cke = tlswire.vec16(rng.randbytes(256))  # RSA-encrypted premaster secret
    out = tls_records(ContentType.HANDSHAKE, version,
                      tls_handshake(HandshakeType.CLIENT_KEY_EXCHANGE, cke))
    out += tls_records(ContentType.CHANGE_CIPHER_SPEC, version, b"\x01")
    return out + tlswire.opaque_record(version, 16, rng, overhead, ContentType.HANDSHAKE)


def tls12_server_finish(rng: random.Random, version: int, overhead: int) -> bytes:
    out = tls_records(ContentType.HANDSHAKE, version, tls_handshake(
        HandshakeType.NEW_SESSION_TICKET, rng.randbytes(4) + tlswire.vec16(rng.randbytes(176))))
    out += tls_records(ContentType.CHANGE_CIPHER_SPEC, version, b"\x01")
    return out + tlswire.opaque_record(version, 16, rng, overhead, ContentType.HANDSHAKE)


@dataclass(frozen=True, slots=True)
class TlsPlan:
    sni: str | None
    alpn: Sequence[str]
    server: TlsServer
    exchanges: Sequence[tuple[int, int]] = ((420, 1800),)  # (request, response) plaintext sizes
    version: int = tlswire.TLS_1_2
    suites: Sequence[int] = CHROME_SUITES
    record_overhead: int = tlswire.TLS12_GCM_OVERHEAD


def tls12_session(conn: TcpConn, time_us: int, plan: TlsPlan) -> int:
    """TCP handshake, a full TLS 1.2 handshake, then request/response application data."""
    rng = conn.cap.rng
    t = conn.handshake(time_us)
    hello, client_random = client_hello(rng, plan.sni, plan.alpn, tls13=False, suites=plan.suites,
                                        version=plan.version)
    t = conn.send(t + 80, True, hello, TLS, tags=frozenset({"tls-client-hello"}))
    flight = tls12_server_flight(rng, plan.server, client_random,
                                 plan.alpn[0] if plan.alpn else None, plan.version)
    t = conn.send(t + conn.rtt_us + 900, False, flight, TLS,
                  tags=frozenset({"tls-server-hello"}))
    conn.ack(t + ACK_DELAY_US, True)
    finish = tls12_client_finish(rng, plan.version, _is_ecdhe(plan.server.suite),
                                 plan.record_overhead)
    t = conn.send(t + 2500, True, finish, TLS)
    server_finish = tls12_server_finish(rng, plan.version, plan.record_overhead)
    t = conn.send(t + conn.rtt_us + 200, False, server_finish, TLS)
    return _app_data(conn, t, plan, plan.version, plan.record_overhead)


def _app_data(conn: TcpConn, time_us: int, plan: TlsPlan, version: int, overhead: int) -> int:
    rng, t = conn.cap.rng, time_us
    for request, response in plan.exchanges:
        req = tlswire.opaque_record(version, request, rng, overhead)
        resp = tlswire.opaque_record(version, response, rng, overhead)
        t = conn.send(t + 1500, True, req, TLS)
        t = conn.send(t + conn.rtt_us + rng.randrange(2000, 15000), False, resp, TLS)
        t = conn.ack(t + ACK_DELAY_US, True)
    return t


def tls13_session(conn: TcpConn, time_us: int, plan: TlsPlan) -> int:
    """TCP handshake, TLS 1.3 ClientHello/ServerHello in clear, the rest as opaque records."""
    rng = conn.cap.rng
    t = conn.handshake(time_us)
    hello, _ = client_hello(rng, plan.sni, plan.alpn, tls13=True)
    t = conn.send(t + 80, True, hello, TLS, tags=frozenset({"tls-client-hello"}))
    share = tlswire.EcdheShare.make(tlswire.Group.X25519, rng)
    exts = [tlswire.ext_key_share_server(share.group, share.public),
            tlswire.ext_supported_versions_server(tlswire.TLS_1_3)]
    body = tlswire.server_hello_body(tlswire.TLS_1_2, rng.randbytes(32), rng.randbytes(32),
                                     plan.server.suite, exts)
    flight = tls_records(ContentType.HANDSHAKE, tlswire.TLS_1_2,
                         tls_handshake(HandshakeType.SERVER_HELLO, body))
    flight += tls_records(ContentType.CHANGE_CIPHER_SPEC, tlswire.TLS_1_2, b"\x01")
    cert_bytes = sum(len(c) for c in plan.server.chain) + 400
    flight += tlswire.opaque_record(tlswire.TLS_1_2, cert_bytes, rng, tlswire.TLS13_OVERHEAD)
    t = conn.send(t + conn.rtt_us + 700, False, flight, TLS, tags=frozenset({"tls-server-hello"}))
    conn.ack(t + ACK_DELAY_US, True)
    finish = tls_records(ContentType.CHANGE_CIPHER_SPEC, tlswire.TLS_1_2, b"\x01")
    finish += tlswire.opaque_record(tlswire.TLS_1_2, 36, rng, tlswire.TLS13_OVERHEAD)
    t = conn.send(t + 1800, True, finish, TLS)
    return _app_data(conn, t, plan, tlswire.TLS_1_2, tlswire.TLS13_OVERHEAD)
