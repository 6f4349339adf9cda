"""QUIC long headers and client Initial decryption: RFC 9000 §17, RFC 9001 §5, RFC 9369.

Sans-IO. Initial packets are encrypted with keys anyone can derive from the version's public
salt and the client's Destination Connection ID (RFC 9001 §5.2), so the ClientHello, its SNI,
ALPN and ECH flag can be read from a capture. `decrypt_client_initial` handles one datagram
(coalesced packets included); `QuicInitialAssembler` collects a ClientHello that spans several
Initial packets (post-quantum key shares make it bigger than one datagram).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from analyzer.decode.tls import HS_CLIENT_HELLO, ClientHello, parse_client_hello
from analyzer.errors import DecodeError

# `cryptography` is imported where the keys are derived and used: a run without a QUIC Initial
# or a certificate (analyzer/decode/tls.py) skips its 30-40 ms of start-up.

# Long header, RFC 9000 §17.2:
#   first byte: form(1)=1 fixed(1)=1 type(2) type-specific(4) | version(4)
#   dcid_len(1) dcid(0..20) | scid_len(1) scid(0..20) | type-specific fields
LONG_HEADER_BIT = 0x80
FIXED_BIT = 0x40
TYPE_SHIFT, TYPE_MASK = 4, 0x03
PN_LENGTH_MASK = 0x03
MIN_LONG_HEADER = 7  # first byte, version, two CID lengths
MAX_CID_LENGTH = 20  # RFC 9000 §17.2 for versions 1 and 2
VERSION_NEGOTIATION = 0x00000000
RETRY_TAG_LEN = 16

VERSION_1 = 0x00000001
VERSION_2 = 0x6B3343CF  # RFC 9369 §3.1
DRAFT_29, DRAFT_32, DRAFT_34 = 0xFF00001D, 0xFF000020, 0xFF000022


@dataclass(frozen=True, slots=True)
class _VersionRules:
    """What differs between QUIC versions for Initial protection and header types."""

    name: str
    initial_salt: bytes
    label_prefix: str  # HKDF labels "<prefix>key", "<prefix>iv", "<prefix>hp"
    packet_types: tuple[str, str, str, str]  # by the 2 type bits


_V1_TYPES = ("initial", "0-rtt", "handshake", "retry")  # RFC 9000 §17.2
_V2_TYPES = ("retry", "initial", "0-rtt", "handshake")  # RFC 9369 §3.2
_SALT_V1 = bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a")  # RFC 9001 §5.2
_SALT_V2 = bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9")  # RFC 9369 §3.3.1
# draft-ietf-quic-tls-29 §5.2; drafts 30-32 kept it, drafts 33-34 moved to the RFC 9001 salt.
_SALT_DRAFT_29 = bytes.fromhex("afbfec289993d24c9e9786f19c6111e04390a899")

VERSIONS: dict[int, _VersionRules] = {
    VERSION_1: _VersionRules("QUIC v1", _SALT_V1, "quic ", _V1_TYPES),
    VERSION_2: _VersionRules("QUIC v2", _SALT_V2, "quicv2 ", _V2_TYPES),
    **{v: _VersionRules(f"draft-{v & 0xFF}", _SALT_DRAFT_29 if v <= DRAFT_32 else _SALT_V1,
                        "quic ", _V1_TYPES)
       for v in range(DRAFT_29, DRAFT_34 + 1)},
}

# Initial packet protection, RFC 9001 §5: AEAD_AES_128_GCM with AES-ECB header protection.
INITIAL_KEY_LEN, INITIAL_IV_LEN, INITIAL_HP_LEN = 16, 12, 16
HP_SAMPLE_OFFSET, HP_SAMPLE_LEN = 4, 16  # sample starts 4 bytes after the packet number start

# Frame types that may appear in Initial packets, RFC 9000 §12.4 and §19.
FRAME_PADDING, FRAME_PING, FRAME_ACK, FRAME_ACK_ECN = 0x00, 0x01, 0x02, 0x03
FRAME_CRYPTO = 0x06
FRAME_CONNECTION_CLOSE, FRAME_CONNECTION_CLOSE_APP = 0x1C, 0x1D
MAX_CRYPTO_STREAM = 64 * 1024  # bound on reassembled CRYPTO bytes per connection


def version_name(version: int) -> str:
    if version == VERSION_NEGOTIATION:
        return "version negotiation"
    rules = VERSIONS.get(version)
    return rules.name if rules else f"0x{version:08x}"


class _Cursor:
    """Bounds-checked reader with QUIC variable-length integers (RFC 9000 §16)."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, size: int) -> bytes:
        if size > self.remaining:
            raise DecodeError(f"QUIC: needs {size} bytes at offset {self.pos}, "
                              f"{self.remaining} left")
        chunk = self.data[self.pos:self.pos + size]
        self.pos += size
        return chunk

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def varint(self) -> int:
        if not self.remaining:
            raise DecodeError(f"QUIC: varint missing at offset {self.pos}")
        size = 1 << (self.data[self.pos] >> 6)
        value = self.uint(size)
        return value & ((1 << (8 * size - 2)) - 1)


