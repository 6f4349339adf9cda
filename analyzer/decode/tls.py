"""TLS handshake messages, shared by TLS over TCP, DTLS (dtls.py) and QUIC (quic.py).

Sans-IO. The hello parsers take a handshake message *body* (after the 4-byte TLS or 12-byte
DTLS handshake header) and return frozen records; `TlsStreamReader` turns one direction of a
TCP stream into handshake messages until encryption starts.

RFC 8446 §4 (TLS 1.3 messages and extensions), RFC 5246 §6.2 and §7.4 (records, TLS 1.2
messages), RFC 6347 §4.2 (DTLS cookie), RFC 6066 §3 (server_name), RFC 7301 (ALPN),
RFC 5764 §4.1.1 (use_srtp), RFC 9001 §8.2 (quic_transport_parameters), RFC 8701 (GREASE),
draft-ietf-tls-esni (encrypted_client_hello 0xfe0d).
"""

from __future__ import annotations

import functools
import hashlib
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, NoReturn, TypeVar

from analyzer import speedups
from analyzer.decode.tls_registry import is_grease
from analyzer.errors import DecodeError

if TYPE_CHECKING:  # imported with the first certificate: runs without one skip 25-30 ms
    from cryptography import x509

# Record header, RFC 5246 §6.2.1: content_type(1) version(2) length(2).
RECORD_HEADER = struct.Struct("!BHH")
MAX_RECORD_LENGTH = 2**14 + 2048  # TLSCiphertext bound, RFC 5246 §6.2.3
CERTIFICATE_CACHE = 1024  # distinct certificates whose summaries are kept (a few MB at most)
# Handshake header, RFC 8446 §4: msg_type(1) length(3).
HANDSHAKE_HEADER_LEN = 4

CONTENT_CHANGE_CIPHER_SPEC = 20
CONTENT_ALERT = 21
CONTENT_HANDSHAKE = 22
CONTENT_APPLICATION_DATA = 23
CONTENT_HEARTBEAT = 24
TLS_CONTENT_TYPES = frozenset({20, 21, 22, 23, 24})

# HandshakeType, RFC 8446 §4 and RFC 6347 §4.3.2.
HS_CLIENT_HELLO = 1
HS_SERVER_HELLO = 2
HS_HELLO_VERIFY_REQUEST = 3
HS_NEW_SESSION_TICKET = 4
HS_CERTIFICATE = 11
HS_SERVER_KEY_EXCHANGE = 12
HS_CERTIFICATE_REQUEST = 13
HS_SERVER_HELLO_DONE = 14
HS_CERTIFICATE_VERIFY = 15
HS_CLIENT_KEY_EXCHANGE = 16
HS_FINISHED = 20
HS_CERTIFICATE_STATUS = 22

# ExtensionType values decoded here (IANA TLS ExtensionType registry).
EXT_SERVER_NAME = 0
EXT_USE_SRTP = 14
EXT_ALPN = 16
EXT_SUPPORTED_VERSIONS = 43
EXT_QUIC_TRANSPORT_PARAMETERS = 57
EXT_QUIC_TRANSPORT_PARAMETERS_DRAFT = 0xFFA5  # drafts before RFC 9001 (Chrome used it too)
EXT_ENCRYPTED_CLIENT_HELLO = 0xFE0D

Extensions = tuple[tuple[int, bytes], ...]  # (type, data) in wire order
T = TypeVar("T")

SERVER_NAME_HOST = 0  # NameType host_name, RFC 6066 §3
RANDOM_LEN = 32
# RFC 8446 §4.1.3: a ServerHello whose random is SHA-256("HelloRetryRequest") is an HRR.
HELLO_RETRY_REQUEST_RANDOM = hashlib.sha256(b"HelloRetryRequest").digest()

VERSION_NAMES: dict[int, str] = {
    0x0200: "SSL 2.0",
    0x0300: "SSL 3.0",
    0x0301: "TLS 1.0",
    0x0302: "TLS 1.1",
    0x0303: "TLS 1.2",
    0x0304: "TLS 1.3",
    0x0100: "DTLS 1.0 (OpenSSL pre-RFC)",  # DTLS1_BAD_VER, seen in dtls_old_version.pcapng
    0xFEFF: "DTLS 1.0",
    0xFEFD: "DTLS 1.2",
    0xFEFC: "DTLS 1.3",
}
TLS13_DRAFT_PREFIX = 0x7F00  # 0x7Fxx: TLS 1.3 draft xx


