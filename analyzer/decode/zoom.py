"""Zoom media encapsulations (protocols.md §1.3-1.10), scalar and columnar.

Three layouts of a UDP payload:

* ``sfu``: 8-byte "SFU encapsulation" (type, sequence, cookie, direction) on server flows; type 5
  carries the "media encapsulation" at offset 8, types 1/2/3/4/7 are session control.
* ``p2p``: the media encapsulation at offset 0 (client to client).
* ``legacy``: pre-5.0 clients (2019 captures): one 0x05 byte, then the media encapsulation.

A layout is trusted only when its content verifies: an RTP header (V=2, no CSRC, a static or
dynamic PT, an RFC 8285 extension inside the packet) or an RTCP header (PT 200-207, length
inside the packet) at the offset the media type implies, the 0x03E8 filler marker, or the
P2P setup structure. Types without such content ("opaque") are accepted only behind a valid
SFU header, or in the legacy layout on a server flow; SFU control packets (types 1/2/3/4/7,
checked on their first bytes only) only on server flows. Every check reads the first
`HEAD_BYTES` bytes only, so the columnar path (`zoom_columns`) applies the same rules.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from analyzer import speedups
from analyzer.decode.rtp import (
    ONE_BYTE_PROFILE,
    TWO_BYTE_PROFILE,
    TWO_BYTE_PROFILE_MASK,
    be_uint,
)
from analyzer.errors import DecodeError

HEAD_BYTES = 64

Layout = Literal["sfu", "p2p", "legacy"]
Direction = Literal["to-server", "from-server"]

# §1.3 SFU encapsulation, wire order: (field, offset, size).
SFU_HEADER = (("sfu_type", 0, 1), ("sequence", 1, 2), ("cookie", 3, 4), ("direction", 7, 1))
SFU_HEADER_LENGTH = 8
SFU_MEDIA = 0x05
SFU_TYPE_NAMES = {
    0x01: "handshake-request",
    0x02: "handshake-response",
    0x03: "keepalive-3",
    0x04: "keepalive-4",
    0x05: "media",
    0x07: "attributes",
}
# §1.3: 0x00/0x04 (Princeton); 0x01/0x05 also seen by the extended Lua fork.
DIRECTIONS: dict[int, Direction] = {
    0x00: "to-server",
    0x01: "to-server",
    0x04: "from-server",
    0x05: "from-server",
}
LEGACY_PREFIX_LENGTH = 1

# §1.4 media encapsulation offsets, relative to its first byte I.
ZOOM_SEQUENCE_AT = 9  # 2 bytes
ZOOM_TIMESTAMP_AT = 11  # 4 bytes
NESTED_HEADER_AT = 7  # types 7 and 13 nest a whole media header here
VIDEO_FRAME_FLAG_AT = 20  # == 0x02: frame number (2) and packets in frame (1) follow
FRAME_NUMBER_AT = 21
PACKETS_IN_FRAME_AT = 23
VIDEO_RTP_AT = (20, 24)  # without / with the frame fields
P2P_SCREEN_RTP_AT = 20
RTCP_AT = 16  # types 33-35
FILLER_SEQUENCE_AT = 13
FILLER_MARKER_AT = 22  # 2 bytes == 0x03E8 (§1.5 type 21, §1.10)
FILLER_MARKER = 0x03E8
SECOND_RTP_AT = 55  # §1.8: after a 31-byte FEC RTP packet at I+24
SECOND_RTP_FIRST_BYTE = 0x90  # V=2, X=1, CC=0
FEC_PAYLOAD_TYPE = 110  # §1.8
# P2P setup (type 31), nDPI zoom.c: 1f 02 01, 24-byte header, u32 IP-text length, IP text,
# u32 UUID length, UUID, four zero bytes.
SETUP_PREFIX = b"\x1f\x02\x01"
SETUP_IP_LENGTH_AT = 24
SETUP_FIXED_LENGTH = 36  # 24 + 4 + 4 + 4

WRAPPER_TYPE = 7
SERVER_SCREEN_TYPE = 13
P2P_SCREEN_TYPE = 30
VIDEO_TYPE = 16
FILLER_TYPE = 21
SETUP_TYPE = 31

MEDIA_KINDS = ("unknown", "audio", "video", "screen", "rtcp", "fec", "probe", "setup")
MediaKind = Literal["unknown", "audio", "video", "screen", "rtcp", "fec", "probe", "setup"]


@dataclass(frozen=True, slots=True)
class InnerType:
    name: str
    kind: MediaKind
    rtp_at: int | None = None
    rtcp_at: int | None = None


# §1.5 inner (media) types. Type 16 places RTP at 20 or 24 (VIDEO_RTP_AT); 7 and 13 nest.
INNER_TYPES: dict[int, InnerType] = {
    1: InnerType("rtp-type-1", "unknown", rtp_at=26),
    7: InnerType("wrapper", "unknown"),
    10: InnerType("type-10", "unknown"),
    12: InnerType("control", "setup"),
    13: InnerType("screen-share-server", "screen"),
    15: InnerType("audio", "audio", rtp_at=19),
    16: InnerType("video", "video"),
    21: InnerType("filler", "probe"),
    30: InnerType("screen-share-p2p", "screen", rtp_at=P2P_SCREEN_RTP_AT),
    31: InnerType("p2p-setup", "setup"),
    32: InnerType("type-32", "unknown"),
    33: InnerType("rtcp", "rtcp", rtcp_at=RTCP_AT),
    34: InnerType("rtcp-sr-sdes", "rtcp", rtcp_at=RTCP_AT),
    35: InnerType("rtcp", "rtcp", rtcp_at=RTCP_AT),
}
OPAQUE_TYPES = frozenset({10, 12, 32})
RTP_TYPES = (1, 15, 30)  # RTP at a fixed offset
RTCP_MEDIA_TYPES = (33, 34, 35)

RTP_STATIC_PT_MAX = 34
RTP_DYNAMIC_PT_MIN = 96
RTCP_TYPES = range(200, 208)

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


@dataclass(frozen=True, slots=True)
class ZoomPacket:
    """A verified Zoom packet. Offsets count from the start of the UDP payload.

    `media_type` is the media-encapsulation type byte as on the wire (7 and 13 may nest
    another header; `media_kind` describes what the nested content is). `rtp_offsets` holds
    one RTP/RTCP header, or two for the §1.8 "second RTP" case.
    """

    layout: Layout
    sfu_type: int | None
    sfu_sequence: int | None
    direction: Direction | None
    media_type: int | None
    media_kind: MediaKind
    zoom_sequence: int | None
    zoom_timestamp: int | None
    frame_number: int | None
    packets_in_frame: int | None
    rtp_offsets: tuple[int, ...]
    is_rtcp: bool


@dataclass(frozen=True, slots=True)
class _Inner:
    media_type: int
    kind: MediaKind
    verified: bool
    rtp_offsets: tuple[int, ...] = ()
    is_rtcp: bool = False
    zoom_sequence: int | None = None
    zoom_timestamp: int | None = None
    frame_number: int | None = None
    packets_in_frame: int | None = None


# ---------------------------------------------------------------------------------------------
# Scalar path


def parse_zoom(data: bytes, server_flow: bool) -> ZoomPacket:
    """Decode a Zoom UDP payload; DecodeError when no layout verifies.

    `server_flow` (a Zoom server address is one end) orders the layouts (SFU first on server
    flows, P2P first otherwise) and allows the weakly-checked control and opaque packets.
    """
    head = bytes(data[:HEAD_BYTES])
    readers = (_sfu, _p2p, _legacy) if server_flow else (_p2p, _sfu, _legacy)
    for reader in readers:
        packet = reader(head, len(data), server_flow)
        if packet is not None:
            return packet
    raise DecodeError("Zoom: no SFU, P2P or legacy layout verifies")


def looks_like_zoom_sfu(data: bytes) -> bool:
    """A verified SFU-layout packet (media or control)."""
    return _sfu(bytes(data[:HEAD_BYTES]), len(data), True) is not None


def looks_like_zoom_p2p(data: bytes) -> bool:
    """A verified P2P-layout packet (media encapsulation at offset 0)."""
    return _p2p(bytes(data[:HEAD_BYTES]), len(data), False) is not None


def _sfu(head: bytes, length: int, server_flow: bool) -> ZoomPacket | None:
    if length < 1:
        return None
    if head[0] != SFU_MEDIA:
        return _sfu_control(head, length) if server_flow else None
    if length <= SFU_HEADER_LENGTH or head[7] not in DIRECTIONS:
        return None
    inner = _inner(head, length, SFU_HEADER_LENGTH)
    if inner is None:
        return None
    sequence = _U16.unpack_from(head, 1)[0]
    return _packet("sfu", inner, SFU_MEDIA, sequence, DIRECTIONS[head[7]])


def _sfu_control(head: bytes, length: int) -> ZoomPacket | None:
    """SFU types 1/2 (handshake), 3/4 (keep-alive), 7: only the first bytes are checkable."""
    sfu_type = head[0]
    if not _control_ok(head, length):
        return None
    return ZoomPacket("sfu", sfu_type, None, None, None, "setup", None, None, None, None, (), False)


def _control_ok(head: bytes, length: int) -> bool:
    kind = head[0]
    if kind in (1, 2):  # 01|02 00 01..03, then a 16-byte transaction id
        return length >= 19 and head[1] == 0 and head[2] in (1, 2, 3)
    if kind in (3, 4):  # counter (high bytes zero), timestamp, cookie
        return length >= 13 and head[1] == 0 and head[2] == 0
    if kind == WRAPPER_TYPE:
        return length >= 10 and head[1] == 0
    return False


def _p2p(head: bytes, length: int, server_flow: bool) -> ZoomPacket | None:
    inner = _inner(head, length, 0)
    if inner is None or not inner.verified:
        return None
    return _packet("p2p", inner, None, None, None)


def _legacy(head: bytes, length: int, server_flow: bool) -> ZoomPacket | None:
    if length < 1 or head[0] != SFU_MEDIA:
        return None
    inner = _inner(head, length, LEGACY_PREFIX_LENGTH)
    if inner is None or not (inner.verified or server_flow):
        return None
    return _packet("legacy", inner, None, None, None)


def _packet(
    layout: Layout,
    inner: _Inner,
    sfu_type: int | None,
    sfu_sequence: int | None,
    direction: Direction | None,
) -> ZoomPacket:
    return ZoomPacket(
        layout=layout,
        sfu_type=sfu_type,
        sfu_sequence=sfu_sequence,
        direction=direction,
        media_type=inner.media_type,
        media_kind=inner.kind,
        zoom_sequence=inner.zoom_sequence,
        zoom_timestamp=inner.zoom_timestamp,
        frame_number=inner.frame_number,
        packets_in_frame=inner.packets_in_frame,
        rtp_offsets=inner.rtp_offsets,
        is_rtcp=inner.is_rtcp,
    )


def _inner(head: bytes, length: int, base: int) -> _Inner | None:
    """The media encapsulation at `base`, unwrapping type 7 (nested header at base+7)."""
    if length <= base:
        return None
    if head[base] != WRAPPER_TYPE:
        return _core(head, length, base)
    nested = _core(head, length, base + NESTED_HEADER_AT)
    return None if nested is None else replace(nested, media_type=WRAPPER_TYPE)


def _core(head: bytes, length: int, base: int) -> _Inner | None:
    if length <= base:
        return None
    media_type = head[base]
    spec = INNER_TYPES.get(media_type)
    if spec is None or media_type == WRAPPER_TYPE:
        return None
    if media_type in OPAQUE_TYPES:
        return _Inner(media_type, spec.kind, verified=False)
    reader = _CORE_READERS.get(media_type, _rtp_type)
    return reader(head, length, base)


def _rtp_type(head: bytes, length: int, base: int) -> _Inner | None:
    """Types 1, 15, 30: RTP at a fixed offset; types 33-35: RTCP at base+16."""
    spec = INNER_TYPES[head[base]]
    if spec.rtcp_at is not None:
        at = base + spec.rtcp_at
        return _Inner(head[base], "rtcp", True, (at,), True) if _rtcp_ok(head, length, at) else None
    assert spec.rtp_at is not None
    at = base + spec.rtp_at
    if not _rtp_ok(head, length, at):
        return None
    kind: MediaKind = "fec" if _payload_type(head, at) == FEC_PAYLOAD_TYPE else spec.kind
    sequence, timestamp = _zoom_clock(head, base)
    return _Inner(head[base], kind, True, (at,), False, sequence, timestamp)


def _video(head: bytes, length: int, base: int) -> _Inner | None:
    """Type 16: RTP at +24 after frame fields when I[20] == 2, else at +20; maybe a second RTP."""
    framed = length > base + VIDEO_FRAME_FLAG_AT and head[base + VIDEO_FRAME_FLAG_AT] == 2
    at = base + VIDEO_RTP_AT[framed]
    if not _rtp_ok(head, length, at):
        return None
    second = _second_rtp(head, length, base, at) if framed else None
    fec = _payload_type(head, at) == FEC_PAYLOAD_TYPE and second is None
    offsets = (at,) if second is None else (at, second)
    sequence, timestamp = _zoom_clock(head, base)
    frame = _U16.unpack_from(head, base + FRAME_NUMBER_AT)[0] if framed else None
    count = head[base + PACKETS_IN_FRAME_AT] if framed else None
    kind: MediaKind = "fec" if fec else "video"
    return _Inner(VIDEO_TYPE, kind, True, offsets, False, sequence, timestamp, frame, count)


def _second_rtp(head: bytes, length: int, base: int, first: int) -> int | None:
    """§1.8: a 31-byte FEC RTP packet then a second header (seen as 0x90) at I+55."""
    at = base + SECOND_RTP_AT
    if at >= HEAD_BYTES or _payload_type(head, first) != FEC_PAYLOAD_TYPE:
        return None
    if length < at + 16 or head[at] != SECOND_RTP_FIRST_BYTE:
        return None
    return at


def _server_screen(head: bytes, length: int, base: int) -> _Inner | None:
    """Type 13: a type-30 header nested at I+7 when I[7] == 0x1e, otherwise opaque."""
    nested_at = base + NESTED_HEADER_AT
    if length <= nested_at or head[nested_at] != P2P_SCREEN_TYPE:
        return _Inner(SERVER_SCREEN_TYPE, "unknown", verified=False)
    nested = _rtp_type(head, length, nested_at)
    return None if nested is None else replace(nested, media_type=SERVER_SCREEN_TYPE)


def _filler(head: bytes, length: int, base: int) -> _Inner:
    """Type 21: a bandwidth-probe filler when I[22..23] == 0x03E8, otherwise opaque."""
    at = base + FILLER_MARKER_AT
    if length < at + 2 or _U16.unpack_from(head, at)[0] != FILLER_MARKER:
        return _Inner(FILLER_TYPE, "unknown", verified=False)
    sequence = _U16.unpack_from(head, base + FILLER_SEQUENCE_AT)[0]
    return _Inner(FILLER_TYPE, "probe", True, zoom_sequence=sequence)


def _setup(head: bytes, length: int, base: int) -> _Inner | None:
    """Type 31: prefix, lengths of the IP text and the UUID adding up to the packet length."""
    ip_length_at = base + SETUP_IP_LENGTH_AT
    if length < base + SETUP_FIXED_LENGTH or head[base : base + 3] != SETUP_PREFIX:
        return None
    ip_length = _U32.unpack_from(head, ip_length_at)[0]
    uuid_length_at = ip_length_at + 4 + ip_length
    if ip_length == 0 or uuid_length_at + 4 > min(HEAD_BYTES, length):
        return None
    uuid_length = _U32.unpack_from(head, uuid_length_at)[0]
    if length != base + SETUP_FIXED_LENGTH + ip_length + uuid_length:
        return None
    return _Inner(SETUP_TYPE, "setup", True)


_CORE_READERS = {
    VIDEO_TYPE: _video,
    SERVER_SCREEN_TYPE: _server_screen,
    FILLER_TYPE: _filler,
    SETUP_TYPE: _setup,
}


def _zoom_clock(head: bytes, base: int) -> tuple[int, int]:
    sequence = _U16.unpack_from(head, base + ZOOM_SEQUENCE_AT)[0]
    return sequence, _U32.unpack_from(head, base + ZOOM_TIMESTAMP_AT)[0]


def _payload_type(head: bytes, at: int) -> int:
    return head[at + 1] & 0x7F


def _rtp_ok(head: bytes, length: int, at: int) -> bool:
    """RTP at `at`: V=2, CC=0, PT static (0-34) or dynamic (96-127), RFC 8285 extension fits."""
    if length < at + 12 or head[at] & 0xCF != 0x80:
        return False
    payload_type = _payload_type(head, at)
    if RTP_STATIC_PT_MAX < payload_type < RTP_DYNAMIC_PT_MIN:
        return False
    if not head[at] & 0x10:
        return True
    if length < at + 16:
        return False
    profile, words = struct.unpack_from("!HH", head, at + 12)
    rfc8285 = profile == ONE_BYTE_PROFILE or profile & TWO_BYTE_PROFILE_MASK == TWO_BYTE_PROFILE
    return rfc8285 and length >= at + 16 + 4 * words


def _rtcp_ok(head: bytes, length: int, at: int) -> bool:
    """RTCP at `at`: V=2, PT 200-207, and the first packet's length inside the payload."""
    if length < at + 8 or head[at] >> 6 != 2 or head[at + 1] not in RTCP_TYPES:
        return False
    return at + 4 * (_U16.unpack_from(head, at + 2)[0] + 1) <= length