@dataclass(frozen=True, slots=True)
class QuicLongHeader:
    """A long-header packet's header; offsets are into the datagram it was parsed from.

    For Initial, 0-RTT and Handshake packets `length` counts the packet number and payload
    that start at `pn_offset`, and the packet ends at `packet_end` (coalesced packets may
    follow). Version negotiation packets list `supported_versions`; packets of unknown
    versions carry only the version-independent fields (RFC 8999).
    """

    first_byte: int
    version: int
    packet_type: str  # initial, 0-rtt, handshake, retry, version_negotiation, unknown
    dcid: bytes
    scid: bytes
    token: bytes = b""
    length: int | None = None
    pn_offset: int | None = None
    packet_start: int = 0
    packet_end: int = 0
    supported_versions: tuple[int, ...] = ()


def looks_like_quic_long_header(data: bytes) -> bool:
    """Cheap check: long-header bit, fixed bit (except version negotiation), CIDs that fit."""
    if len(data) < MIN_LONG_HEADER or not data[0] & LONG_HEADER_BIT:
        return False
    version = int.from_bytes(data[1:5], "big")
    if version != VERSION_NEGOTIATION and not data[0] & FIXED_BIT:
        return False
    dcid_len = data[5]
    scid_at = 6 + dcid_len
    if scid_at >= len(data) or scid_at + 1 + data[scid_at] > len(data):
        return False
    return version not in VERSIONS or max(dcid_len, data[scid_at]) <= MAX_CID_LENGTH


def parse_long_header(data: bytes, offset: int = 0) -> QuicLongHeader:
    """The long header of the packet that starts at `offset` in a datagram."""
    cursor = _Cursor(data, offset)
    first_byte, version = cursor.uint(1), cursor.uint(4)
    if not first_byte & LONG_HEADER_BIT:
        raise DecodeError("QUIC: short header packet")
    dcid, scid = cursor.take(cursor.uint(1)), cursor.take(cursor.uint(1))
    rules = VERSIONS.get(version)
    if rules and max(len(dcid), len(scid)) > MAX_CID_LENGTH:
        raise DecodeError(f"QUIC: connection id longer than {MAX_CID_LENGTH} bytes")
    if version == VERSION_NEGOTIATION:
        return _version_negotiation(first_byte, dcid, scid, cursor, offset)
    if rules is None:
        return QuicLongHeader(first_byte, version, "unknown", dcid, scid,
                              packet_start=offset, packet_end=len(data))
    packet_type = rules.packet_types[(first_byte >> TYPE_SHIFT) & TYPE_MASK]
    if packet_type == "retry":
        return _retry(first_byte, version, dcid, scid, cursor, offset)
    token = cursor.take(cursor.varint()) if packet_type == "initial" else b""
    length = cursor.varint()
    if length > cursor.remaining:
        raise DecodeError(f"QUIC: packet length {length} runs past the datagram")
    return QuicLongHeader(first_byte, version, packet_type, dcid, scid, token, length,
                          pn_offset=cursor.pos, packet_start=offset,
                          packet_end=cursor.pos + length)