def version_name(version: int) -> str:
    """'TLS 1.2', 'DTLS 1.0', 'TLS 1.3 draft-28', 'GREASE', or '0xXXXX'."""
    if version in VERSION_NAMES:
        return VERSION_NAMES[version]
    if version & 0xFF00 == TLS13_DRAFT_PREFIX:
        return f"TLS 1.3 draft-{version & 0xFF}"
    return "GREASE" if is_grease(version) else f"0x{version:04X}"


EXTENSION_HEADER = struct.Struct(">HH")  # type, length


class _Reader:
    """Bounds-checked cursor over a byte string; every short read raises DecodeError."""

    __slots__ = ("_data", "_pos", "_what")

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self._what = what

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def take(self, size: int) -> bytes:
        start = self._pos
        end = start + size
        if end > len(self._data):
            self._short(size)
        self._pos = end
        return self._data[start:end]

    def uint(self, size: int) -> int:
        start = self._pos
        end = start + size
        if end > len(self._data):
            self._short(size)
        self._pos = end
        return int.from_bytes(self._data[start:end], "big")

    def vector(self, length_size: int) -> bytes:
        """A TLS vector: a length of `length_size` bytes, then that many bytes."""
        return self.take(self.uint(length_size))

    def _short(self, size: int) -> NoReturn:
        raise DecodeError(f"{self._what}: needs {size} bytes at offset {self._pos}, "
                          f"{self.remaining} left")

    def expect_end(self) -> None:
        if self.remaining:
            raise DecodeError(f"{self._what}: {self.remaining} trailing bytes")


def _uint16_list(data: bytes, what: str) -> tuple[int, ...]:
    if len(data) % 2:
        raise DecodeError(f"{what}: odd length {len(data)}")
    return struct.unpack(f">{len(data) // 2}H", data)


GREASE = frozenset(0x0A0A + 0x1010 * i for i in range(16))  # RFC 8701: `is_grease`'s values


def _without_grease(values: tuple[int, ...]) -> tuple[int, ...]:
    if GREASE.isdisjoint(values):  # (most lists: one test in C, not one per value)
        return values
    return tuple(v for v in values if v not in GREASE)


@dataclass(frozen=True, slots=True)
class HandshakeMessage:
    msg_type: int
    body: bytes


@dataclass(frozen=True, slots=True)
class ClientHello:
    """A ClientHello. Decoded lists skip GREASE values; `extensions` is raw, in wire order.

    sni is the (outer) server name; with `ech` set, the real name is encrypted inside.
    """

    legacy_version: int
    random: bytes
    session_id: bytes
    cookie: bytes | None  # DTLS only
    cipher_suites: tuple[int, ...]
    compression_methods: bytes
    extensions: Extensions
    sni: str | None
    supported_versions: tuple[int, ...]
    alpn: tuple[str, ...]
    use_srtp_profiles: tuple[int, ...]
    use_srtp_mki: bytes
    quic_transport_parameters: bool
    ech: bool

    @property
    def extension_types(self) -> tuple[int, ...]:
        return tuple(ext_type for ext_type, _ in self.extensions)


@dataclass(frozen=True, slots=True)
class ServerHello:
    """A ServerHello; `version` is the negotiated one (supported_versions, else legacy)."""

    legacy_version: int
    random: bytes
    session_id: bytes
    cipher_suite: int
    compression_method: int
    extensions: Extensions
    version: int
    use_srtp_profile: int | None
    alpn: str | None
    is_hello_retry_request: bool


def _parse_extensions(reader: _Reader) -> Extensions:
    """Extensions block, if any (it is optional before TLS 1.2 and in SSL 3.0 hellos)."""
    if reader.remaining == 0:
        return ()
    data = reader.vector(2)
    reader.expect_end()
    extensions = []
    pos, end = 0, len(data)
    while pos + 4 <= end:  # (inline: a ClientHello has a dozen or more)
        ext_type, length = EXTENSION_HEADER.unpack_from(data, pos)
        pos += 4
        if pos + length > end:
            break
        extensions.append((ext_type, data[pos:pos + length]))
        pos += length
    if pos != end:  # malformed: the reader says where
        block = _Reader(data, "extensions")
        while block.remaining:
            block.uint(2), block.vector(2)
    return tuple(extensions)


def _first_of_each(extensions: Extensions) -> dict[int, bytes]:
    """Each extension type's first occurrence (a hello may repeat one: the first counts)."""
    first: dict[int, bytes] = {}
    for ext_type, data in extensions:
        first.setdefault(ext_type, data)
    return first


