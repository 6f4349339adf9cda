"""RTCP compound packets (RFC 3550 §6) and the SRTCP trailer (RFC 3711 §3.4, RFC 7714 §9/§17).

Packet types: SR 200, RR 201, SDES 202, BYE 203, APP 204 (RFC 3550), RTPFB 205 / PSFB 206
(RFC 4585), XR 207 (RFC 3611). Any second byte in 192..223 is walked as RTCP (RFC 5761 §4);
bodies of other types are kept undecoded.

SRTCP appends, after the compound, a 32-bit word E(1)|SRTCP index(31), an optional MKI and the
authentication tag (RFC 3711 §3.4: 10 bytes for *_HMAC_SHA1_80, 4 for *_32). With AEAD
(RFC 7714, AES-GCM) the 16-byte tag is part of the ciphertext, so it comes *before* the
E|index word. When E=1 everything after the first 8 bytes is encrypted: only the first header
and SSRC can be read and later packet headers cannot be walked. MKIs are not supported (a
trailer with an MKI is reported as unexplained bytes).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from analyzer.errors import DecodeError

SR, RR, SDES, BYE, APP, RTPFB, PSFB, XR = range(200, 208)
PACKET_TYPE_NAMES = {
    SR: "SR",
    RR: "RR",
    SDES: "SDES",
    BYE: "BYE",
    APP: "APP",
    RTPFB: "RTPFB",
    PSFB: "PSFB",
    XR: "XR",
}
RTCP_PACKET_TYPES = range(192, 224)  # RFC 5761 §4
RTCP_VERSION = 2

# RFC 3550 §6.4.1 common header, wire order: V(2) P(1) count(5) | PT(8) | length(16, words - 1)
COMMON_HEADER = struct.Struct("!BBH")
COMMON_HEADER_LENGTH = 4
FIRST_PACKET_MIN_LENGTH = 8  # header + SSRC
SSRC_FIELD = struct.Struct("!I")
# RFC 3550 §6.4.1 sender info: NTP timestamp(64) RTP timestamp(32) packet count(32) octets(32)
SENDER_INFO = struct.Struct("!QIII")
# RFC 3550 §6.4.1 report block: SSRC, fraction lost(8), cumulative lost(24, signed),
# extended highest sequence number, jitter, LSR, DLSR
REPORT_BLOCK = struct.Struct("!IB3sIIII")
# RFC 3611 §3 XR report block header: BT(8) type-specific(8) block length(16, in words)
XR_BLOCK_HEADER = struct.Struct("!BBH")

SDES_END, SDES_CNAME = 0, 1
SDES_ITEM_NAMES = {1: "CNAME", 2: "NAME", 3: "EMAIL", 4: "PHONE", 5: "LOC", 6: "TOOL", 7: "NOTE",
                   8: "PRIV"}  # fmt: skip

SRTCP_E_FLAG = 0x8000_0000
SRTCP_INDEX_MASK = 0x7FFF_FFFF
SRTCP_WORD_LENGTH = 4
AEAD_TAG_LENGTH = 16


@dataclass(frozen=True, slots=True)
class SrtcpLayout:
    """Where the E|index word sits in a trailer of `size` bytes (offset counted from its start)."""

    name: str
    size: int
    word_at: int
    tag_length: int


# RFC 3711 §3.4 (HMAC-SHA1 80/32-bit tags after the word), RFC 7714 (GCM tag before the word).
SRTCP_LAYOUTS = (
    SrtcpLayout("hmac-sha1-80", SRTCP_WORD_LENGTH + 10, 0, 10),
    SrtcpLayout("aead-gcm", AEAD_TAG_LENGTH + SRTCP_WORD_LENGTH, AEAD_TAG_LENGTH, AEAD_TAG_LENGTH),
    SrtcpLayout("hmac-sha1-32", SRTCP_WORD_LENGTH + 4, 0, 4),
)


@dataclass(frozen=True, slots=True)
class SenderInfo:
    ntp_timestamp: int  # 64-bit NTP format: seconds << 32 | fraction
    rtp_timestamp: int
    packet_count: int
    octet_count: int


@dataclass(frozen=True, slots=True)
class ReportBlock:
    ssrc: int
    fraction_lost: int
    cumulative_lost: int  # signed 24-bit
    highest_seq: int  # extended highest sequence number received
    jitter: int
    lsr: int
    dlsr: int


@dataclass(frozen=True, slots=True)
class SenderReport:
    sender_info: SenderInfo
    report_blocks: tuple[ReportBlock, ...]


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    report_blocks: tuple[ReportBlock, ...]


@dataclass(frozen=True, slots=True)
class SdesItem:
    item_type: int
    text: str  # wire text, decoded with errors="replace": hostile, never interpret


@dataclass(frozen=True, slots=True)
class SdesChunk:
    ssrc: int
    items: tuple[SdesItem, ...]


@dataclass(frozen=True, slots=True)
class SourceDescription:
    chunks: tuple[SdesChunk, ...]

    @property
    def cnames(self) -> tuple[tuple[int, str], ...]:
        """(SSRC, CNAME) pairs: CNAMEs often name a user or host (RFC 3550 §6.5.1)."""
        return tuple((c.ssrc, i.text) for c in self.chunks for i in c.items
                     if i.item_type == SDES_CNAME)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Goodbye:
    ssrcs: tuple[int, ...]
    reason: str | None


@dataclass(frozen=True, slots=True)
class AppDefined:
    subtype: int
    name: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Feedback:
    """RTPFB / PSFB (RFC 4585 §6.1): FMT is the count field of the header."""

    fmt: int
    media_ssrc: int
    fci: bytes


@dataclass(frozen=True, slots=True)
class ExtendedReport:
    block_types: tuple[int, ...]


RtcpBody = (
    SenderReport | ReceiverReport | SourceDescription | Goodbye | AppDefined | Feedback
    | ExtendedReport
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class RtcpPacket:
    """One packet of a compound. `body` is None when not decoded (encrypted or unknown type)."""

    version: int
    padding: bool
    count: int  # RC, SC, FMT or APP subtype, depending on the type
    packet_type: int
    length_words: int  # the length field: packet length in 32-bit words minus one
    ssrc: int | None
    body: RtcpBody | None

    @property
    def length(self) -> int:
        return 4 * (self.length_words + 1)

    @property
    def body_decoded(self) -> bool:
        return self.body is not None

    @property
    def name(self) -> str:
        return PACKET_TYPE_NAMES.get(self.packet_type, f"RTCP-{self.packet_type}")


@dataclass(frozen=True, slots=True)
class SrtcpTrailer:
    encrypted_flag: bool
    index: int
    tag_length: int  # 10 or 4 (HMAC-SHA1, after the word) or 16 (AEAD, before the word)


@dataclass(frozen=True, slots=True)
class RtcpCompound:
    """Packets in wire order, the SRTCP trailer if one was recognised, and the bytes explained."""

    packets: tuple[RtcpPacket, ...]
    srtcp_trailer: SrtcpTrailer | None
    consumed_length: int

    @property
    def body_decoded(self) -> bool:
        return all(packet.body_decoded for packet in self.packets)


def looks_like_rtcp(data: bytes) -> bool:
    """Cheap test: a first packet of type 200-207 with its SSRC, fitting the datagram."""
    return _first_length(data) is not None


def parse_rtcp_compound(data: bytes) -> RtcpCompound:
    """Decode a compound RTCP or SRTCP datagram; raise DecodeError if it does not start as RTCP.

    The first packet must be one of 200-207 (RFC 3550 §6.1 starts compounds with SR/RR; RFC
    5506 reduced-size RTCP allows the others) and hold an SSRC; later ones may be any 192-223.
    """
    first_length = _first_length(data)
    if first_length is None:
        raise DecodeError("RTCP: first packet header is not valid RTCP")
    plain_end = _walk_end(data, len(data))
    if plain_end == len(data):
        return RtcpCompound(_decode_packets(data, plain_end), None, plain_end)
    srtcp = _srtcp_reading(data, first_length)
    if srtcp is not None:
        return srtcp
    return RtcpCompound(_decode_packets(data, plain_end), None, plain_end)


def may_carry_srtcp_trailer(data: bytes) -> bool:
    """False when well-formed RTCP packets fill the datagram exactly: an SRTCP trailer follows
    the compound (RFC 3711 §3.4), so `parse_rtcp_compound` would find none."""
    return _walk_end(data, len(data)) != len(data)


# ---------------------------------------------------------------------------------------------
# Walking the compound


def _first_length(data: bytes) -> int | None:
    length = _packet_length_at(data, 0, len(data))
    if length is None or length < FIRST_PACKET_MIN_LENGTH or data[1] not in PACKET_TYPE_NAMES:
        return None
    return length


def _packet_length_at(data: bytes, offset: int, end: int) -> int | None:
    """Length in bytes of a well-formed RTCP packet header at `offset` that ends by `end`."""
    if offset + COMMON_HEADER_LENGTH > end:
        return None
    first, packet_type, length_words = COMMON_HEADER.unpack_from(data, offset)
    length = 4 * (length_words + 1)
    if first >> 6 != RTCP_VERSION or packet_type not in RTCP_PACKET_TYPES:
        return None
    return length if offset + length <= end else None


def _packet_spans(data: bytes, end: int) -> list[tuple[int, int]]:
    """(offset, length) of each well-formed packet of the run starting at 0 and ending by `end`."""
    spans = []
    offset = 0
    while (length := _packet_length_at(data, offset, end)) is not None:
        spans.append((offset, length))
        offset += length
    return spans


def _walk_end(data: bytes, end: int) -> int:
    """Offset just after the last well-formed packet of the run starting at 0."""
    spans = _packet_spans(data, end)
    return spans[-1][0] + spans[-1][1] if spans else 0


def _decode_packets(data: bytes, end: int) -> tuple[RtcpPacket, ...]:
    spans = _packet_spans(data, end)
    return tuple(_decode_packet(data[offset : offset + length]) for offset, length in spans)


def _header_only(packet: bytes) -> RtcpPacket:
    first, packet_type, length_words = COMMON_HEADER.unpack_from(packet)
    has_ssrc = len(packet) >= COMMON_HEADER_LENGTH + SSRC_FIELD.size
    return RtcpPacket(
        version=first >> 6,
        padding=bool(first & 0x20),
        count=first & 0x1F,
        packet_type=packet_type,
        length_words=length_words,
        ssrc=SSRC_FIELD.unpack_from(packet, 4)[0] if has_ssrc else None,
        body=None,
    )


def _decode_packet(packet: bytes) -> RtcpPacket:
    header = _header_only(packet)
    decoder = _BODY_DECODERS.get(header.packet_type)
    if decoder is None:
        return header
    body = packet[COMMON_HEADER_LENGTH : len(packet) - _padding(packet, header.padding)]
    return RtcpPacket(
        version=header.version,
        padding=header.padding,
        count=header.count,
        packet_type=header.packet_type,
        length_words=header.length_words,
        ssrc=header.ssrc,
        body=decoder(body, header.count),
    )


def _padding(packet: bytes, padded: bool) -> int:
    """RFC 3550 §6.4.1: the last octet counts the padding octets, itself included."""
    if not padded:
        return 0
    count = packet[-1]
    if count == 0 or count > len(packet) - COMMON_HEADER_LENGTH:
        raise DecodeError(f"RTCP: padding count {count} does not fit the packet")
    return count


# ---------------------------------------------------------------------------------------------
# Bodies (after the 4-byte common header, padding removed)


def _need(body: bytes, size: int, what: str) -> None:
    if len(body) < size:
        raise DecodeError(f"RTCP {what}: body of {len(body)} bytes, needs {size}")


def _report_blocks(body: bytes, offset: int, count: int) -> tuple[ReportBlock, ...]:
    _need(body, offset + REPORT_BLOCK.size * count, "report blocks")
    return tuple(_report_block(body, offset + REPORT_BLOCK.size * i) for i in range(count))


def _report_block(body: bytes, offset: int) -> ReportBlock:
    ssrc, fraction, lost, highest, jitter, lsr, dlsr = REPORT_BLOCK.unpack_from(body, offset)
    return ReportBlock(ssrc, fraction, int.from_bytes(lost, "big", signed=True), highest, jitter,
                       lsr, dlsr)  # fmt: skip


def _sender_report(body: bytes, count: int) -> SenderReport:
    _need(body, SSRC_FIELD.size + SENDER_INFO.size, "SR")
    info = SenderInfo(*SENDER_INFO.unpack_from(body, SSRC_FIELD.size))
    return SenderReport(info, _report_blocks(body, SSRC_FIELD.size + SENDER_INFO.size, count))


def _receiver_report(body: bytes, count: int) -> ReceiverReport:
    _need(body, SSRC_FIELD.size, "RR")
    return ReceiverReport(_report_blocks(body, SSRC_FIELD.size, count))


def _source_description(body: bytes, count: int) -> SourceDescription:
    chunks = []
    offset = 0
    for _ in range(count):
        chunk, offset = _sdes_chunk(body, offset)
        chunks.append(chunk)
    return SourceDescription(tuple(chunks))


def _sdes_chunk(body: bytes, offset: int) -> tuple[SdesChunk, int]:
    """RFC 3550 §6.5: SSRC, items, a null octet, then padding to the next 32-bit boundary."""
    _need(body, offset + SSRC_FIELD.size, "SDES chunk")
    ssrc = SSRC_FIELD.unpack_from(body, offset)[0]
    items = []
    position = offset + SSRC_FIELD.size
    while position < len(body) and body[position] != SDES_END:
        item, position = _sdes_item(body, position)
        items.append(item)
    next_chunk = (position + 1 + 3) // 4 * 4  # past the null octet, aligned
    return SdesChunk(ssrc, tuple(items)), min(next_chunk, len(body))


def _sdes_item(body: bytes, position: int) -> tuple[SdesItem, int]:
    """type(8) length(8) text; PRIV (8) keeps its prefix-length octet inside `text`."""
    _need(body, position + 2, "SDES item")
    end = position + 2 + body[position + 1]
    _need(body, end, "SDES item")
    text = body[position + 2 : end].decode("utf-8", errors="replace")
    return SdesItem(body[position], text), end


def _goodbye(body: bytes, count: int) -> Goodbye:
    """RFC 3550 §6.6: SC SSRCs, then an optional length-prefixed reason."""
    _need(body, SSRC_FIELD.size * count, "BYE")
    ssrcs = struct.unpack_from(f"!{count}I", body)
    rest = body[SSRC_FIELD.size * count :]
    if not rest:
        return Goodbye(ssrcs, None)
    _need(rest, 1 + rest[0], "BYE reason")
    return Goodbye(ssrcs, rest[1 : 1 + rest[0]].decode("utf-8", errors="replace"))


def _app_defined(body: bytes, count: int) -> AppDefined:
    """RFC 3550 §6.7: SSRC, 4-character name, application data."""
    _need(body, 8, "APP")
    return AppDefined(count, body[4:8].decode("ascii", errors="replace"), bytes(body[8:]))


def _feedback(body: bytes, count: int) -> Feedback:
    """RFC 4585 §6.1: sender SSRC, media source SSRC, feedback control information."""
    _need(body, 8, "feedback")
    return Feedback(count, SSRC_FIELD.unpack_from(body, 4)[0], bytes(body[8:]))


def _extended_report(body: bytes, count: int) -> ExtendedReport:
    """RFC 3611 §2: SSRC, then report blocks BT(8) type-specific(8) length(16 words)."""
    _need(body, SSRC_FIELD.size, "XR")
    block_types = []
    offset = SSRC_FIELD.size
    while offset < len(body):
        _need(body, offset + XR_BLOCK_HEADER.size, "XR block")
        block_type, _, words = XR_BLOCK_HEADER.unpack_from(body, offset)
        offset += XR_BLOCK_HEADER.size + 4 * words
        _need(body, offset, "XR block")
        block_types.append(block_type)
    return ExtendedReport(tuple(block_types))


_BODY_DECODERS: dict[int, Callable[[bytes, int], RtcpBody]] = {
    SR: _sender_report,
    RR: _receiver_report,
    SDES: _source_description,
    BYE: _goodbye,
    APP: _app_defined,
    RTPFB: _feedback,
    PSFB: _feedback,
    XR: _extended_report,
}


# ---------------------------------------------------------------------------------------------
# SRTCP trailer


@dataclass(frozen=True, slots=True)
class _Candidate:
    trailer: SrtcpTrailer
    protected_end: int


def _srtcp_reading(data: bytes, first_length: int) -> RtcpCompound | None:
    """Read `data` as SRTCP: prefer an authenticated-only (E=0) trailer whose cleartext compound
    walks exactly; otherwise an encrypted (E=1) one, the smallest index winning a tie."""
    candidates = [c for layout in SRTCP_LAYOUTS if (c := _candidate(data, layout)) is not None]
    clear = [c for c in candidates if not c.trailer.encrypted_flag]
    for candidate in clear:
        if _walk_end(data, candidate.protected_end) == candidate.protected_end:
            packets = _decode_packets(data, candidate.protected_end)
            return RtcpCompound(packets, candidate.trailer, len(data))
    encrypted = [c for c in candidates if c.trailer.encrypted_flag and
                 first_length <= c.protected_end]  # fmt: skip
    if not encrypted:
        return None
    best = min(encrypted, key=lambda c: c.trailer.index)
    return RtcpCompound((_header_only(data[:first_length]),), best.trailer, len(data))


def _candidate(data: bytes, layout: SrtcpLayout) -> _Candidate | None:
    protected_end = len(data) - layout.size
    if protected_end < COMMON_HEADER_LENGTH or protected_end % 4:
        return None
    word = SSRC_FIELD.unpack_from(data, protected_end + layout.word_at)[0]
    trailer = SrtcpTrailer(bool(word & SRTCP_E_FLAG), word & SRTCP_INDEX_MASK, layout.tag_length)
    return _Candidate(trailer, protected_end)
