"""TLS 1.0-1.3 and DTLS 1.0/1.2 handshake messages and records (RFC 5246, 8446, 6347, 5764).

Hello messages, certificates and ServerKeyExchange signatures are real (the signature covers the
two randoms and the ECDHE parameters with the server's key). Everything after ChangeCipherSpec is
opaque: random bytes with the sizes an AES-GCM record would have.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519

from captures.certs import PrivateKey, sign

TLS_1_0 = 0x0301
TLS_1_2 = 0x0303
TLS_1_3 = 0x0304
DTLS_1_0 = 0xFEFF
DTLS_1_2 = 0xFEFD
MAX_RECORD = 16384
GCM_EXPLICIT_NONCE = 8
GCM_TAG = 16


class ContentType(IntEnum):
    CHANGE_CIPHER_SPEC = 20
    ALERT = 21
    HANDSHAKE = 22
    APPLICATION_DATA = 23


class HandshakeType(IntEnum):
    CLIENT_HELLO = 1
    SERVER_HELLO = 2
    HELLO_VERIFY_REQUEST = 3
    NEW_SESSION_TICKET = 4
    CERTIFICATE = 11
    SERVER_KEY_EXCHANGE = 12
    CERTIFICATE_REQUEST = 13
    SERVER_HELLO_DONE = 14
    CERTIFICATE_VERIFY = 15
    CLIENT_KEY_EXCHANGE = 16
    FINISHED = 20


class Ext(IntEnum):
    SERVER_NAME = 0
    SUPPORTED_GROUPS = 10
    EC_POINT_FORMATS = 11
    SIGNATURE_ALGORITHMS = 13
    USE_SRTP = 14
    ALPN = 16
    EXTENDED_MASTER_SECRET = 23
    SESSION_TICKET = 35
    SUPPORTED_VERSIONS = 43
    PSK_KEY_EXCHANGE_MODES = 45
    KEY_SHARE = 51
    QUIC_TRANSPORT_PARAMETERS = 57
    RENEGOTIATION_INFO = 0xFF01


class Group(IntEnum):
    SECP256R1 = 23
    X25519 = 29


class SrtpProfile(IntEnum):
    """IANA "DTLS-SRTP Protection Profiles" (RFC 5764, RFC 7714)."""

    AES128_CM_HMAC_SHA1_80 = 0x0001
    AES128_CM_HMAC_SHA1_32 = 0x0002
    NULL_HMAC_SHA1_80 = 0x0005
    NULL_HMAC_SHA1_32 = 0x0006
    AEAD_AES_128_GCM = 0x0007
    AEAD_AES_256_GCM = 0x0008


# Cipher suites (IANA TLS Cipher Suites registry)
TLS_AES_128_GCM_SHA256 = 0x1301
TLS_AES_256_GCM_SHA384 = 0x1302
TLS_CHACHA20_POLY1305_SHA256 = 0x1303
ECDHE_ECDSA_AES_128_GCM_SHA256 = 0xC02B
ECDHE_RSA_AES_128_GCM_SHA256 = 0xC02F
ECDHE_ECDSA_AES_256_GCM_SHA384 = 0xC02C
ECDHE_RSA_AES_256_GCM_SHA384 = 0xC030
ECDHE_RSA_AES_128_CBC_SHA = 0xC013
RSA_AES_128_CBC_SHA = 0x002F
RSA_RC4_128_SHA = 0x0005
RSA_3DES_EDE_CBC_SHA = 0x000A

SIG_RSA_PKCS1_SHA256 = 0x0401
SIG_ECDSA_SECP256R1_SHA256 = 0x0403
SIG_RSA_PSS_RSAE_SHA256 = 0x0804
DEFAULT_SIG_ALGS = (SIG_ECDSA_SECP256R1_SHA256, SIG_RSA_PSS_RSAE_SHA256, SIG_RSA_PKCS1_SHA256,
                    0x0503, 0x0805, 0x0501, 0x0806, 0x0601)
CURVE_TYPE_NAMED = 3
CLIENT_CERT_TYPES = (1, 64)  # rsa_sign, ecdsa_sign


def u8(n: int) -> bytes:
    return struct.pack("!B", n)


def u16(n: int) -> bytes:
    return struct.pack("!H", n)


def u24(n: int) -> bytes:
    return struct.pack("!I", n)[1:]


def vec8(data: bytes) -> bytes:
    return u8(len(data)) + data


def vec16(data: bytes) -> bytes:
    return u16(len(data)) + data


def vec24(data: bytes) -> bytes:
    return u24(len(data)) + data


def extension(ext_type: int, data: bytes) -> bytes:
    return u16(ext_type) + vec16(data)


# --- extensions -----------------------------------------------------------------------------


def ext_server_name(host: str) -> bytes:
    """RFC 6066 server_name with one host_name entry."""
    entry = u8(0) + vec16(host.encode())
    return extension(Ext.SERVER_NAME, vec16(entry))


def ext_alpn(protocols: Sequence[str]) -> bytes:
    names = b"".join(vec8(p.encode()) for p in protocols)
    return extension(Ext.ALPN, vec16(names))


def ext_supported_groups(groups: Sequence[int]) -> bytes:
    return extension(Ext.SUPPORTED_GROUPS, vec16(b"".join(u16(g) for g in groups)))


def ext_ec_point_formats() -> bytes:
    return extension(Ext.EC_POINT_FORMATS, vec8(b"\x00"))


def ext_signature_algorithms(algs: Sequence[int] = DEFAULT_SIG_ALGS) -> bytes:
    return extension(Ext.SIGNATURE_ALGORITHMS, vec16(b"".join(u16(a) for a in algs)))


def ext_use_srtp(profiles: Sequence[int], mki: bytes = b"") -> bytes:
    """RFC 5764 section 4.1.1: profile list, then the MKI."""
    return extension(Ext.USE_SRTP, vec16(b"".join(u16(p) for p in profiles)) + vec8(mki))


def ext_extended_master_secret() -> bytes:
    return extension(Ext.EXTENDED_MASTER_SECRET, b"")


def ext_renegotiation_info() -> bytes:
    return extension(Ext.RENEGOTIATION_INFO, vec8(b""))


def ext_session_ticket() -> bytes:
    return extension(Ext.SESSION_TICKET, b"")


def ext_supported_versions_client(versions: Sequence[int]) -> bytes:
    return extension(Ext.SUPPORTED_VERSIONS, vec8(b"".join(u16(v) for v in versions)))


def ext_supported_versions_server(version: int) -> bytes:
    return extension(Ext.SUPPORTED_VERSIONS, u16(version))


def ext_psk_key_exchange_modes() -> bytes:
    return extension(Ext.PSK_KEY_EXCHANGE_MODES, vec8(b"\x01"))


def ext_key_share_client(group: int, public: bytes) -> bytes:
    return extension(Ext.KEY_SHARE, vec16(u16(group) + vec16(public)))


def ext_key_share_server(group: int, public: bytes) -> bytes:
    return extension(Ext.KEY_SHARE, u16(group) + vec16(public))


# --- handshake bodies -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientHello:
    version: int
    random: bytes
    cipher_suites: Sequence[int]
    extensions: Sequence[bytes]
    session_id: bytes = b""
    cookie: bytes | None = None  # DTLS only

    def body(self) -> bytes:
        out = u16(self.version) + self.random + vec8(self.session_id)
        if self.cookie is not None:
            out += vec8(self.cookie)
        out += vec16(b"".join(u16(s) for s in self.cipher_suites)) + vec8(b"\x00")
        return out + vec16(b"".join(self.extensions)) if self.extensions else out


def server_hello_body(version: int, server_random: bytes, session_id: bytes, suite: int,
                      extensions: Sequence[bytes]) -> bytes:
    out = u16(version) + server_random + vec8(session_id) + u16(suite) + u8(0)
    return out + vec16(b"".join(extensions)) if extensions else out


def certificate_body(chain: Sequence[bytes]) -> bytes:
    return vec24(b"".join(vec24(der) for der in chain))


def certificate_request_body() -> bytes:
    types = vec8(bytes(CLIENT_CERT_TYPES))
    algs = vec16(b"".join(u16(a) for a in (SIG_ECDSA_SECP256R1_SHA256, SIG_RSA_PKCS1_SHA256)))
    return types + algs + vec16(b"")


@dataclass(frozen=True, slots=True)
class EcdheShare:
    """An ephemeral key pair derived from a seed, with its public value as sent on the wire."""

    group: int
    public: bytes

    @staticmethod
    def make(group: int, rng: random.Random) -> EcdheShare:
        secret = rng.getrandbits(256).to_bytes(32, "big")
        if group == Group.X25519:
            pub = x25519.X25519PrivateKey.from_private_bytes(secret).public_key()
            return EcdheShare(group, pub.public_bytes_raw())
        key = ec.derive_private_key(int.from_bytes(secret, "big") % (2**255), ec.SECP256R1())
        raw = key.public_key().public_bytes(serialization.Encoding.X962,
                                            serialization.PublicFormat.UncompressedPoint)
        return EcdheShare(group, raw)


def server_key_exchange_body(share: EcdheShare, client_random: bytes, server_random: bytes,
                             key: PrivateKey, with_sig_alg: bool = True) -> bytes:
    """ECDHE params signed over client_random + server_random + params (RFC 4492 / 5246)."""
    params = u8(CURVE_TYPE_NAMED) + u16(share.group) + vec8(share.public)
    signature = sign(key, client_random + server_random + params)
    alg = SIG_ECDSA_SECP256R1_SHA256 if isinstance(key, ec.EllipticCurvePrivateKey) else (
        SIG_RSA_PKCS1_SHA256)
    return params + (u16(alg) if with_sig_alg else b"") + vec16(signature)


def client_key_exchange_body(share: EcdheShare) -> bytes:
    return vec8(share.public)


# --- TLS framing ----------------------------------------------------------------------------


def tls_handshake(msg_type: int, body: bytes) -> bytes:
    return u8(msg_type) + vec24(body)


def tls_records(content_type: int, version: int, payload: bytes) -> bytes:
    """One or more TLS records carrying payload (split at the 16 KiB record limit)."""
    chunks = [payload[i : i + MAX_RECORD] for i in range(0, len(payload), MAX_RECORD)] or [b""]
    return b"".join(u8(content_type) + u16(version) + vec16(c) for c in chunks)


TLS12_GCM_OVERHEAD = GCM_EXPLICIT_NONCE + GCM_TAG
TLS13_OVERHEAD = GCM_TAG + 1  # tag plus the inner content type byte
RC4_SHA_OVERHEAD = 20  # HMAC-SHA1, no padding


def opaque_record(version: int, plaintext_len: int, rng: random.Random, overhead: int,
                  content_type: int = ContentType.APPLICATION_DATA) -> bytes:
    """A record whose body has the size of the ciphertext of plaintext_len bytes."""
    return tls_records(content_type, version, rng.randbytes(plaintext_len + overhead))


# --- DTLS framing ---------------------------------------------------------------------------

DTLS_HANDSHAKE_HEADER = 12


@dataclass
class DtlsSide:
    """One side's DTLS state: record sequence per epoch and handshake message_seq."""

    version: int
    epoch: int = 0
    record_seq: dict[int, int] = field(default_factory=dict)
    message_seq: int = 0

    def record(self, content_type: int, payload: bytes) -> bytes:
        seq = self.record_seq.get(self.epoch, 0)
        self.record_seq[self.epoch] = seq + 1
        head = u8(content_type) + u16(self.version) + u16(self.epoch) + seq.to_bytes(6, "big")
        return head + vec16(payload)

    def handshake(self, msg_type: int, body: bytes, max_fragment: int = 1100) -> list[bytes]:
        """Records carrying one handshake message, fragmented when the body is large."""
        records = []
        offsets = range(0, max(len(body), 1), max_fragment)
        for offset in offsets:
            piece = body[offset : offset + max_fragment]
            head = (u8(msg_type) + u24(len(body)) + u16(self.message_seq) + u24(offset)
                    + u24(len(piece)))
            records.append(self.record(ContentType.HANDSHAKE, head + piece))
        self.message_seq += 1
        return records

    def change_cipher_spec(self) -> bytes:
        rec = self.record(ContentType.CHANGE_CIPHER_SPEC, b"\x01")
        self.epoch += 1
        return rec

    def encrypted(self, content_type: int, plaintext_len: int, rng: random.Random) -> bytes:
        """An epoch-1 record with AES-GCM sizes (8-byte explicit nonce, 16-byte tag)."""
        body = rng.randbytes(GCM_EXPLICIT_NONCE + plaintext_len + GCM_TAG)
        return self.record(content_type, body)


def pack_datagrams(records: Sequence[bytes], mtu: int = 1200) -> list[bytes]:
    """Put consecutive records into datagrams no larger than mtu (one record may exceed it)."""
    datagrams: list[bytes] = []
    current = b""
    for rec in records:
        if current and len(current) + len(rec) > mtu:
            datagrams.append(current)
            current = b""
        current += rec
    return [*datagrams, current] if current else datagrams