def _parse_server_name(data: bytes) -> str | None:
    # (the usual extension, one host name filling the list, read in place; anything else
    # through the readers, which say what is wrong)
    if len(data) > 5 and data[2] == SERVER_NAME_HOST:
        listed, named = int.from_bytes(data[:2], "big"), int.from_bytes(data[3:5], "big")
        if listed + 2 == len(data) == named + 5:
            return data[5:].decode("utf-8", errors="replace")
    return _read_server_name(data)


def _read_server_name(data: bytes) -> str | None:
    names = _Reader(_Reader(data, "server_name").vector(2), "server_name list")
    while names.remaining:
        name_type, name = names.uint(1), names.vector(2)
        if name_type == SERVER_NAME_HOST:
            return name.decode("utf-8", errors="replace")
    return None


def _parse_alpn(data: bytes) -> tuple[str, ...]:
    outer = _Reader(data, "alpn")
    names = _Reader(outer.vector(2), "alpn list")
    outer.expect_end()
    protocols = []
    while names.remaining:
        protocols.append(names.vector(1).decode("utf-8", errors="replace"))
    return tuple(protocols)


def _parse_use_srtp(data: bytes) -> tuple[tuple[int, ...], bytes]:
    """UseSRTPData, RFC 5764 §4.1.1: profiles<2..2^16-1>, srtp_mki<0..255>."""
    reader = _Reader(data, "use_srtp")
    profiles = _uint16_list(reader.vector(2), "use_srtp profiles")
    mki = reader.vector(1)
    reader.expect_end()
    return profiles, mki


def _parse_client_versions(data: bytes) -> tuple[int, ...]:
    if data and data[0] + 1 == len(data) and not data[0] % 2:  # (the usual: read in place)
        return _without_grease(struct.unpack(f">{data[0] // 2}H", data[1:]))
    return _read_client_versions(data)


def _read_client_versions(data: bytes) -> tuple[int, ...]:
    reader = _Reader(data, "supported_versions")
    versions = _uint16_list(reader.vector(1), "supported_versions")
    reader.expect_end()
    return _without_grease(versions)


def _decoded(first: dict[int, bytes], ext_type: int, parse: Callable[[bytes], T],
             default: T) -> T:
    """Parse the first extension of `ext_type` (`first`: `_first_of_each`) with `parse`, or
    give `default` if absent."""
    data = first.get(ext_type)
    return default if data is None else parse(data)


def parse_client_hello(body: bytes, dtls: bool = False) -> ClientHello:
    """ClientHello body, RFC 8446 §4.1.2 (DTLS adds a cookie after the session id)."""
    if speedups.native is not None:  # (the usual hellos: C reads them, or gives None)
        fields = speedups.native.client_hello(body, dtls)
        if fields is not None:
            return ClientHello(*fields)
    reader = _Reader(body, "ClientHello")
    legacy_version, random = reader.uint(2), reader.take(RANDOM_LEN)
    session_id = reader.vector(1)
    cookie = reader.vector(1) if dtls else None
    suites = _uint16_list(reader.vector(2), "cipher_suites")
    compression = reader.vector(1)
    extensions = _parse_extensions(reader)
    first = _first_of_each(extensions)
    no_srtp: tuple[tuple[int, ...], bytes] = ((), b"")
    srtp_profiles, srtp_mki = _decoded(first, EXT_USE_SRTP, _parse_use_srtp, no_srtp)
    return ClientHello(
        legacy_version, random, session_id, cookie, _without_grease(suites), compression,
        extensions,
        sni=_decoded(first, EXT_SERVER_NAME, _parse_server_name, None),
        supported_versions=_decoded(first, EXT_SUPPORTED_VERSIONS, _parse_client_versions, ()),
        alpn=_decoded(first, EXT_ALPN, _parse_alpn, ()),
        use_srtp_profiles=_without_grease(srtp_profiles),
        use_srtp_mki=srtp_mki,
        quic_transport_parameters=(EXT_QUIC_TRANSPORT_PARAMETERS in first
                                   or EXT_QUIC_TRANSPORT_PARAMETERS_DRAFT in first),
        ech=EXT_ENCRYPTED_CLIENT_HELLO in first,
    )


def _parse_selected_version(data: bytes) -> int:
    if len(data) != 2:
        raise DecodeError(f"ServerHello supported_versions: length {len(data)}, expected 2")
    return int.from_bytes(data, "big")


