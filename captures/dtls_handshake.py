"""A full DTLS handshake (RFC 6347 + RFC 5764 use_srtp) over a UDP flow, client side captured."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from captures import tlswire
from captures.certs import PrivateKey, sign
from captures.netsim import UdpFlow
from captures.tlswire import ContentType, DtlsSide, HandshakeType

DTLS = frozenset({"dtls"})
CHROME_DTLS_SUITES = (tlswire.ECDHE_ECDSA_AES_128_GCM_SHA256, tlswire.ECDHE_RSA_AES_128_GCM_SHA256,
                      tlswire.ECDHE_ECDSA_AES_256_GCM_SHA384, tlswire.ECDHE_RSA_AES_256_GCM_SHA384,
                      0xCCA9, 0xCCA8, 0xC009, 0xC013, 0xC00A, 0xC014)


@dataclass(frozen=True, slots=True)
class DtlsPeer:
    cert: bytes
    key: PrivateKey


@dataclass(frozen=True, slots=True)
class DtlsPlan:
    client: DtlsPeer
    server: DtlsPeer
    offered_profiles: Sequence[int]
    chosen_profile: int
    suites: Sequence[int]
    chosen_suite: int
    version: int = tlswire.DTLS_1_2
    cert_fragment: int = 520


def _client_hello(plan: DtlsPlan, side: DtlsSide, random_bytes: bytes) -> list[bytes]:
    exts = [tlswire.ext_extended_master_secret(), tlswire.ext_renegotiation_info(),
            tlswire.ext_supported_groups([tlswire.Group.X25519, tlswire.Group.SECP256R1]),
            tlswire.ext_ec_point_formats(), tlswire.ext_use_srtp(plan.offered_profiles),
            tlswire.ext_signature_algorithms()]
    hello = tlswire.ClientHello(plan.version, random_bytes, plan.suites, exts, cookie=b"")
    return side.handshake(HandshakeType.CLIENT_HELLO, hello.body())


def _server_flight(plan: DtlsPlan, side: DtlsSide, client_random: bytes, server_random: bytes,
                   share: tlswire.EcdheShare) -> list[bytes]:
    exts = [tlswire.ext_extended_master_secret(), tlswire.ext_renegotiation_info(),
            tlswire.ext_use_srtp([plan.chosen_profile])]
    hello = tlswire.server_hello_body(plan.version, server_random, b"", plan.chosen_suite, exts)
    records = side.handshake(HandshakeType.SERVER_HELLO, hello)
    records += side.handshake(HandshakeType.CERTIFICATE,
                              tlswire.certificate_body([plan.server.cert]), plan.cert_fragment)
    if plan.chosen_suite >> 8 == 0xC0:
        ske = tlswire.server_key_exchange_body(share, client_random, server_random,
                                               plan.server.key,
                                               with_sig_alg=plan.version == tlswire.DTLS_1_2)
        records += side.handshake(HandshakeType.SERVER_KEY_EXCHANGE, ske)
    records += side.handshake(HandshakeType.CERTIFICATE_REQUEST,
                              tlswire.certificate_request_body())
    return records + side.handshake(HandshakeType.SERVER_HELLO_DONE, b"")


def _client_finish(plan: DtlsPlan, side: DtlsSide, share: tlswire.EcdheShare,
                   transcript: bytes, flow: UdpFlow) -> list[bytes]:
    chain = tlswire.certificate_body([plan.client.cert])
    records = side.handshake(HandshakeType.CERTIFICATE, chain)
    if plan.chosen_suite >> 8 == 0xC0:
        cke = tlswire.client_key_exchange_body(share)
    else:
        cke = tlswire.vec16(flow.cap.rng.randbytes(256))  # RSA-encrypted premaster secret
    records += side.handshake(HandshakeType.CLIENT_KEY_EXCHANGE, cke)
    signature = sign(plan.client.key, transcript)
    verify = tlswire.u16(tlswire.SIG_ECDSA_SECP256R1_SHA256) if plan.version == tlswire.DTLS_1_2 \
        else b""
    records += side.handshake(HandshakeType.CERTIFICATE_VERIFY, verify + tlswire.vec16(signature))
    records.append(side.change_cipher_spec())
    return [*records, side.encrypted(ContentType.HANDSHAKE, 24, flow.cap.rng)]


def _send(flow: UdpFlow, t: int, c2s: bool, records: list[bytes], tag: str) -> int:
    for i, datagram in enumerate(tlswire.pack_datagrams(records)):
        flow.send(t + i * 25, c2s, datagram, DTLS, tags=frozenset({tag}))
    return t


@dataclass(frozen=True, slots=True)
class DtlsResult:
    done_us: int  # when the server's Finished reaches the capture point
    client: DtlsSide
    server: DtlsSide


def send_application_data(flow: UdpFlow, result: DtlsResult, t: int, sizes: Sequence[int],
                          rtt_us: int) -> None:
    """Epoch-1 application_data records (e.g. SCTP for data channels), each answered."""
    rng = flow.cap.rng
    for i, size in enumerate(sizes):
        record = result.client.encrypted(ContentType.APPLICATION_DATA, size, rng)
        flow.send(t + i * 40_000, True, record, DTLS, tags=frozenset({"dtls-app-data"}))
        reply = result.server.encrypted(ContentType.APPLICATION_DATA, 28, rng)
        flow.send(t + i * 40_000 + rtt_us, False, reply, DTLS, tags=frozenset({"dtls-app-data"}))


def dtls_handshake(flow: UdpFlow, t: int, rtt_us: int, plan: DtlsPlan) -> DtlsResult:
    """Four flights, client side captured."""
    rng = flow.cap.rng
    client, server = DtlsSide(tlswire.DTLS_1_0), DtlsSide(plan.version)
    client_random, server_random = rng.randbytes(32), rng.randbytes(32)
    hello = _client_hello(plan, client, client_random)  # record version 1.0, as BoringSSL does
    client.version = plan.version
    _send(flow, t, True, hello, "dtls-client-hello")
    server_share = tlswire.EcdheShare.make(tlswire.Group.SECP256R1, rng)
    flight2 = _server_flight(plan, server, client_random, server_random, server_share)
    t = _send(flow, t + rtt_us + 1200, False, flight2, "dtls-server-hello")
    client_share = tlswire.EcdheShare.make(tlswire.Group.SECP256R1, rng)
    transcript = b"".join(hello + flight2)
    flight3 = _client_finish(plan, client, client_share, transcript, flow)
    t = _send(flow, t + 3500, True, flight3, "dtls-client-finish")
    flight4 = [server.change_cipher_spec(), server.encrypted(ContentType.HANDSHAKE, 24, rng)]
    done = _send(flow, t + rtt_us + 400, False, flight4, "dtls-server-finish")
    return DtlsResult(done, client, server)