def _version_negotiation(first_byte: int, dcid: bytes, scid: bytes, cursor: _Cursor,
                         offset: int) -> QuicLongHeader:
    rest = cursor.take(cursor.remaining)
    if len(rest) % 4:
        raise DecodeError("QUIC: version negotiation list is not a multiple of 4 bytes")
    versions = tuple(int.from_bytes(rest[i:i + 4], "big") for i in range(0, len(rest), 4))
    return QuicLongHeader(first_byte, VERSION_NEGOTIATION, "version_negotiation", dcid, scid,
                          packet_start=offset, packet_end=len(cursor.data),
                          supported_versions=versions)


def _retry(first_byte: int, version: int, dcid: bytes, scid: bytes, cursor: _Cursor,
           offset: int) -> QuicLongHeader:
    if cursor.remaining < RETRY_TAG_LEN:
        raise DecodeError("QUIC: Retry packet shorter than its integrity tag")
    token = cursor.take(cursor.remaining - RETRY_TAG_LEN)
    return QuicLongHeader(first_byte, version, "retry", dcid, scid, token,
                          packet_start=offset, packet_end=len(cursor.data))


def hkdf_expand_label(secret: bytes, label: str, length: int, context: bytes = b"") -> bytes:
    """HKDF-Expand-Label with SHA-256, RFC 8446 §7.1."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

    full_label = b"tls13 " + label.encode("ascii")
    info = (length.to_bytes(2, "big") + bytes([len(full_label)]) + full_label
            + bytes([len(context)]) + context)
    return HKDFExpand(hashes.SHA256(), length, info).derive(secret)


@dataclass(frozen=True, slots=True)
class InitialKeys:
    key: bytes
    iv: bytes
    hp: bytes


def initial_keys(version: int, client_dcid: bytes, sender: str = "client") -> InitialKeys:
    """Initial packet protection keys, RFC 9001 §5.2 (RFC 9369 §3.3 salt and labels for v2).

    sender: 'client' or 'server'; both derive from the client's first Destination CID.
    """
    rules = VERSIONS.get(version)
    if rules is None:
        raise DecodeError(f"QUIC: no Initial salt known for version 0x{version:08x}")
    initial_secret = hmac.digest(rules.initial_salt, client_dcid, "sha256")  # HKDF-Extract
    secret = hkdf_expand_label(initial_secret, f"{sender} in", 32)
    prefix = rules.label_prefix
    return InitialKeys(hkdf_expand_label(secret, prefix + "key", INITIAL_KEY_LEN),
                       hkdf_expand_label(secret, prefix + "iv", INITIAL_IV_LEN),
                       hkdf_expand_label(secret, prefix + "hp", INITIAL_HP_LEN))


def _header_protection_mask(hp_key: bytes, sample: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    encryptor = Cipher(algorithms.AES(hp_key), modes.ECB()).encryptor()
    return encryptor.update(sample) + encryptor.finalize()


def _xor(data: bytes, mask: bytes) -> bytes:
    return bytes(b ^ m for b, m in zip(data, mask, strict=True))


@dataclass(frozen=True, slots=True)
class UnprotectedPacket:
    header: QuicLongHeader
    first_byte: int  # with header protection removed
    packet_number: int  # truncated packet number as sent (Initial numbers start at 0)
    payload: bytes  # decrypted frames


def unprotect_packet(data: bytes, header: QuicLongHeader, keys: InitialKeys) -> UnprotectedPacket:
    """Remove header protection (RFC 9001 §5.4) and decrypt the payload (§5.3)."""
    if header.pn_offset is None:
        raise DecodeError(f"QUIC: {header.packet_type} packet has no protected payload")
    pn_offset, end = header.pn_offset, header.packet_end
    sample_at = pn_offset + HP_SAMPLE_OFFSET
    if sample_at + HP_SAMPLE_LEN > end:
        raise DecodeError("QUIC: packet too short for a header protection sample")
    mask = _header_protection_mask(keys.hp, data[sample_at:sample_at + HP_SAMPLE_LEN])
    first_byte = header.first_byte ^ (mask[0] & 0x0F)  # long header: 4 low bits protected
    pn_len = (first_byte & PN_LENGTH_MASK) + 1
    pn_bytes = _xor(data[pn_offset:pn_offset + pn_len], mask[1:1 + pn_len])
    aad = bytes([first_byte]) + data[header.packet_start + 1:pn_offset] + pn_bytes
    packet_number = int.from_bytes(pn_bytes, "big")
    nonce = (int.from_bytes(keys.iv, "big") ^ packet_number).to_bytes(INITIAL_IV_LEN, "big")
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        payload = AESGCM(keys.key).decrypt(nonce, data[pn_offset + pn_len:end], aad)
    except InvalidTag as error:
        raise DecodeError("QUIC: payload does not authenticate with these keys") from error
    return UnprotectedPacket(header, first_byte, packet_number, payload)


Chunks = tuple[tuple[int, bytes], ...]  # CRYPTO frame (offset, data) pairs


def _skip_ack(cursor: _Cursor, frame_type: int) -> None:
    """ACK frame, RFC 9000 §19.3: largest, delay, range count, first range, ranges, ECN."""
    cursor.varint()
    cursor.varint()
    range_count = cursor.varint()
    cursor.varint()
    if range_count > cursor.remaining:
        raise DecodeError(f"QUIC: ACK claims {range_count} ranges")
    for _ in range(2 * range_count + (3 if frame_type == FRAME_ACK_ECN else 0)):
        cursor.varint()


def _skip_connection_close(cursor: _Cursor, frame_type: int) -> None:
    """CONNECTION_CLOSE, RFC 9000 §19.19: error code, [frame type], reason phrase."""
    cursor.varint()
    if frame_type == FRAME_CONNECTION_CLOSE:
        cursor.varint()
    cursor.take(cursor.varint())


def _skip_padding(cursor: _Cursor, frame_type: int) -> None:
    rest = cursor.data[cursor.pos:]
    cursor.pos += len(rest) - len(rest.lstrip(b"\0"))


def _skip_nothing(cursor: _Cursor, frame_type: int) -> None:
    return None


_FRAME_SKIPPERS = {
    FRAME_PADDING: _skip_padding,
    FRAME_PING: _skip_nothing,
    FRAME_ACK: _skip_ack,
    FRAME_ACK_ECN: _skip_ack,
    FRAME_CONNECTION_CLOSE: _skip_connection_close,
    FRAME_CONNECTION_CLOSE_APP: _skip_connection_close,
}


def parse_initial_frames(payload: bytes) -> Chunks:
    """CRYPTO frames of a decrypted Initial payload, in packet order; other frames allowed in
    Initial packets are skipped, any other frame type raises DecodeError (RFC 9000 §12.4)."""
    cursor = _Cursor(payload)
    chunks = []
    while cursor.remaining:
        frame_type = cursor.varint()
        if frame_type == FRAME_CRYPTO:
            offset, length = cursor.varint(), cursor.varint()
            chunks.append((offset, cursor.take(length)))
        elif frame_type in _FRAME_SKIPPERS:
            _FRAME_SKIPPERS[frame_type](cursor, frame_type)
        else:
            raise DecodeError(f"QUIC: frame type 0x{frame_type:x} not allowed in Initial")
    return tuple(chunks)


def contiguous_crypto(chunks: Chunks) -> bytes:
    """The CRYPTO stream bytes available without a gap from offset 0."""
    stream = bytearray()
    for offset, data in sorted(chunks):
        if offset > len(stream):
            break
        stream += data[len(stream) - offset:]
    return bytes(stream)


def _client_hello_from_stream(stream: bytes) -> ClientHello | None:
    """The ClientHello at the start of a client's CRYPTO stream, once it is complete."""
    if not stream:
        return None
    if stream[0] != HS_CLIENT_HELLO:
        raise DecodeError(f"QUIC: client CRYPTO stream starts with handshake type {stream[0]}")
    if len(stream) < 4:
        return None
    end = 4 + int.from_bytes(stream[1:4], "big")
    return parse_client_hello(stream[4:end]) if len(stream) >= end else None


