"""Control-plane messages, built one by one (they are rare): STUN/ICE/TURN (RFC 8489, 8445,
8656), DTLS 1.2 with use_srtp (RFC 6347, 5764), TLS 1.2/1.3 over TCP (RFC 5246, 8446), and SIP
with SDP (RFC 3261, 4566). Everything is byte-exact enough for tshark to dissect it cleanly; the
'encrypted' parts are random bytes.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import struct
import zlib
from collections.abc import Callable, Sequence
from functools import cache
from ipaddress import IPv6Address

from bench.wire import IPAddress

RandomBytes = Callable[[int], bytes]

# --- STUN ----------------------------------------------------------------------------------

STUN_COOKIE = 0x2112A442
STUN_HEADER = struct.Struct(">HHI12s")  # type, length, magic cookie, transaction id
BINDING_REQUEST, BINDING_SUCCESS = 0x0001, 0x0101
ALLOCATE_REQUEST, ALLOCATE_SUCCESS = 0x0003, 0x0103
CHANNEL_BIND_REQUEST, CHANNEL_BIND_SUCCESS = 0x0009, 0x0109

ATTR_USERNAME, ATTR_MESSAGE_INTEGRITY, ATTR_CHANNEL_NUMBER, ATTR_LIFETIME = 0x06, 0x08, 0x0C, 0x0D
ATTR_XOR_PEER_ADDRESS, ATTR_XOR_RELAYED_ADDRESS, ATTR_REQUESTED_TRANSPORT = 0x12, 0x16, 0x19
ATTR_XOR_MAPPED_ADDRESS, ATTR_PRIORITY, ATTR_USE_CANDIDATE = 0x20, 0x24, 0x25
ATTR_SOFTWARE, ATTR_FINGERPRINT, ATTR_ICE_CONTROLLED, ATTR_ICE_CONTROLLING = (
    0x8022, 0x8028, 0x8029, 0x802A,
)
FINGERPRINT_XOR = 0x5354554E
ADDRESS_FAMILY_V4, ADDRESS_FAMILY_V6 = 0x01, 0x02
IPPROTO_UDP_TRANSPORT = bytes([17, 0, 0, 0])

StunAttr = tuple[int, bytes]


def stun_attr(attr_type: int, value: bytes) -> bytes:
    return struct.pack(">HH", attr_type, len(value)) + value + b"\0" * (-len(value) % 4)


def stun_message(
    msg_type: int, txid: bytes, attrs: Sequence[StunAttr], key: bytes | None = None
) -> bytes:
    """STUN message; MESSAGE-INTEGRITY (HMAC-SHA1 under `key`) and FINGERPRINT appended."""
    body = b"".join(stun_attr(t, v) for t, v in attrs)
    if key is not None:
        head = STUN_HEADER.pack(msg_type, len(body) + 24, STUN_COOKIE, txid)
        body += stun_attr(ATTR_MESSAGE_INTEGRITY, hmac.new(key, head + body, "sha1").digest())
    head = STUN_HEADER.pack(msg_type, len(body) + 8, STUN_COOKIE, txid)
    crc = zlib.crc32(head + body) ^ FINGERPRINT_XOR
    return head + body + stun_attr(ATTR_FINGERPRINT, struct.pack(">I", crc))


def xor_address(ip: IPAddress, port: int, txid: bytes) -> bytes:
    """XOR-MAPPED-ADDRESS style value (RFC 8489 §14.2)."""
    cookie = struct.pack(">I", STUN_COOKIE)
    family = ADDRESS_FAMILY_V6 if isinstance(ip, IPv6Address) else ADDRESS_FAMILY_V4
    mask = cookie + txid if family == ADDRESS_FAMILY_V6 else cookie
    xored = bytes(a ^ b for a, b in zip(ip.packed, mask, strict=False))
    return struct.pack(">BBH", 0, family, port ^ (STUN_COOKIE >> 16)) + xored


def ice_check(
    txid: bytes, username: str, key: bytes, priority: int, tie_breaker: int, controlling: bool
) -> bytes:
    """ICE connectivity/consent check: a Binding request with the ICE attributes."""
    role = ATTR_ICE_CONTROLLING if controlling else ATTR_ICE_CONTROLLED
    attrs = [
        (ATTR_USERNAME, username.encode()),
        (ATTR_PRIORITY, struct.pack(">I", priority)),
        (role, struct.pack(">Q", tie_breaker)),
    ]
    if controlling:
        attrs.append((ATTR_USE_CANDIDATE, b""))
    return stun_message(BINDING_REQUEST, txid, attrs, key)


def binding_success(txid: bytes, ip: IPAddress, port: int, key: bytes | None) -> bytes:
    attrs = [(ATTR_XOR_MAPPED_ADDRESS, xor_address(ip, port, txid))]
    return stun_message(BINDING_SUCCESS, txid, attrs, key)


def allocate_request(txid: bytes) -> bytes:
    attrs = [(ATTR_REQUESTED_TRANSPORT, IPPROTO_UDP_TRANSPORT), (ATTR_SOFTWARE, b"bench 1.0")]
    return stun_message(ALLOCATE_REQUEST, txid, attrs)


def allocate_success(
    txid: bytes, relayed: tuple[IPAddress, int], mapped: tuple[IPAddress, int]
) -> bytes:
    attrs = [
        (ATTR_XOR_RELAYED_ADDRESS, xor_address(*relayed, txid)),
        (ATTR_XOR_MAPPED_ADDRESS, xor_address(*mapped, txid)),
        (ATTR_LIFETIME, struct.pack(">I", 600)),
    ]
    return stun_message(ALLOCATE_SUCCESS, txid, attrs)


def channel_bind_request(txid: bytes, channel: int, peer: tuple[IPAddress, int]) -> bytes:
    attrs = [
        (ATTR_CHANNEL_NUMBER, struct.pack(">HH", channel, 0)),
        (ATTR_XOR_PEER_ADDRESS, xor_address(*peer, txid)),
    ]
    return stun_message(CHANNEL_BIND_REQUEST, txid, attrs)


def channel_bind_success(txid: bytes) -> bytes:
    return stun_message(CHANNEL_BIND_SUCCESS, txid, [])


# --- TLS and DTLS --------------------------------------------------------------------------

TLS_1_0, TLS_1_2, TLS_1_3, DTLS_1_2 = 0x0301, 0x0303, 0x0304, 0xFEFD
CT_CHANGE_CIPHER_SPEC, CT_HANDSHAKE, CT_APPLICATION_DATA = 20, 22, 23
HS_CLIENT_HELLO, HS_SERVER_HELLO, HS_CERTIFICATE, HS_SERVER_KEY_EXCHANGE = 1, 2, 11, 12
HS_CERTIFICATE_REQUEST, HS_SERVER_HELLO_DONE, HS_CERTIFICATE_VERIFY = 13, 14, 15
HS_CLIENT_KEY_EXCHANGE = 16

EXT_SERVER_NAME, EXT_SUPPORTED_GROUPS, EXT_EC_POINT_FORMATS = 0, 10, 11
EXT_SIGNATURE_ALGORITHMS, EXT_USE_SRTP, EXT_ALPN = 13, 14, 16
EXT_EXTENDED_MASTER_SECRET, EXT_SESSION_TICKET, EXT_SUPPORTED_VERSIONS = 23, 35, 43
EXT_PSK_MODES, EXT_KEY_SHARE, EXT_RENEGOTIATION_INFO = 45, 51, 0xFF01

X25519, SECP256R1, SECP384R1 = 0x001D, 0x0017, 0x0018
ED25519_SIG, ECDSA_P256_SHA256, RSA_PSS_SHA256 = 0x0807, 0x0403, 0x0804
SRTP_AES128_CM_SHA1_80, SRTP_AES128_CM_SHA1_32 = 0x0001, 0x0002
SRTP_AEAD_AES_128_GCM, SRTP_AEAD_AES_256_GCM = 0x0007, 0x0008
CLIENT_SRTP_PROFILES = (SRTP_AEAD_AES_128_GCM, SRTP_AEAD_AES_256_GCM, SRTP_AES128_CM_SHA1_80)

TLS13_SUITES = (0x1301, 0x1302, 0x1303)
ECDHE_SUITES = (0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0xC013, 0xC014)
TLS12_SERVER_SUITE, DTLS_SERVER_SUITE = 0xC02F, 0xC02B
GCM_FINISHED_LENGTH = 40  # explicit nonce 8 + verify_data 12 + header 4 + tag 16


def u16_list(values: Sequence[int]) -> bytes:
    return struct.pack(f">H{len(values)}H", 2 * len(values), *values)


def vec8(data: bytes) -> bytes:
    return bytes([len(data)]) + data


def vec16(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def vec24(data: bytes) -> bytes:
    return len(data).to_bytes(3, "big") + data


def extension(ext_type: int, data: bytes) -> bytes:
    return struct.pack(">H", ext_type) + vec16(data)


def tls_record(content_type: int, body: bytes, version: int = TLS_1_2) -> bytes:
    return struct.pack(">BHH", content_type, version, len(body)) + body


def tls_handshake(msg_type: int, body: bytes) -> bytes:
    return bytes([msg_type]) + vec24(body)


def dtls_record(content_type: int, epoch: int, seq: int, body: bytes) -> bytes:
    head = struct.pack(">BHH", content_type, DTLS_1_2, epoch) + seq.to_bytes(6, "big")
    return head + vec16(body)


def dtls_handshake(msg_type: int, message_seq: int, body: bytes) -> bytes:
    """Unfragmented DTLS handshake message (fragment offset 0, fragment length = length)."""
    length = len(body).to_bytes(3, "big")
    return bytes([msg_type]) + length + struct.pack(">H", message_seq) + b"\0\0\0" + length + body


def server_name(host: str) -> bytes:
    name = host.encode()
    return extension(EXT_SERVER_NAME, vec16(b"\0" + vec16(name)))


def alpn(protocols: Sequence[str]) -> bytes:
    return extension(EXT_ALPN, vec16(b"".join(vec8(p.encode()) for p in protocols)))


def use_srtp(profiles: Sequence[int]) -> bytes:
    return extension(EXT_USE_SRTP, u16_list(profiles) + b"\0")  # empty MKI


def common_client_extensions() -> bytes:
    return b"".join([
        extension(EXT_EXTENDED_MASTER_SECRET, b""),
        extension(EXT_RENEGOTIATION_INFO, b"\0"),
        extension(EXT_SUPPORTED_GROUPS, u16_list([X25519, SECP256R1, SECP384R1])),
        extension(EXT_EC_POINT_FORMATS, vec8(b"\0")),
        extension(EXT_SESSION_TICKET, b""),
        extension(EXT_SIGNATURE_ALGORITHMS,
                  u16_list([ECDSA_P256_SHA256, RSA_PSS_SHA256, ED25519_SIG])),
    ])


def tls_client_hello(sni: str, rand: RandomBytes) -> bytes:
    """TLS 1.3-capable ClientHello record (as browsers send it) with SNI and ALPN."""
    exts = server_name(sni) + common_client_extensions() + b"".join([
        alpn(["h2", "http/1.1"]),
        extension(EXT_KEY_SHARE, vec16(struct.pack(">H", X25519) + vec16(rand(32)))),
        extension(EXT_PSK_MODES, vec8(b"\x01")),
        extension(EXT_SUPPORTED_VERSIONS, vec8(struct.pack(">HH", TLS_1_3, TLS_1_2))),
    ])
    suites = u16_list(TLS13_SUITES + ECDHE_SUITES)
    body = struct.pack(">H", TLS_1_2) + rand(32) + vec8(rand(32)) + suites + vec8(b"\0")
    hello = tls_handshake(HS_CLIENT_HELLO, body + vec16(exts))
    return tls_record(CT_HANDSHAKE, hello, TLS_1_0)


def server_hello_body(session_id: bytes, suite: int, exts: bytes, rand: RandomBytes,
                      version: int = TLS_1_2) -> bytes:
    return struct.pack(">H", version) + rand(32) + vec8(session_id) + struct.pack(
        ">HB", suite, 0
    ) + vec16(exts)


def tls13_server_flight(session_id: bytes, encrypted_len: int, rand: RandomBytes) -> bytes:
    """ServerHello + ChangeCipherSpec + the encrypted rest of the server's first flight."""
    exts = extension(EXT_SUPPORTED_VERSIONS, struct.pack(">H", TLS_1_3)) + extension(
        EXT_KEY_SHARE, struct.pack(">H", X25519) + vec16(rand(32))
    )
    hello = tls_handshake(HS_SERVER_HELLO, server_hello_body(session_id, 0x1301, exts, rand))
    return b"".join([
        tls_record(CT_HANDSHAKE, hello),
        tls_record(CT_CHANGE_CIPHER_SPEC, b"\x01"),
        tls_record(CT_APPLICATION_DATA, rand(encrypted_len)),
    ])