def _parse_selected_srtp(data: bytes) -> int | None:
    profiles, _ = _parse_use_srtp(data)
    if len(profiles) > 1:
        raise DecodeError(f"ServerHello use_srtp: {len(profiles)} profiles, expected one")
    return profiles[0] if profiles else None


def _parse_selected_alpn(data: bytes) -> str | None:
    protocols = _parse_alpn(data)
    return protocols[0] if protocols else None


def parse_server_hello(body: bytes, dtls: bool = False) -> ServerHello:
    """ServerHello body, RFC 8446 §4.1.3 (same layout in TLS 1.2 and DTLS; `dtls` is unused)."""
    reader = _Reader(body, "ServerHello")
    legacy_version, random = reader.uint(2), reader.take(RANDOM_LEN)
    session_id = reader.vector(1)
    cipher_suite, compression_method = reader.uint(2), reader.uint(1)
    extensions = _parse_extensions(reader)
    first = _first_of_each(extensions)
    return ServerHello(
        legacy_version, random, session_id, cipher_suite, compression_method, extensions,
        version=_decoded(first, EXT_SUPPORTED_VERSIONS, _parse_selected_version,
                         legacy_version),
        use_srtp_profile=_decoded(first, EXT_USE_SRTP, _parse_selected_srtp, None),
        alpn=_decoded(first, EXT_ALPN, _parse_selected_alpn, None),
        is_hello_retry_request=random == HELLO_RETRY_REQUEST_RANDOM,
    )


def parse_certificate_message(body: bytes, tls13: bool = False) -> tuple[bytes, ...]:
    """DER certificates of a Certificate message, leaf first.

    TLS 1.2 (RFC 5246 §7.4.2): certificate_list<0..2^24-1> of ASN.1Cert<1..2^24-1>.
    TLS 1.3 (RFC 8446 §4.4.2): certificate_request_context<0..255>, then CertificateEntry
    {cert_data<1..2^24-1>, extensions<0..2^16-1>} items.
    """
    reader = _Reader(body, "Certificate")
    if tls13:
        reader.vector(1)
    entries = _Reader(reader.vector(3), "certificate_list")
    reader.expect_end()
    certificates = []
    while entries.remaining:
        certificate = entries.vector(3)
        if not certificate:
            raise DecodeError("Certificate: empty certificate entry")
        certificates.append(certificate)
        if tls13:
            entries.vector(2)
    return tuple(certificates)


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """What a report needs from an X.509 certificate. Strings are hostile wire text."""

    subject_cn: str | None
    subject: str  # RFC 4514 string
    issuer: str
    san_dns: tuple[str, ...]
    not_before: datetime  # UTC
    not_after: datetime
    sha256_fingerprint: str  # "AB:CD:...", as in SDP a=fingerprint


def _common_name(name: x509.Name) -> str | None:
    from cryptography.x509.oid import NameOID

    attributes = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attributes:
        return None
    value = attributes[0].value
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def _san_dns_names(certificate: x509.Certificate) -> tuple[str, ...]:
    from cryptography import x509

    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    return tuple(san.value.get_values_for_type(x509.DNSName))


def _fingerprint(certificate: x509.Certificate) -> str:
    from cryptography.hazmat.primitives import hashes

    return certificate.fingerprint(hashes.SHA256()).hex(":").upper()


@functools.lru_cache(maxsize=CERTIFICATE_CACHE)
def certificate_summary(der: bytes) -> CertificateInfo:
    """Summary of one DER certificate; anything cryptography cannot read raises DecodeError.

    Cached by the DER bytes: a service's servers present the same certificates on every
    connection, and parsing one takes about 0.3 ms (181 parses, 9 distinct certificates, on
    the 2M-packet benchmark)."""
    from cryptography import x509
    from cryptography.utils import CryptographyDeprecationWarning

    try:
        with warnings.catch_warnings():  # e.g. negative serial numbers, common on real CAs
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            return _summarize(x509.load_der_x509_certificate(der))
    # cryptography raises ValueError, but also other types for some hostile DER
    # (DuplicateExtension, UnsupportedGeneralNameType, ...): all mean "not a usable certificate".
    except Exception as error:
        raise DecodeError(f"certificate: {error}") from error