# ---------------------------------------------------------------------------------------------
# Columnar fast path: the same rules, evaluated for all rows at once (in C when the extension is
# in use: analyzer/_speedups.c `zoom_classify`, held to this numpy code by the tests).

LAYOUT_CODES: tuple[Layout | None, ...] = (None, "sfu", "p2p", "legacy")
DIRECTION_CODES: tuple[Direction | None, ...] = (None, "to-server", "from-server")


@dataclass(frozen=True, slots=True)
class ZoomColumns:
    """Per-row results; codes index LAYOUT_CODES, MEDIA_KINDS and DIRECTION_CODES.

    Rows that are not valid have layout 0, media_type -1, media_kind -1, direction 0 and
    offsets -1. SFU control rows have media_type -1 and kind "setup".
    """

    valid: np.ndarray
    layout: np.ndarray
    media_type: np.ndarray
    media_kind: np.ndarray
    direction: np.ndarray
    rtp_offset: np.ndarray
    second_rtp_offset: np.ndarray
    is_rtcp: np.ndarray


@dataclass(slots=True)
class _Cols:
    """Mutable per-row accumulator for one layout candidate."""

    ok: np.ndarray
    verified: np.ndarray
    media_type: np.ndarray
    kind: np.ndarray
    rtp: np.ndarray
    second: np.ndarray
    rtcp: np.ndarray

    @classmethod
    def empty(cls, rows: int) -> _Cols:
        return cls(
            ok=np.zeros(rows, bool),
            verified=np.zeros(rows, bool),
            media_type=np.full(rows, -1, np.int16),
            kind=np.full(rows, -1, np.int8),
            rtp=np.full(rows, -1, np.int64),
            second=np.full(rows, -1, np.int64),
            rtcp=np.zeros(rows, bool),
        )

    def take(self, rows: np.ndarray, other: _Cols) -> None:
        """Overwrite `rows` with the values of `other`."""
        for name in self.__slots__:
            getattr(self, name)[rows] = getattr(other, name)[rows]

    def set(self, rows: np.ndarray, kind: MediaKind | np.ndarray, verified: bool,
            rtp: int = -1) -> None:  # fmt: skip
        """Mark `rows` valid with this kind (a name, or per-row codes) and RTP/RTCP offset."""
        self.ok |= rows
        self.verified[rows] = verified
        self.kind[rows] = np.broadcast_to(_kind_code(kind), rows.shape)[rows]
        self.rtp[rows] = rtp


