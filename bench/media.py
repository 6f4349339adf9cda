"""Media-plane byte layouts: RTP (RFC 3550), RTCP, SRTCP (RFC 3711), Zoom encapsulations
(docs: protocols.md §1.3-1.6) and TURN ChannelData (RFC 8656 §12.4).

`AppHeader` templates hold the constant part of a media packet's header; the per-packet fields
(RTP seq/ts/marker, Zoom counters, ChannelData length, H.264 FU start/end bits) sit at the
offsets recorded in the template and are patched per batch.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

RTP_VERSION_BITS = 0x80
RTP_EXTENSION_BIT = 0x10
RTP_HDR = 12
ONE_BYTE_EXTENSION_PROFILE = 0xBEDE  # RFC 8285

# RTP header fields patched per packet, relative to the RTP header.
RTP_MARKER_PT, RTP_SEQ, RTP_TS = 1, 2, 4

# Zoom SFU encapsulation (§1.3): type, sequence, cookie, direction.
ZOOM_SFU = struct.Struct(">BHIB")
ZOOM_SFU_MEDIA = 0x05
ZOOM_TO_SERVER, ZOOM_FROM_SERVER = 0x00, 0x04
# Zoom media encapsulation (§1.4), offsets inside the inner header.
ZOOM_INNER_SEQ, ZOOM_INNER_TS = 9, 11
ZOOM_VIDEO_FRAME_FLAG, ZOOM_VIDEO_FRAME, ZOOM_VIDEO_PACKETS = 20, 21, 23
ZOOM_AUDIO, ZOOM_VIDEO, ZOOM_RTCP_SR_SDES = 0x0F, 0x10, 0x22
ZOOM_INNER_LENGTH = {ZOOM_AUDIO: 19, ZOOM_VIDEO: 24, ZOOM_RTCP_SR_SDES: 16}  # §1.6
ZOOM_INNER_ID = bytes.fromhex("0100fb90000000")  # bytes 1-7, as in the Princeton test vectors

CHANNEL_DATA = struct.Struct(">HH")  # channel number, length
H264_FU_A_INDICATOR = 0x7C  # F=0, NRI=3, type 28
H264_FU_START, H264_FU_END = 0x80, 0x40

RTCP_SR, RTCP_RR, RTCP_SDES = 200, 201, 202
SDES_CNAME = 1
SRTCP_E_FLAG = 0x80000000
SRTP_TAG = 10  # HMAC-SHA1-80
NTP_UNIX_OFFSET = 2_208_988_800


@dataclass(frozen=True, slots=True)
class AppHeader:
    """Constant header bytes above UDP, with the offsets of the per-packet fields (-1: none)."""

    data: bytes
    rtp_at: int
    sfu_at: int = -1
    zoom_video: bool = False
    channel_at: int = -1
    fu_at: int = -1


def rtp_header(pt: int, ssrc: int, extension: bytes = b"") -> bytes:
    """RTP fixed header with seq/ts zero, followed by an RFC 8285 one-byte extension if given."""
    first = RTP_VERSION_BITS | (RTP_EXTENSION_BIT if extension else 0)
    head = struct.pack(">BBHII", first, pt, 0, 0, ssrc)
    if not extension:
        return head
    padded = extension + b"\0" * (-len(extension) % 4)
    return head + struct.pack(">HH", ONE_BYTE_EXTENSION_PROFILE, len(padded) // 4) + padded


def audio_level_extension(ext_id: int = 1, level: int = 40) -> bytes:
    """RFC 6464 audio-level element, the extension WebRTC audio carries."""
    return bytes([(ext_id << 4) | 0, 0x80 | level])


def plain_rtp(pt: int, ssrc: int, extension: bytes = b"") -> AppHeader:
    return AppHeader(rtp_header(pt, ssrc, extension), rtp_at=0)


def h264_rtp(pt: int, ssrc: int) -> AppHeader:
    """RTP + H.264 FU-A indicator and header (RFC 6184 §5.8); S/E bits patched per packet."""
    head = rtp_header(pt, ssrc)
    return AppHeader(head + bytes([H264_FU_A_INDICATOR, 0x01]), rtp_at=0, fu_at=len(head))


def zoom_sfu(cookie: int, to_server: bool) -> bytes:
    direction = ZOOM_TO_SERVER if to_server else ZOOM_FROM_SERVER
    return ZOOM_SFU.pack(ZOOM_SFU_MEDIA, 0, cookie, direction)


def zoom_inner(media_type: int) -> bytes:
    """Zoom media encapsulation header with seq/ts (and video frame fields) zero."""
    inner = bytearray(ZOOM_INNER_LENGTH[media_type])
    inner[0] = media_type
    inner[1:8] = ZOOM_INNER_ID
    if media_type == ZOOM_VIDEO:
        inner[ZOOM_VIDEO_FRAME_FLAG] = 0x02
    return bytes(inner)


def zoom_media(media_type: int, cookie: int, to_server: bool, pt: int, ssrc: int) -> AppHeader:
    """SFU header + media encapsulation + RTP (with a one-byte extension, §1.8)."""
    prefix = zoom_sfu(cookie, to_server) + zoom_inner(media_type)
    rtp = rtp_header(pt, ssrc, bytes([0x10, 0x00]))  # id 1, one byte (cleartext, as observed)
    return AppHeader(prefix + rtp, len(prefix), sfu_at=0, zoom_video=media_type == ZOOM_VIDEO)


def channel_data(channel: int, inner: AppHeader) -> AppHeader:
    """TURN ChannelData header (length patched per packet) in front of `inner`."""
    shift = CHANNEL_DATA.size
    return AppHeader(
        CHANNEL_DATA.pack(channel, 0) + inner.data, inner.rtp_at + shift, channel_at=0
    )


# --- RTCP (built per packet: rare) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportBlock:
    ssrc: int
    fraction_lost: int
    cumulative_lost: int
    highest_seq: int
    jitter: int
    lsr: int
    dlsr: int

    def pack(self) -> bytes:
        lost = (self.fraction_lost << 24) | (self.cumulative_lost & 0xFFFFFF)
        return struct.pack(
            ">IIIIII", self.ssrc, lost, self.highest_seq, self.jitter, self.lsr, self.dlsr
        )


def rtcp_header(count: int, pt: int, body_len: int) -> bytes:
    return struct.pack(">BBH", RTP_VERSION_BITS | count, pt, (body_len + 4) // 4 - 1)


def ntp_timestamp(unix_ns: int) -> tuple[int, int]:
    seconds, rest = divmod(unix_ns, 1_000_000_000)
    return seconds + NTP_UNIX_OFFSET, (rest << 32) // 1_000_000_000


def sender_report(
    ssrc: int, unix_ns: int, rtp_ts: int, packets: int, octets: int, blocks: list[ReportBlock]
) -> bytes:
    ntp_hi, ntp_lo = ntp_timestamp(unix_ns)
    body = struct.pack(">IIIIII", ssrc, ntp_hi, ntp_lo, rtp_ts & 0xFFFFFFFF, packets, octets)
    body += b"".join(b.pack() for b in blocks)
    return rtcp_header(len(blocks), RTCP_SR, len(body)) + body


def receiver_report(ssrc: int, blocks: list[ReportBlock]) -> bytes:
    body = struct.pack(">I", ssrc) + b"".join(b.pack() for b in blocks)
    return rtcp_header(len(blocks), RTCP_RR, len(body)) + body


def sdes_cname(ssrc: int, cname: str) -> bytes:
    text = cname.encode()
    chunk = struct.pack(">IBB", ssrc, SDES_CNAME, len(text)) + text + b"\0"
    chunk += b"\0" * (-len(chunk) % 4)
    return rtcp_header(1, RTCP_SDES, len(chunk)) + chunk


def srtcp(compound: bytes, index: int, random_bytes: bytes) -> bytes:
    """SRTCP: first 8 bytes clear, the rest 'encrypted', then E|index and a 10-byte tag.

    `random_bytes` must hold at least len(compound) - 8 + 10 bytes.
    """
    cipher_len = len(compound) - 8
    trailer = struct.pack(">I", SRTCP_E_FLAG | (index & 0x7FFFFFFF))
    tag = random_bytes[cipher_len : cipher_len + SRTP_TAG]
    return compound[:8] + random_bytes[:cipher_len] + trailer + tag


# --- payload material ----------------------------------------------------------------------


def mu_law(samples: np.ndarray) -> np.ndarray:
    """G.711 mu-law encoding of float samples in [-1, 1] (continuous companding approximation)."""
    mu = 255.0
    clipped = np.clip(samples, -1.0, 1.0)
    companded = np.sign(clipped) * np.log1p(mu * np.abs(clipped)) / np.log1p(mu)
    code = np.round((companded + 1.0) * 127.5).astype(np.int64)
    return (255 - np.clip(code, 0, 255)).astype(np.uint8) ^ 0x80


def speech_like_pcmu(n_bytes: int, rng: np.random.Generator) -> bytes:
    """8 kHz mu-law that looks like speech: a few formants under a syllable envelope (pauses
    between syllables), with a little noise."""
    t = np.arange(n_bytes) / 8000.0
    formants = np.array([180.0, 720.0, 1250.0])[:, None]
    phases = rng.uniform(0, 2 * np.pi, (3, 1))
    tones = np.sin(2 * np.pi * formants * t + phases).sum(axis=0)
    envelope = np.clip(np.sin(2 * np.pi * 3.1 * t), 0.0, None) ** 2
    noise = rng.normal(0.0, 0.01, n_bytes)
    return mu_law(0.25 * envelope * tones + noise).tobytes()