@dataclass(frozen=True, slots=True)
class QuicInitial:
    """A decrypted client Initial. crypto_frames: the CRYPTO stream from offset 0 as far as
    this packet (or the assembler) has it without a gap; client_hello once it is complete."""

    version: int
    dcid: bytes
    scid: bytes
    packet_number: int
    crypto_frames: bytes
    crypto_chunks: Chunks
    client_hello: ClientHello | None


def _first_initial(data: bytes) -> QuicLongHeader:
    """The first Initial packet among the coalesced packets of a datagram (RFC 9000 §12.2)."""
    offset = 0
    while offset < len(data) and data[offset] & LONG_HEADER_BIT:
        header = parse_long_header(data, offset)
        if header.packet_type == "initial":
            return header
        if header.pn_offset is None:
            break
        offset = header.packet_end
    raise DecodeError("QUIC: no Initial packet in datagram")


def _open_client_initial(data: bytes) -> tuple[QuicLongHeader, int, Chunks]:
    header = _first_initial(data)
    packet = unprotect_packet(data, header, initial_keys(header.version, header.dcid))
    return header, packet.packet_number, parse_initial_frames(packet.payload)


def _initial(header: QuicLongHeader, packet_number: int, chunks: Chunks) -> QuicInitial:
    stream = contiguous_crypto(chunks)
    return QuicInitial(header.version, header.dcid, header.scid, packet_number, stream, chunks,
                       _client_hello_from_stream(stream))