def certificate_message(der: bytes) -> bytes:
    return vec24(vec24(der))


def ecdhe_params(rand: RandomBytes) -> bytes:
    """ServerKeyExchange body: named curve x25519, public key, Ed25519 signature."""
    return b"\x03" + struct.pack(">H", X25519) + vec8(rand(32)) + struct.pack(
        ">H", ED25519_SIG
    ) + vec16(rand(64))


def tls12_server_flight(session_id: bytes, sni: str, rand: RandomBytes) -> bytes:
    """ServerHello, Certificate (CN = sni), ServerKeyExchange, ServerHelloDone in one record."""
    exts = extension(EXT_RENEGOTIATION_INFO, b"\0") + extension(
        EXT_EC_POINT_FORMATS, vec8(b"\0")
    ) + extension(EXT_EXTENDED_MASTER_SECRET, b"") + alpn(["h2"])
    messages = b"".join([
        tls_handshake(HS_SERVER_HELLO,
                      server_hello_body(session_id, TLS12_SERVER_SUITE, exts, rand)),
        tls_handshake(HS_CERTIFICATE, certificate_message(self_signed_certificate(sni))),
        tls_handshake(HS_SERVER_KEY_EXCHANGE, ecdhe_params(rand)),
        tls_handshake(HS_SERVER_HELLO_DONE, b""),
    ])
    return tls_record(CT_HANDSHAKE, messages)