def _summarize(certificate: x509.Certificate) -> CertificateInfo:
    return CertificateInfo(
        subject_cn=_common_name(certificate.subject),
        subject=certificate.subject.rfc4514_string(),
        issuer=certificate.issuer.rfc4514_string(),
        san_dns=_san_dns_names(certificate),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        sha256_fingerprint=_fingerprint(certificate),
    )


def looks_like_tls_record(data: bytes) -> bool:
    """Does `data` start with a plausible SSL 3.0 - TLS 1.3 record header? Never raises."""
    if len(data) < RECORD_HEADER.size:
        return False
    content_type, version, length = RECORD_HEADER.unpack_from(data)
    return (content_type in TLS_CONTENT_TYPES and version >> 8 == 3 and version & 0xFF <= 4
            and 0 < length <= MAX_RECORD_LENGTH)


class TlsStreamReader:
    """Handshake messages of one TCP direction, up to the start of encryption.

    Feed the stream's bytes in order, in any chunking. Records split across segments, several
    records per segment and handshake messages split across records are handled. Collection
    stops at the first ChangeCipherSpec or application_data record (`encrypted_seen`), at
    bytes that are not a TLS record (`not_tls`), or when more than MAX_BUFFER bytes would be
    buffered (`overflowed`).
    """

    MAX_BUFFER = 64 * 1024
    # (one per TLS direction of a capture's flows, which may be hundreds of thousands)
    __slots__ = (
        "_handshake",
        "_record_versions",
        "_records",
        "encrypted_seen",
        "first_alert",
        "not_tls",
        "overflowed",
    )

    def __init__(self) -> None:
        self._records = bytearray()
        self._handshake = bytearray()
        self._record_versions: tuple[int, ...] = ()
        self.encrypted_seen = False
        self.overflowed = False
        self.not_tls = False
        self.first_alert: tuple[int, int] | None = None  # (level, description), if plaintext

    @property
    def record_versions(self) -> tuple[int, ...]:
        """Distinct record-layer versions, in order of appearance."""
        return self._record_versions

    @property
    def alert_seen(self) -> bool:
        return self.first_alert is not None

    @property
    def stopped(self) -> bool:
        return self.encrypted_seen or self.overflowed or self.not_tls

    def feed(self, data: bytes) -> list[HandshakeMessage]:
        if self.stopped:
            return []
        self._records += data
        messages: list[HandshakeMessage] = []
        while not self.stopped:
            record = self._next_record()
            if record is None:
                break
            messages.extend(self._on_record(*record))
        self._check_bounds()
        return messages

    def _next_record(self) -> tuple[int, bytes] | None:
        if len(self._records) < RECORD_HEADER.size:
            return None
        if not looks_like_tls_record(bytes(self._records[:RECORD_HEADER.size])):
            self.not_tls = True
            return None
        content_type, version, length = RECORD_HEADER.unpack_from(self._records)
        end = RECORD_HEADER.size + length
        if len(self._records) < end:
            return None
        fragment = bytes(self._records[RECORD_HEADER.size:end])
        del self._records[:end]
        if version not in self._record_versions:
            self._record_versions = (*self._record_versions, version)
        return content_type, fragment

    def _on_record(self, content_type: int, fragment: bytes) -> list[HandshakeMessage]:
        if content_type in (CONTENT_CHANGE_CIPHER_SPEC, CONTENT_APPLICATION_DATA):
            self.encrypted_seen = True
        elif content_type == CONTENT_ALERT and len(fragment) == 2 and self.first_alert is None:
            self.first_alert = (fragment[0], fragment[1])
        elif content_type == CONTENT_HANDSHAKE:
            self._handshake += fragment
            return self._complete_messages()
        return []

    def _complete_messages(self) -> list[HandshakeMessage]:
        messages = []
        while len(self._handshake) >= HANDSHAKE_HEADER_LEN:
            length = int.from_bytes(self._handshake[1:4], "big")
            end = HANDSHAKE_HEADER_LEN + length
            if len(self._handshake) < end:
                break
            messages.append(HandshakeMessage(self._handshake[0],
                                             bytes(self._handshake[HANDSHAKE_HEADER_LEN:end])))
            del self._handshake[:end]
        return messages

    def _check_bounds(self) -> None:
        pending = len(self._records) + len(self._handshake)
        next_message = (int.from_bytes(self._handshake[1:4], "big")
                        if len(self._handshake) >= HANDSHAKE_HEADER_LEN else 0)
        if pending > self.MAX_BUFFER or next_message > self.MAX_BUFFER:
            self.overflowed = True
        if self.stopped:
            self._records.clear()
            self._handshake.clear()