def _kind_code(kind: MediaKind | np.ndarray) -> np.ndarray:
    if isinstance(kind, np.ndarray):
        return kind
    return np.array(MEDIA_KINDS.index(kind), np.int8)


def zoom_columns(head: np.ndarray, length: np.ndarray, server_flow: np.ndarray) -> ZoomColumns:
    """Vectorized `parse_zoom` over an (N, K>=64) zero-padded byte matrix."""
    head = np.asarray(head, dtype=np.uint8)
    if head.ndim != 2 or head.shape[1] < HEAD_BYTES:
        raise ValueError(f"expected an (N, K>={HEAD_BYTES}) byte matrix")
    length = np.asarray(length, dtype=np.int64)
    server_flow = np.asarray(server_flow, dtype=bool)
    if speedups.enabled() and length.shape == server_flow.shape == head.shape[:1]:
        return ZoomColumns(**speedups.zoom_classify(head, length, server_flow))
    head = head[:, :HEAD_BYTES]
    sfu, sfu_direction = _sfu_cols(head, length, server_flow)
    p2p = _inner_cols(head, length, 0)
    p2p.ok &= p2p.verified
    legacy = _inner_cols(head, length, LEGACY_PREFIX_LENGTH)
    legacy.ok &= (head[:, 0] == SFU_MEDIA) & (legacy.verified | server_flow)
    return _choose(sfu, sfu_direction, p2p, legacy, server_flow)