def tls12_client_finish(rand: RandomBytes) -> bytes:
    """ClientKeyExchange, ChangeCipherSpec, encrypted Finished."""
    cke = tls_handshake(HS_CLIENT_KEY_EXCHANGE, vec8(rand(32)))
    return tls_record(CT_HANDSHAKE, cke) + change_cipher_and_finished(rand)


def change_cipher_and_finished(rand: RandomBytes) -> bytes:
    return tls_record(CT_CHANGE_CIPHER_SPEC, b"\x01") + tls_record(
        CT_HANDSHAKE, rand(GCM_FINISHED_LENGTH)
    )


def application_data(length: int, rand: RandomBytes) -> bytes:
    return tls_record(CT_APPLICATION_DATA, rand(length))


def dtls_client_hello(rand: RandomBytes) -> bytes:
    """DTLS 1.2 ClientHello (record epoch 0, seq 0) offering SRTP profiles, as browsers do."""
    exts = common_client_extensions() + use_srtp(CLIENT_SRTP_PROFILES)
    body = struct.pack(">H", DTLS_1_2) + rand(32) + vec8(b"") + vec8(b"")  # session id, cookie
    body += u16_list(ECDHE_SUITES) + vec8(b"\0") + vec16(exts)
    return dtls_record(CT_HANDSHAKE, 0, 0, dtls_handshake(HS_CLIENT_HELLO, 0, body))


