"""RTP header decoding (RFC 3550 §5.1), scalar and columnar.

Header extensions: RFC 8285 one-byte (profile 0xBEDE) and two-byte (0x1000-0x100F) elements;
RFC 9335 "cryptex" profiles 0xC0DE / 0xC2DE mark extension elements and CSRCs as encrypted
(values checked against the text of draft-ietf-avtcore-cryptex-08, published as RFC 9335).
RTP/RTCP demultiplexing follows RFC 5761 §4: a second byte in 192..223 is RTCP.

The slow path (`parse_rtp`) returns an `RtpHeader`; the fast path (`rtp_header_columns`) decodes
the fixed header of many candidate payloads at once from an (N, K) byte matrix.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from analyzer.errors import DecodeError

# RFC 3550 §5.1 fixed header, wire order: (field, byte offset, size in bytes).
RTP_FIXED_HEADER = (
    ("v_p_x_cc", 0, 1),  # version(2) padding(1) extension(1) CSRC count(4)
    ("m_pt", 1, 1),  # marker(1) payload type(7)
    ("sequence_number", 2, 2),
    ("timestamp", 4, 4),
    ("ssrc", 8, 4),
)
FIXED_HEADER_LENGTH = 12
CSRC_LENGTH = 4
EXTENSION_HEADER_LENGTH = 4  # profile(16) + length in 32-bit words(16)
RTP_VERSION = 2

_FIXED = struct.Struct("!BBHII")
_EXTENSION_HEADER = struct.Struct("!HH")

# RFC 8285 §4.2 / §4.3 and RFC 9335 §5 "defined by profile" values.
ONE_BYTE_PROFILE = 0xBEDE
TWO_BYTE_PROFILE = 0x1000  # low 4 bits are "appbits"
TWO_BYTE_PROFILE_MASK = 0xFFF0
CRYPTEX_ONE_BYTE_PROFILE = 0xC0DE
CRYPTEX_TWO_BYTE_PROFILE = 0xC2DE
ONE_BYTE_RESERVED_ID = 15  # RFC 8285 §4.2: stop processing at ID 15

RTCP_SECOND_BYTE = range(192, 224)  # RFC 5761 §4
RTCP_CONFLICT_PAYLOAD_TYPES = range(72, 77)  # RFC 3551 §6 / RFC 5761 §4

ExtensionElements = tuple[tuple[int, bytes], ...]


@dataclass(frozen=True, slots=True)
class RtpHeader:
    """A decoded RTP header.

    `header_length` is the fixed header plus CSRCs (12 + 4*CC); `payload_offset` adds the
    extension block. With cryptex the CSRCs and extension elements are ciphertext, so `csrcs`
    and `extension_elements` are empty (the counts stay visible). `padding_length` reads the
    last byte (RFC 3550 §5.1); on SRTP that byte belongs to the auth tag, so it is only
    meaningful for plain RTP.
    """

    version: int
    padding: bool
    extension: bool
    csrc_count: int
    marker: bool
    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    csrcs: tuple[int, ...]
    extension_profile: int | None
    extension_elements: ExtensionElements
    cryptex: bool
    header_length: int
    payload_offset: int
    payload_length: int
    padding_length: int


@dataclass(frozen=True, slots=True)
class _ExtensionBlock:
    profile: int | None
    elements: ExtensionElements
    end: int

    @property
    def cryptex(self) -> bool:
        return self.profile in (CRYPTEX_ONE_BYTE_PROFILE, CRYPTEX_TWO_BYTE_PROFILE)


def is_rtcp_packet_type(byte1: int) -> bool:
    """RFC 5761 §4: a second byte in 192..223 means RTCP (RTP would need PT 64..95 with M=1)."""
    return byte1 in RTCP_SECOND_BYTE


def looks_like_rtp(data: bytes) -> bool:
    """Cheap plausibility test: a valid RTP header whose PT is not reserved for RTCP (72-76)."""
    try:
        header = parse_rtp(data)
    except DecodeError:
        return False
    return header.payload_type not in RTCP_CONFLICT_PAYLOAD_TYPES


def parse_rtp(data: bytes) -> RtpHeader:
    """Decode an RTP header; raise DecodeError when the bytes cannot be RTP (RFC 3550 A.1)."""
    if len(data) < FIXED_HEADER_LENGTH:
        raise DecodeError(f"RTP: {len(data)} bytes, the fixed header needs 12")
    b0, b1, sequence_number, timestamp, ssrc = _FIXED.unpack_from(data)
    if b0 >> 6 != RTP_VERSION:
        raise DecodeError(f"RTP: version {b0 >> 6}, expected 2")
    if is_rtcp_packet_type(b1):
        raise DecodeError(f"RTP: second byte {b1} is an RTCP packet type (RFC 5761)")
    csrc_count = b0 & 0x0F
    header_length = FIXED_HEADER_LENGTH + CSRC_LENGTH * csrc_count
    if len(data) < header_length:
        raise DecodeError(f"RTP: {csrc_count} CSRCs do not fit in {len(data)} bytes")
    extension = _parse_extension(data, header_length) if b0 & 0x10 else _no_extension(header_length)
    padding_length = _padding_length(data, extension.end) if b0 & 0x20 else 0
    csrcs = () if extension.cryptex else struct.unpack_from(f"!{csrc_count}I", data, 12)
    return RtpHeader(
        version=RTP_VERSION,
        padding=bool(b0 & 0x20),
        extension=bool(b0 & 0x10),
        csrc_count=csrc_count,
        marker=bool(b1 & 0x80),
        payload_type=b1 & 0x7F,
        sequence_number=sequence_number,
        timestamp=timestamp,
        ssrc=ssrc,
        csrcs=csrcs,
        extension_profile=extension.profile,
        extension_elements=extension.elements,
        cryptex=extension.cryptex,
        header_length=header_length,
        payload_offset=extension.end,
        payload_length=len(data) - extension.end - padding_length,
        padding_length=padding_length,
    )


def _no_extension(offset: int) -> _ExtensionBlock:
    return _ExtensionBlock(profile=None, elements=(), end=offset)


def _parse_extension(data: bytes, start: int) -> _ExtensionBlock:
    """The RFC 3550 §5.3.1 extension block at `start`, with RFC 8285 elements when present."""
    if len(data) < start + EXTENSION_HEADER_LENGTH:
        raise DecodeError("RTP: X bit set but no room for the extension header")
    profile, words = _EXTENSION_HEADER.unpack_from(data, start)
    end = start + EXTENSION_HEADER_LENGTH + 4 * words
    if end > len(data):
        raise DecodeError(f"RTP: extension of {words} words overruns the packet")
    body = data[start + EXTENSION_HEADER_LENGTH : end]
    return _ExtensionBlock(profile=profile, elements=_extension_elements(profile, body), end=end)


def _extension_elements(profile: int, body: bytes) -> ExtensionElements:
    if profile == ONE_BYTE_PROFILE:
        return _one_byte_elements(body)
    if profile & TWO_BYTE_PROFILE_MASK == TWO_BYTE_PROFILE:
        return _two_byte_elements(body)
    return ()  # other profiles (and cryptex ciphertext) are opaque


def _one_byte_elements(body: bytes) -> ExtensionElements:
    """RFC 8285 §4.2: ID(4) L(4) then L+1 bytes; 0x00 is padding; ID 15 ends processing.

    An element that overruns the block ends the list (the header itself stays valid).
    """
    elements: list[tuple[int, bytes]] = []
    position = 0
    while position < len(body):
        ident, size = body[position] >> 4, (body[position] & 0x0F) + 1
        if body[position] == 0:
            position += 1
            continue
        if ident == ONE_BYTE_RESERVED_ID or position + 1 + size > len(body):
            break
        elements.append((ident, bytes(body[position + 1 : position + 1 + size])))
        position += 1 + size
    return tuple(elements)


def _two_byte_elements(body: bytes) -> ExtensionElements:
    """RFC 8285 §4.3: ID(8) length(8) then `length` bytes; a zero ID byte is padding."""
    elements: list[tuple[int, bytes]] = []
    position = 0
    while position < len(body):
        if body[position] == 0:
            position += 1
            continue
        if position + 2 > len(body) or position + 2 + body[position + 1] > len(body):
            break
        ident, size = body[position], body[position + 1]
        elements.append((ident, bytes(body[position + 2 : position + 2 + size])))
        position += 2 + size
    return tuple(elements)


def _padding_length(data: bytes, payload_offset: int) -> int:
    """RFC 3550 A.1: the last octet counts the padding, itself included."""
    count = data[-1]
    if count == 0 or payload_offset + count > len(data):
        raise DecodeError(f"RTP: padding count {count} does not fit the payload")
    return count


# ---------------------------------------------------------------------------------------------
# Columnar fast path


@dataclass(frozen=True, slots=True)
class RtpColumns:
    """Fixed-header fields of N candidate payloads, one numpy array per field.

    `valid`: version 2, not RTCP by RFC 5761, CSRCs (and the extension header when X=1) inside
    the payload, and the extension block inside the payload when its length field is within
    the K bytes given. `payload_offset` is -1 when that length field lies beyond K.
    Padding is not checked (the count is the last byte, beyond K).
    """

    valid: np.ndarray
    payload_type: np.ndarray
    marker: np.ndarray
    sequence_number: np.ndarray
    timestamp: np.ndarray
    ssrc: np.ndarray
    csrc_count: np.ndarray
    padding: np.ndarray
    extension: np.ndarray
    header_length_min: np.ndarray
    payload_offset: np.ndarray


MIN_HEAD_COLUMNS = 16


def rtp_header_columns(head: np.ndarray, length: np.ndarray) -> RtpColumns:
    """Decode RTP fixed headers from `head` (N x K uint8, K >= 16, zero-padded) and lengths."""
    head, length = _check_matrix(head, length, MIN_HEAD_COLUMNS)
    b0, b1 = head[:, 0], head[:, 1]
    csrc_count = b0 & 0x0F
    extension = (b0 & 0x10) != 0
    header_length_min = FIXED_HEADER_LENGTH + CSRC_LENGTH * csrc_count.astype(np.int64)
    payload_offset = _payload_offsets(head, extension, header_length_min)
    rtcp = (b1 >= RTCP_SECOND_BYTE.start) & (b1 < RTCP_SECOND_BYTE.stop)
    valid = (b0 >> 6 == RTP_VERSION) & ~rtcp
    valid &= length >= header_length_min
    valid &= ~extension | (length >= header_length_min + EXTENSION_HEADER_LENGTH)
    valid &= payload_offset <= length
    return RtpColumns(
        valid=valid,
        payload_type=b1 & 0x7F,
        marker=(b1 & 0x80) != 0,
        sequence_number=_be_column(head, 2, 2).astype(np.uint16),
        timestamp=_be_column(head, 4, 4).astype(np.uint32),
        ssrc=_be_column(head, 8, 4).astype(np.uint32),
        csrc_count=csrc_count,
        padding=(b0 & 0x20) != 0,
        extension=extension,
        header_length_min=header_length_min,
        payload_offset=payload_offset,
    )


def _payload_offsets(
    head: np.ndarray, extension: np.ndarray, header_length_min: np.ndarray
) -> np.ndarray:
    """12 + 4*CC, plus the extension block when its length field lies within the K columns."""
    columns = head.shape[1]
    words = _be_column(head, FIXED_HEADER_LENGTH + 2, 2).astype(np.int64)  # no CSRC: column 14
    csrcs = np.flatnonzero(extension & (header_length_min != FIXED_HEADER_LENGTH))
    length_field = header_length_min[csrcs] + 2
    visible = length_field + 2 <= columns
    at = csrcs[visible] * columns + length_field[visible]
    flat = head.reshape(-1)
    words[csrcs[visible]] = (flat[at].astype(np.int64) << 8) | flat[at + 1]
    words *= 4
    words += EXTENSION_HEADER_LENGTH
    words *= extension
    words += header_length_min
    words[csrcs[~visible]] = -1
    return words


def _check_matrix(
    head: np.ndarray, length: np.ndarray, min_columns: int
) -> tuple[np.ndarray, np.ndarray]:
    head = np.asarray(head, dtype=np.uint8)
    length = np.asarray(length, dtype=np.int64)
    if head.ndim != 2 or head.shape[1] < min_columns or length.shape != (head.shape[0],):
        raise ValueError(f"expected an (N, K>={min_columns}) byte matrix and N lengths")
    return head, length


def _be_column(head: np.ndarray, column: int, size: int) -> np.ndarray:
    """The big-endian unsigned `size`-byte (2, 4 or 8) field at a fixed column, in its own
    big-endian dtype: a view of C-contiguous rows when the field is aligned in them, else a
    copy of the field's bytes, viewed."""
    dtype = np.dtype(f">u{size}")
    if head.flags.c_contiguous and column % size == 0 and head.shape[1] % size == 0:
        return head.view(dtype)[:, column // size]
    return np.ascontiguousarray(head[:, column : column + size]).view(dtype).reshape(-1)


def be_uint(head: np.ndarray, column: int, size: int) -> np.ndarray:
    """Big-endian unsigned integer of `size` bytes starting at a fixed column, as int64."""
    if head.dtype == np.uint8 and size in (2, 4, 8) and 0 <= column <= head.shape[1] - size:
        return _be_column(head, column, size).astype(np.int64)
    value = np.zeros(head.shape[0], dtype=np.int64)
    for byte in range(size):
        value = (value << 8) | head[:, column + byte]
    return value