def _choose(sfu: _Cols, sfu_direction: np.ndarray, p2p: _Cols, legacy: _Cols,
            server_flow: np.ndarray) -> ZoomColumns:  # fmt: skip
    """Per row: SFU, P2P, legacy on server flows; P2P, SFU, legacy otherwise."""
    pick_sfu = sfu.ok & (server_flow | ~p2p.ok)
    pick_p2p = p2p.ok & ~pick_sfu
    pick_legacy = legacy.ok & ~pick_sfu & ~pick_p2p
    result = _Cols.empty(len(server_flow))
    layout = np.zeros(len(server_flow), np.int8)
    for code, (picked, candidate) in enumerate(
        ((pick_sfu, sfu), (pick_p2p, p2p), (pick_legacy, legacy)), start=1
    ):
        result.take(picked, candidate)
        layout[picked] = code
    return ZoomColumns(
        valid=result.ok,
        layout=layout,
        media_type=result.media_type,
        media_kind=result.kind,
        direction=np.where(pick_sfu, sfu_direction, 0).astype(np.int8),
        rtp_offset=result.rtp,
        second_rtp_offset=result.second,
        is_rtcp=result.rtcp,
    )


def _sfu_cols(head: np.ndarray, length: np.ndarray,
              server_flow: np.ndarray) -> tuple[_Cols, np.ndarray]:  # fmt: skip
    media = _inner_cols(head, length, SFU_HEADER_LENGTH)
    direction_byte = head[:, 7]
    to_server = (direction_byte == 0x00) | (direction_byte == 0x01)
    from_server = (direction_byte == 0x04) | (direction_byte == 0x05)
    media.ok &= (head[:, 0] == SFU_MEDIA) & (length > SFU_HEADER_LENGTH) & (to_server | from_server)
    direction = np.where(to_server, 1, np.where(from_server, 2, 0)).astype(np.int8)
    control = server_flow & (length >= 1) & _control_cols(head, length)
    plain = _Cols.empty(len(length))
    plain.set(control, "setup", False)
    media.take(control, plain)
    return media, np.where(control, 0, direction).astype(np.int8)