def dtls_server_flight(profile: int, rand: RandomBytes) -> bytes:
    """ServerHello (use_srtp = `profile`), Certificate, ServerKeyExchange, CertificateRequest,
    ServerHelloDone, one record each, in one datagram."""
    exts = extension(EXT_EXTENDED_MASTER_SECRET, b"") + extension(
        EXT_RENEGOTIATION_INFO, b"\0"
    ) + extension(EXT_EC_POINT_FORMATS, vec8(b"\0")) + use_srtp([profile])
    cert_request = vec8(b"\x40") + u16_list([ED25519_SIG, ECDSA_P256_SHA256]) + vec16(b"")
    messages = [
        (HS_SERVER_HELLO, server_hello_body(rand(32), DTLS_SERVER_SUITE, exts, rand, DTLS_1_2)),
        (HS_CERTIFICATE, certificate_message(self_signed_certificate("WebRTC"))),
        (HS_SERVER_KEY_EXCHANGE, ecdhe_params(rand)),
        (HS_CERTIFICATE_REQUEST, cert_request),
        (HS_SERVER_HELLO_DONE, b""),
    ]
    return b"".join(
        dtls_record(CT_HANDSHAKE, 0, i, dtls_handshake(t, i, body))
        for i, (t, body) in enumerate(messages)
    )