def decrypt_client_initial(data: bytes) -> QuicInitial:
    """Decrypt the first client Initial packet of a UDP datagram and read its CRYPTO data.

    Keys come from the packet's own DCID, which is right for every client Initial sent before
    the client has seen the server's first packet. Server Initials, other versions and
    corrupted packets raise DecodeError.
    """
    return _initial(*_open_client_initial(data))


@dataclass(slots=True)
class _PendingHello:
    header: QuicLongHeader
    chunks: list[tuple[int, bytes]] = field(default_factory=list)
    size: int = 0


class QuicInitialAssembler:
    """Collects ClientHellos that span several client Initial packets, keyed by (version, DCID).

    feed() takes every datagram a client sends (others are counted in `undecryptable`) and
    returns the QuicInitial that completes a ClientHello, once per connection. Bounded: at
    most MAX_PENDING connections in progress (oldest dropped) and MAX_CRYPTO_STREAM bytes each.
    """

    MAX_PENDING = 1024
    MAX_DONE = 4096

    def __init__(self) -> None:
        self._pending: dict[tuple[int, bytes], _PendingHello] = {}
        self._done: dict[tuple[int, bytes], None] = {}  # insertion-ordered set
        self.undecryptable = 0
        self.malformed = 0
        self.overflowed = False

    def feed(self, datagram: bytes) -> QuicInitial | None:
        try:
            header, packet_number, chunks = _open_client_initial(datagram)
        except DecodeError:
            self.undecryptable += 1
            return None
        key = (header.version, header.dcid)
        if key in self._done:
            return None
        pending = self._pending_for(key, header)
        self._store(pending, chunks)
        return self._try_complete(key, pending, packet_number)

    def _pending_for(self, key: tuple[int, bytes], header: QuicLongHeader) -> _PendingHello:
        if key not in self._pending and len(self._pending) >= self.MAX_PENDING:
            del self._pending[next(iter(self._pending))]
            self.overflowed = True
        return self._pending.setdefault(key, _PendingHello(header))

    def _store(self, pending: _PendingHello, chunks: Chunks) -> None:
        for offset, data in chunks:
            if offset + len(data) > MAX_CRYPTO_STREAM or pending.size > MAX_CRYPTO_STREAM:
                self.overflowed = True
                continue
            pending.chunks.append((offset, data))
            pending.size += len(data)

    def _try_complete(self, key: tuple[int, bytes], pending: _PendingHello,
                      packet_number: int) -> QuicInitial | None:
        try:
            initial = _initial(pending.header, packet_number, tuple(pending.chunks))
        except DecodeError:
            self.malformed += 1
            initial = None
        if initial is not None and initial.client_hello is None:
            return None
        self._finish(key)
        return initial

    def _finish(self, key: tuple[int, bytes]) -> None:
        self._pending.pop(key, None)
        self._done[key] = None
        if len(self._done) > self.MAX_DONE:
            del self._done[next(iter(self._done))]