def _control_cols(head: np.ndarray, length: np.ndarray) -> np.ndarray:
    kind, second, third = head[:, 0], head[:, 1], head[:, 2]
    handshake = ((kind == 1) | (kind == 2)) & (length >= 19) & (second == 0)
    handshake &= (third >= 1) & (third <= 3)
    keepalive = ((kind == 3) | (kind == 4)) & (length >= 13) & (second == 0) & (third == 0)
    attributes = (kind == WRAPPER_TYPE) & (length >= 10) & (second == 0)
    return handshake | keepalive | attributes


def _inner_cols(head: np.ndarray, length: np.ndarray, base: int) -> _Cols:
    core = _core_cols(head, length, base)
    nested = _core_cols(head, length, base + NESTED_HEADER_AT)
    wrapped = (length > base) & (head[:, base] == WRAPPER_TYPE)
    core.ok &= ~wrapped
    nested.ok &= wrapped
    nested.media_type[:] = WRAPPER_TYPE
    core.take(nested.ok, nested)
    return core


def _core_cols(head: np.ndarray, length: np.ndarray, base: int) -> _Cols:
    cols = _Cols.empty(len(length))
    present = length > base
    media_type = np.where(present, head[:, base], -1)
    for code in RTP_TYPES:
        _rtp_type_cols(cols, head, length, base, present & (media_type == code), code)
    for code in RTCP_MEDIA_TYPES:
        _rtcp_type_cols(cols, head, length, base, present & (media_type == code))
    _video_cols(cols, head, length, base, present & (media_type == VIDEO_TYPE))
    _server_screen_cols(cols, head, length, base, present & (media_type == SERVER_SCREEN_TYPE))
    _filler_cols(cols, head, length, base, present & (media_type == FILLER_TYPE))
    _setup_cols(cols, head, length, base, present & (media_type == SETUP_TYPE))
    for code in OPAQUE_TYPES:
        cols.set(present & (media_type == code), INNER_TYPES[code].kind, False)
    cols.media_type[cols.ok] = media_type[cols.ok]
    return cols