def dtls_client_finish(rand: RandomBytes) -> bytes:
    """Certificate, ClientKeyExchange, CertificateVerify, ChangeCipherSpec, Finished."""
    messages = [
        (HS_CERTIFICATE, certificate_message(self_signed_certificate("WebRTC"))),
        (HS_CLIENT_KEY_EXCHANGE, vec8(rand(32))),
        (HS_CERTIFICATE_VERIFY, struct.pack(">H", ED25519_SIG) + vec16(rand(64))),
    ]
    records = [
        dtls_record(CT_HANDSHAKE, 0, i, dtls_handshake(t, i, body))
        for i, (t, body) in enumerate(messages, start=1)
    ]
    return b"".join(records) + dtls_change_cipher_and_finished(4, rand)


def dtls_change_cipher_and_finished(ccs_seq: int, rand: RandomBytes) -> bytes:
    ccs = dtls_record(CT_CHANGE_CIPHER_SPEC, 0, ccs_seq, b"\x01")
    return ccs + dtls_record(CT_HANDSHAKE, 1, 0, rand(GCM_FINISHED_LENGTH + 8))


@cache
def self_signed_certificate(common_name: str) -> bytes:
    """DER of a deterministic self-signed Ed25519 certificate for `common_name`."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(common_name.encode()).digest())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    builder = x509.CertificateBuilder().subject_name(name).issuer_name(name)
    builder = builder.public_key(key.public_key()).serial_number(
        int.from_bytes(hashlib.sha1(common_name.encode()).digest()[:8], "big")
    )
    builder = builder.not_valid_before(start).not_valid_after(start + datetime.timedelta(365))
    if common_name != "WebRTC":
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False
        )
    return builder.sign(key, None).public_bytes(Encoding.DER)


# --- SIP -----------------------------------------------------------------------------------

SIP_PORT = 5060


def sdp_offer(session_id: int, ip: IPAddress, audio_port: int, video_port: int | None) -> str:
    family = "IP6" if isinstance(ip, IPv6Address) else "IP4"
    lines = [
        "v=0", f"o=- {session_id} 1 IN {family} {ip}", "s=call", f"c=IN {family} {ip}", "t=0 0",
        f"m=audio {audio_port} RTP/AVP 0 8 101", "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000", "a=ptime:20", "a=sendrecv",
    ]
    if video_port is not None:
        lines += [f"m=video {video_port} RTP/AVP 98", "a=rtpmap:98 H264/90000", "a=sendrecv"]
    return "\r\n".join(lines) + "\r\n"


def sip_message(start_line: str, headers: Sequence[tuple[str, str]], body: str = "") -> bytes:
    """A SIP request or response with Content-Length (and Content-Type for a body)."""
    fields = list(headers)
    if body:
        fields.append(("Content-Type", "application/sdp"))
    fields.append(("Content-Length", str(len(body.encode()))))
    text = start_line + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields) + "\r\n" + body
    return text.encode()
