"""ZRTP packets (RFC 6189 §5): the header, the message type and the CRC check.

Packet layout (Figure 2), network byte order; the message (Figure 3) starts with the
preamble 0x505A, its length in 32-bit words (counting the preamble word and the type block)
and an 8-character ASCII type block such as "Hello   " or "DHPart1 ". The trailing CRC is a
CRC-32C (Castagnoli, RFC 3309) over everything before it, placed on the wire as SCTP places it
(RFC 4960 Appendix B): least significant byte first. Wireshark (4.0 `packet-zrtp.c`) and the
bzrtp reference library check it that way; the RFC figure alone does not say.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from analyzer.errors import DecodeError

# | 0001 | not used (12 bits) | sequence (16) | magic cookie (32) | source identifier (32) |
PACKET_HEADER = struct.Struct("!BxHII")
# | preamble 0x505A (16) | length in words (16) | message type block (8 ASCII) |
MESSAGE_HEADER = struct.Struct("!HH8s")
CRC = struct.Struct("!I")
FIRST_BYTE = 0x10
MAGIC_COOKIE = 0x5A525450  # "ZRTP"
PREAMBLE = 0x505A
WORD = 4
MIN_PACKET = PACKET_HEADER.size + MESSAGE_HEADER.size + CRC.size
MESSAGE_TYPES = frozenset(
    {
        "Hello", "HelloACK", "Commit", "DHPart1", "DHPart2", "Confirm1", "Confirm2",
        "Conf2ACK", "Error", "ErrorACK", "GoClear", "ClearACK", "SASrelay", "RelayACK",
        "Ping", "PingACK",
    }
)  # fmt: skip

# CRC-32C, reflected polynomial 0x82F63B78 (Castagnoli), one table entry per byte value.
CRC32C_POLY = 0x82F63B78


def _crc_table_entry(byte: int) -> int:
    crc = byte
    for _ in range(8):
        crc = (crc >> 1) ^ (CRC32C_POLY if crc & 1 else 0)
    return crc


CRC32C_TABLE = tuple(_crc_table_entry(byte) for byte in range(256))


def crc32c(data: bytes) -> int:
    """CRC-32C of `data` (initial value and final XOR 0xFFFFFFFF); crc32c(b"123456789") is
    0xE3069283."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _wire_order(crc: int) -> int:
    """The CRC as its trailer reads big-endian (its bytes reversed, RFC 4960 Appendix B)."""
    return int.from_bytes(crc.to_bytes(4, "little"), "big")


@dataclass(frozen=True, slots=True)
class ZrtpPacket:
    sequence: int
    ssrc: int
    message_type: str  # type block without its trailing spaces, e.g. "Hello", "DHPart1"
    message_length_words: int
    crc: int  # the trailer read big-endian, as Wireshark shows `zrtp.checksum`
    crc_valid: bool

    @property
    def is_known_type(self) -> bool:
        return self.message_type in MESSAGE_TYPES


def looks_like_zrtp(data: bytes) -> bool:
    """First byte 0x10 and the magic cookie 'ZRTP' at bytes 4-7. Never raises."""
    return len(data) >= MIN_PACKET and data[0] == FIRST_BYTE and data[4:8] == b"ZRTP"


def parse_zrtp(data: bytes) -> ZrtpPacket:
    """Parse a ZRTP packet; raise DecodeError if header, preamble or length are wrong.

    A wrong CRC is reported in `crc_valid`, not raised.
    """
    if not looks_like_zrtp(data):
        raise DecodeError("ZRTP: no 0x10 first byte and 'ZRTP' magic cookie")
    _, sequence, _, ssrc = PACKET_HEADER.unpack_from(data)
    preamble, length, type_block = MESSAGE_HEADER.unpack_from(data, PACKET_HEADER.size)
    if preamble != PREAMBLE:
        raise DecodeError(f"ZRTP: message preamble 0x{preamble:04x}, expected 0x505a")
    expected = PACKET_HEADER.size + length * WORD + CRC.size
    if expected != len(data):
        raise DecodeError(f"ZRTP: message length {length} words needs {expected} bytes")
    (crc,) = CRC.unpack_from(data, len(data) - CRC.size)
    return ZrtpPacket(
        sequence=sequence,
        ssrc=ssrc,
        message_type=type_block.decode("ascii", errors="replace").rstrip(" "),
        message_length_words=length,
        crc=crc,
        crc_valid=crc == _wire_order(crc32c(data[: -CRC.size])),
    )