def _rtp_kind(head: np.ndarray, at: int, kind: MediaKind) -> np.ndarray:
    fec = (head[:, at + 1] & 0x7F) == FEC_PAYLOAD_TYPE
    return np.where(fec, MEDIA_KINDS.index("fec"), MEDIA_KINDS.index(kind)).astype(np.int8)


def _rtp_type_cols(cols: _Cols, head: np.ndarray, length: np.ndarray, base: int,
                   rows: np.ndarray, media_type: int) -> None:  # fmt: skip
    spec = INNER_TYPES[media_type]
    assert spec.rtp_at is not None
    at = base + spec.rtp_at
    cols.set(rows & _rtp_ok_cols(head, length, at), _rtp_kind(head, at, spec.kind), True, at)


def _rtcp_type_cols(cols: _Cols, head: np.ndarray, length: np.ndarray, base: int,
                    rows: np.ndarray) -> None:  # fmt: skip
    at = base + RTCP_AT
    ok = rows & _rtcp_ok_cols(head, length, at)
    cols.set(ok, "rtcp", True, at)
    cols.rtcp |= ok


def _video_cols(cols: _Cols, head: np.ndarray, length: np.ndarray, base: int,
                rows: np.ndarray) -> None:  # fmt: skip
    framed = (length > base + VIDEO_FRAME_FLAG_AT) & (head[:, base + VIDEO_FRAME_FLAG_AT] == 2)
    for with_frame, rtp_at in ((False, VIDEO_RTP_AT[0]), (True, VIDEO_RTP_AT[1])):
        at = base + rtp_at
        ok = rows & (framed == with_frame) & _rtp_ok_cols(head, length, at)
        second = _second_rtp_cols(head, length, base, at) & ok if with_frame else np.zeros_like(ok)
        fec = ((head[:, at + 1] & 0x7F) == FEC_PAYLOAD_TYPE) & ~second
        kind = np.where(fec, MEDIA_KINDS.index("fec"), MEDIA_KINDS.index("video")).astype(np.int8)
        cols.set(ok, kind, True, at)
        cols.second[second] = base + SECOND_RTP_AT


