"""RTP static payload types of the RTP/AVP profile.

Source: RFC 3551 §6, Table 4 (audio) and Table 5 (video and combined encodings),
https://www.rfc-editor.org/rfc/rfc3551#section-6, cross-checked with the IANA "RTP Payload
Types" registry and Wireshark's packet-rtp_pt.h (read 2026-11). PTs 1, 2 and 19 are reserved,
72-76 are reserved for RTCP conflict avoidance (RFC 3550 §12.1, RFC 5761 §4), 96-127 are
dynamic (bound by signalling).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MediaKind = Literal["audio", "video"]


@dataclass(frozen=True, slots=True)
class StaticPayloadType:
    """One row of RFC 3551 Tables 4/5."""

    encoding: str
    media: MediaKind
    clock_rate: int
    channels: int | None = None


# RFC 3551 Table 4 (audio) and Table 5 (video). MP2T (33) is "AV" in the RFC (audio and video in
# one MPEG-2 transport stream); it is filed under video here.
STATIC_PAYLOAD_TYPES: dict[int, StaticPayloadType] = {
    0: StaticPayloadType("PCMU", "audio", 8000, 1),
    3: StaticPayloadType("GSM", "audio", 8000, 1),
    4: StaticPayloadType("G723", "audio", 8000, 1),
    5: StaticPayloadType("DVI4", "audio", 8000, 1),
    6: StaticPayloadType("DVI4", "audio", 16000, 1),
    7: StaticPayloadType("LPC", "audio", 8000, 1),
    8: StaticPayloadType("PCMA", "audio", 8000, 1),
    9: StaticPayloadType("G722", "audio", 8000, 1),
    10: StaticPayloadType("L16", "audio", 44100, 2),
    11: StaticPayloadType("L16", "audio", 44100, 1),
    12: StaticPayloadType("QCELP", "audio", 8000, 1),
    13: StaticPayloadType("CN", "audio", 8000, 1),
    14: StaticPayloadType("MPA", "audio", 90000),
    15: StaticPayloadType("G728", "audio", 8000, 1),
    16: StaticPayloadType("DVI4", "audio", 11025, 1),
    17: StaticPayloadType("DVI4", "audio", 22050, 1),
    18: StaticPayloadType("G729", "audio", 8000, 1),
    25: StaticPayloadType("CelB", "video", 90000),
    26: StaticPayloadType("JPEG", "video", 90000),
    28: StaticPayloadType("nv", "video", 90000),
    31: StaticPayloadType("H261", "video", 90000),
    32: StaticPayloadType("MPV", "video", 90000),
    33: StaticPayloadType("MP2T", "video", 90000),
    34: StaticPayloadType("H263", "video", 90000),
}

RESERVED_PAYLOAD_TYPES = frozenset({1, 2, 19, 72, 73, 74, 75, 76})
DYNAMIC_PAYLOAD_TYPES = range(96, 128)


def static_payload_type(pt: int) -> StaticPayloadType | None:
    """The RFC 3551 static assignment of `pt`, or None (unassigned, reserved or dynamic)."""
    return STATIC_PAYLOAD_TYPES.get(pt)


def static_clock_rate(pt: int) -> int | None:
    """RTP timestamp clock rate in Hz for a static payload type, None when not static."""
    entry = STATIC_PAYLOAD_TYPES.get(pt)
    return entry.clock_rate if entry else None


def is_dynamic(pt: int) -> bool:
    """True for the dynamic range 96-127, whose meaning comes from SDP `a=rtpmap`."""
    return pt in DYNAMIC_PAYLOAD_TYPES
