"""QUIC version 1 Initial packets with real packet protection (RFC 9000, RFC 9001 section 5)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

QUIC_V1 = 0x00000001
INITIAL_SALT_V1 = bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a")
LONG_HEADER_FIXED = 0xC0
PACKET_TYPE_INITIAL = 0
PACKET_TYPE_HANDSHAKE = 2
FRAME_PADDING = 0x00
FRAME_ACK = 0x02
FRAME_CRYPTO = 0x06
MIN_CLIENT_DATAGRAM = 1200
HP_SAMPLE_OFFSET = 4
HP_SAMPLE_LEN = 16
AEAD_TAG = 16


def varint(value: int) -> bytes:
    """RFC 9000 section 16 variable-length integer (shortest form)."""
    if value < 1 << 6:
        return bytes([value])
    if value < 1 << 14:
        return struct.pack("!H", 0x4000 | value)
    if value < 1 << 30:
        return struct.pack("!I", 0x80000000 | value)
    return struct.pack("!Q", 0xC000000000000000 | value)


def _hmac_sha256(key: bytes, data: bytes) -> bytes:
    mac = hmac.HMAC(key, hashes.SHA256())
    mac.update(data)
    return mac.finalize()


def hkdf_expand_label(secret: bytes, label: str, length: int) -> bytes:
    """TLS 1.3 HKDF-Expand-Label with an empty context (RFC 8446 section 7.1)."""
    full = b"tls13 " + label.encode()
    info = struct.pack("!HB", length, len(full)) + full + b"\x00"
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = _hmac_sha256(secret, block + info + bytes([counter]))
        out, counter = out + block, counter + 1
    return out[:length]


@dataclass(frozen=True, slots=True)
class InitialKeys:
    key: bytes
    iv: bytes
    hp: bytes

    @staticmethod
    def derive(original_dcid: bytes, server: bool) -> InitialKeys:
        initial_secret = _hmac_sha256(INITIAL_SALT_V1, original_dcid)
        secret = hkdf_expand_label(initial_secret, "server in" if server else "client in", 32)
        return InitialKeys(hkdf_expand_label(secret, "quic key", 16),
                           hkdf_expand_label(secret, "quic iv", 12),
                           hkdf_expand_label(secret, "quic hp", 16))


def crypto_frame(data: bytes, offset: int = 0) -> bytes:
    return bytes([FRAME_CRYPTO]) + varint(offset) + varint(len(data)) + data


def ack_frame(largest: int) -> bytes:
    return bytes([FRAME_ACK]) + varint(largest) + varint(0) + varint(0) + varint(0)


@dataclass(frozen=True, slots=True)
class LongHeader:
    packet_type: int
    dcid: bytes
    scid: bytes
    packet_number: int
    pn_len: int = 2
    token: bytes = b""

    def encode(self, payload_len: int) -> bytes:
        first = LONG_HEADER_FIXED | (self.packet_type << 4) | (self.pn_len - 1)
        out = struct.pack("!BI", first, QUIC_V1) + bytes([len(self.dcid)]) + self.dcid
        out += bytes([len(self.scid)]) + self.scid
        if self.packet_type == PACKET_TYPE_INITIAL:
            out += varint(len(self.token)) + self.token
        out += varint(self.pn_len + payload_len + AEAD_TAG)
        return out + self.packet_number.to_bytes(self.pn_len, "big")


def protect(header: LongHeader, payload: bytes, keys: InitialKeys) -> bytes:
    """AEAD-encrypt the payload with the header as AAD, then apply header protection."""
    head = header.encode(len(payload))
    nonce = bytes(a ^ b for a, b in zip(keys.iv, header.packet_number.to_bytes(12, "big"),
                                        strict=True))
    sealed = AESGCM(keys.key).encrypt(nonce, payload, head)
    pn_offset = len(head) - header.pn_len
    sample_at = HP_SAMPLE_OFFSET - header.pn_len
    sample = sealed[sample_at : sample_at + HP_SAMPLE_LEN]
    encryptor = Cipher(algorithms.AES(keys.hp), modes.ECB()).encryptor()
    mask = encryptor.update(sample) + encryptor.finalize()
    masked = bytearray(head)
    masked[0] ^= mask[0] & 0x0F
    for i in range(header.pn_len):
        masked[pn_offset + i] ^= mask[1 + i]
    return bytes(masked) + sealed


def client_initial(dcid: bytes, scid: bytes, packet_number: int, client_hello: bytes) -> bytes:
    """A client Initial carrying the ClientHello, padded so the datagram is at least 1200 bytes."""
    keys = InitialKeys.derive(dcid, server=False)
    header = LongHeader(PACKET_TYPE_INITIAL, dcid, scid, packet_number)
    frames = crypto_frame(client_hello)
    overhead = len(header.encode(len(frames))) + AEAD_TAG
    padding = max(0, MIN_CLIENT_DATAGRAM - overhead - len(frames) - 4)
    return protect(header, frames + bytes(padding), keys)


def server_initial(original_dcid: bytes, dcid: bytes, scid: bytes, server_hello: bytes) -> bytes:
    """The server's Initial: ACK of the client's packet 0 and the ServerHello."""
    keys = InitialKeys.derive(original_dcid, server=True)
    header = LongHeader(PACKET_TYPE_INITIAL, dcid, scid, 0)
    return protect(header, ack_frame(0) + crypto_frame(server_hello), keys)


def opaque_handshake(dcid: bytes, scid: bytes, packet_number: int, sealed: bytes) -> bytes:
    """A Handshake packet around opaque sealed bytes (payload + tag; its keys are not derivable
    from the wire, so no real encryption is attempted)."""
    header = LongHeader(PACKET_TYPE_HANDSHAKE, dcid, scid, packet_number)
    return header.encode(len(sealed) - AEAD_TAG) + sealed