def _second_rtp_cols(head: np.ndarray, length: np.ndarray, base: int, first: int) -> np.ndarray:
    at = base + SECOND_RTP_AT
    if at >= HEAD_BYTES:
        return np.zeros(len(length), bool)
    fec = (head[:, first + 1] & 0x7F) == FEC_PAYLOAD_TYPE
    return fec & (length >= at + 16) & (head[:, at] == SECOND_RTP_FIRST_BYTE)


def _server_screen_cols(cols: _Cols, head: np.ndarray, length: np.ndarray, base: int,
                        rows: np.ndarray) -> None:  # fmt: skip
    nested_at = base + NESTED_HEADER_AT
    nested = (length > nested_at) & (head[:, nested_at] == P2P_SCREEN_TYPE)
    cols.set(rows & ~nested, "unknown", False)
    at = nested_at + P2P_SCREEN_RTP_AT
    ok = rows & nested & _rtp_ok_cols(head, length, at)
    cols.set(ok, _rtp_kind(head, at, "screen"), True, at)


def _filler_cols(cols: _Cols, head: np.ndarray, length: np.ndarray, base: int,
                 rows: np.ndarray) -> None:  # fmt: skip
    at = base + FILLER_MARKER_AT
    marker = (length >= at + 2) & (be_uint(head, at, 2) == FILLER_MARKER)
    cols.set(rows & marker, "probe", True)
    cols.set(rows & ~marker, "unknown", False)


def _setup_cols(cols: _Cols, head: np.ndarray, length: np.ndarray, base: int,
                rows: np.ndarray) -> None:  # fmt: skip
    prefix = np.all(head[:, base : base + 3] == np.frombuffer(SETUP_PREFIX, np.uint8), axis=1)
    ip_length_at = base + SETUP_IP_LENGTH_AT
    ip_length = be_uint(head, ip_length_at, 4)
    uuid_length_at = ip_length_at + 4 + ip_length
    fits = (ip_length > 0) & (uuid_length_at + 4 <= HEAD_BYTES)
    uuid_length = _gather_be32(head, np.where(fits, uuid_length_at, 0))
    total = base + SETUP_FIXED_LENGTH + ip_length + uuid_length
    ok = rows & (length >= base + SETUP_FIXED_LENGTH) & prefix & fits & (length == total)
    cols.set(ok, "setup", True)


def _rtp_ok_cols(head: np.ndarray, length: np.ndarray, at: int) -> np.ndarray:
    first = head[:, at]
    payload_type = head[:, at + 1] & 0x7F
    ok = (length >= at + 12) & ((first & 0xCF) == 0x80)
    ok &= (payload_type <= RTP_STATIC_PT_MAX) | (payload_type >= RTP_DYNAMIC_PT_MIN)
    profile, words = be_uint(head, at + 12, 2), be_uint(head, at + 14, 2)
    two_byte = (profile & TWO_BYTE_PROFILE_MASK) == TWO_BYTE_PROFILE
    rfc8285 = (profile == ONE_BYTE_PROFILE) | two_byte
    extension_ok = (length >= at + 16) & rfc8285 & (length >= at + 16 + 4 * words)
    return ok & (((first & 0x10) == 0) | extension_ok)


def _rtcp_ok_cols(head: np.ndarray, length: np.ndarray, at: int) -> np.ndarray:
    second = head[:, at + 1]
    ok = (length >= at + 8) & ((head[:, at] >> 6) == 2)
    ok &= (second >= RTCP_TYPES.start) & (second < RTCP_TYPES.stop)
    return ok & (at + 4 * (be_uint(head, at + 2, 2) + 1) <= length)


def _gather_be32(head: np.ndarray, columns: np.ndarray) -> np.ndarray:
    rows = np.arange(head.shape[0])
    value = np.zeros(head.shape[0], dtype=np.int64)
    for byte in range(4):
        value = (value << 8) | head[rows, columns + byte]
    return value
