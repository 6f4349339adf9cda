"""Turns a time-sorted Batch into capture records, vectorized: copy each packet's header template
into a matrix row, patch the per-packet fields and checksums with numpy, then join header rows,
payload slices and (pcapng) trailers into one block of bytes.

Checksums are real (RFC 1071). The payload part of a UDP/TCP checksum comes from prefix sums over
the payload pool, so no payload byte is touched per packet; a header of odd length shifts the
payload by one byte, which turns its contribution into `256 * sum mod 65535`.
"""

from __future__ import annotations

import numpy as np

from bench.batch import Batch
from bench.capfile import RecordFormat
from bench.media import (
    H264_FU_END,
    H264_FU_START,
    RTP_MARKER_PT,
    RTP_SEQ,
    RTP_TS,
    ZOOM_INNER_SEQ,
    ZOOM_INNER_TS,
    ZOOM_SFU,
    ZOOM_VIDEO_FRAME,
    ZOOM_VIDEO_PACKETS,
    speech_like_pcmu,
)
from bench.templates import WIDTH, TemplateTable
from bench.wire import (
    IPV4_CHECKSUM,
    IPV4_HDR,
    IPV4_IDENT,
    IPV4_TOTAL_LENGTH,
    IPV6_HDR,
    IPV6_PAYLOAD_LENGTH,
    TCP_ACK,
    TCP_CHECKSUM,
    TCP_FLAGS,
    TCP_SEQ,
    UDP_CHECKSUM,
    UDP_LENGTH,
)

POOL_RANDOM, POOL_SPEECH = 0, 1  # ciphertext-like bytes; 8 kHz mu-law speech
ZOOM_SFU_SEQ = 1
ONES = 0xFFFF  # the ones-complement modulus is 2**16 - 1


class PayloadPool:
    """Payload bytes that media packets slice from, with prefix sums of their 16-bit words."""

    def __init__(self, rng: np.random.Generator, random_size: int, speech_size: int) -> None:
        self.data = rng.bytes(random_size) + speech_like_pcmu(speech_size, rng)
        self.view = memoryview(self.data)
        self.array = np.frombuffer(self.data, np.uint8)
        words = self.array[0::2].astype(np.int64) * 256 + self.array[1::2]
        self.prefix = np.concatenate([[0], np.cumsum(words)])
        self.base = np.array([0, random_size])
        self.span = np.array([random_size, speech_size])

    def draw(self, region: np.ndarray, length: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Even offsets of random slices of `length` bytes inside each packet's region."""
        room = (self.span[region] - length) // 2
        return self.base[region] + 2 * (rng.random(len(region)) * room).astype(np.int64)

    def sums(self, offset: np.ndarray, length: np.ndarray) -> np.ndarray:
        """ones_sum of each slice (an odd last byte counts as a high byte)."""
        first = offset // 2
        total = self.prefix[first + length // 2] - self.prefix[first]
        odd_tail = self.array[np.minimum(offset + length - 1, len(self.array) - 1)]
        return total + np.where(length % 2 == 1, odd_tail.astype(np.int64) * 256, 0)


def put_u16(out: np.ndarray, rows: np.ndarray, cols: np.ndarray, values: np.ndarray) -> None:
    out[rows, cols] = (values >> 8) & 0xFF
    out[rows, cols + 1] = values & 0xFF


def put_u32(out: np.ndarray, rows: np.ndarray, cols: np.ndarray, values: np.ndarray) -> None:
    put_u16(out, rows, cols, (values >> 16) & 0xFFFF)
    put_u16(out, rows, cols + 2, values & 0xFFFF)


def fold(total: np.ndarray) -> np.ndarray:
    """Ones-complement fold of positive sums into [1, 0xFFFF]."""
    folded = total % ONES
    return np.where(folded == 0, ONES, folded)


class Packets:
    """One batch being assembled: the header matrix and per-packet gathered template metadata."""

    def __init__(self, batch: Batch, templates: TemplateTable, prefix_len: int) -> None:
        self.batch = batch
        self.n = len(batch)
        self.meta = {name: column[batch.tpl] for name, column in templates.meta.items()}
        self.rows = np.arange(self.n)
        self.prefix = prefix_len
        self.frame_len = self.meta["length"] + batch.payload_len
        self.matrix = np.zeros((self.n, prefix_len + WIDTH), np.uint8)
        self.matrix[:, prefix_len:] = templates.rows[batch.tpl]

    def col(self, name: str) -> np.ndarray:
        """Matrix column of a template offset."""
        return self.prefix + self.meta[name]

    def where(self, mask: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return self.rows[mask], {k: v[mask] for k, v in self.meta.items()}


class Assembler:
    def __init__(
        self, templates: TemplateTable, pool: PayloadPool, fmt: RecordFormat, epoch_ns: int
    ) -> None:
        self.templates, self.pool, self.fmt, self.epoch_ns = templates, pool, fmt, epoch_ns

    def assemble(self, batch: Batch, rng: np.random.Generator) -> bytes:
        p = Packets(batch, self.templates, self.fmt.prefix_len)
        media = ~batch.is_event
        offsets = self.pool.draw(p.meta["pool"], np.where(media, batch.payload_len, 0), rng)
        payload_sum = np.where(media, self.pool.sums(offsets, batch.payload_len), batch.payload_sum)
        patch_network(p, rng)
        patch_transport(p)
        patch_media(p, media)
        patch_checksums(p, payload_sum)
        self.fmt.fill_prefix(p.matrix, batch.time_ns + self.epoch_ns, p.frame_len, p.meta["iface"])
        return self._join(p, offsets)

    def _join(self, p: Packets, offsets: np.ndarray) -> bytes:
        width = p.matrix.shape[1]
        heads = p.matrix.tobytes()
        starts = np.arange(p.n) * width
        head_end = (starts + p.prefix + p.meta["length"]).tolist()
        pieces: list[list[bytes | memoryview]] = [
            [heads[a:b] for a, b in zip(starts.tolist(), head_end, strict=True)],
            [self.pool.view[a:b] for a, b in zip(
                offsets.tolist(), (offsets + p.batch.payload_len).tolist(), strict=True
            )],
        ]
        for i in np.flatnonzero(p.batch.is_event).tolist():
            pieces[1][i] = p.batch.payload[i]
        trailers = self.fmt.trailers(p.frame_len)
        if trailers is not None:
            table, t_start, t_end = trailers
            pieces.append([table[a:b] for a, b in zip(t_start, t_end, strict=True)])
        interleaved: list[bytes | memoryview] = [b""] * (p.n * len(pieces))
        for k, column in enumerate(pieces):
            interleaved[k :: len(pieces)] = column
        return b"".join(interleaved)


def patch_network(p: Packets, rng: np.random.Generator) -> None:
    """IPv4 total length, identification and header checksum; IPv6 payload length."""
    ip_len = p.frame_len - p.meta["ip_off"]
    v6 = p.meta["is_v6"]
    ip = p.col("ip_off")
    put_u16(p.matrix, p.rows[v6], ip[v6] + IPV6_PAYLOAD_LENGTH, ip_len[v6] - IPV6_HDR)
    v4 = ~v6
    rows, cols = p.rows[v4], ip[v4]
    put_u16(p.matrix, rows, cols + IPV4_TOTAL_LENGTH, ip_len[v4])
    put_u16(p.matrix, rows, cols + IPV4_IDENT, rng.integers(0, 1 << 16, len(rows)))
    header = p.matrix[rows[:, None], cols[:, None] + np.arange(IPV4_HDR)].astype(np.int64)
    total = header[:, 0::2].sum(axis=1) * 256 + header[:, 1::2].sum(axis=1)
    put_u16(p.matrix, rows, cols + IPV4_CHECKSUM, ONES - fold(total))


def patch_transport(p: Packets) -> None:
    """UDP length; TCP sequence, acknowledgement and flags."""
    l4_len = p.frame_len - p.meta["l4_off"]
    l4 = p.col("l4_off")
    tcp = p.meta["is_tcp"]
    udp = ~tcp
    put_u16(p.matrix, p.rows[udp], l4[udp] + UDP_LENGTH, l4_len[udp])
    rows, cols = p.rows[tcp], l4[tcp]
    put_u32(p.matrix, rows, cols + TCP_SEQ, p.batch.tcp_seq[tcp] & 0xFFFFFFFF)
    put_u32(p.matrix, rows, cols + TCP_ACK, p.batch.tcp_ack[tcp] & 0xFFFFFFFF)
    p.matrix[rows, cols + TCP_FLAGS] = p.batch.tcp_flags[tcp]


def patch_media(p: Packets, media: np.ndarray) -> None:
    patch_rtp(p, media & (p.meta["rtp_at"] >= 0))
    patch_zoom(p, media & (p.meta["sfu_at"] >= 0))
    rows, meta = p.where(media & (p.meta["channel_at"] >= 0))
    length = p.frame_len[rows] - meta["channel_at"] - 4
    put_u16(p.matrix, rows, p.prefix + meta["channel_at"] + 2, length)
    rows, meta = p.where(media & (p.meta["fu_at"] >= 0))
    bits = np.where(p.batch.first[rows], H264_FU_START, 0) | np.where(
        p.batch.marker[rows], H264_FU_END, 0
    )
    p.matrix[rows, p.prefix + meta["fu_at"]] |= bits.astype(np.uint8)


def patch_rtp(p: Packets, mask: np.ndarray) -> None:
    rows, meta = p.where(mask)
    at = p.prefix + meta["rtp_at"]
    b = p.batch
    p.matrix[rows, at + RTP_MARKER_PT] |= (b.marker[rows].astype(np.uint8) << 7)
    put_u16(p.matrix, rows, at + RTP_SEQ, b.seq[rows] & 0xFFFF)
    put_u32(p.matrix, rows, at + RTP_TS, b.rtp_ts[rows] & 0xFFFFFFFF)


def patch_zoom(p: Packets, mask: np.ndarray) -> None:
    """SFU sequence, media-encapsulation sequence and timestamp, video frame number and size."""
    rows, meta = p.where(mask)
    sfu = p.prefix + meta["sfu_at"]
    inner = sfu + ZOOM_SFU.size
    b = p.batch
    counter = b.pkt_no[rows] & 0xFFFF
    put_u16(p.matrix, rows, sfu + ZOOM_SFU_SEQ, counter)
    put_u16(p.matrix, rows, inner + ZOOM_INNER_SEQ, counter)
    put_u32(p.matrix, rows, inner + ZOOM_INNER_TS, (b.frame_ns[rows] // 1_000_000) & 0xFFFFFFFF)
    video = meta["zoom_video"]
    rows, inner = rows[video], inner[video]
    put_u16(p.matrix, rows, inner + ZOOM_VIDEO_FRAME, b.frame[rows] & 0xFFFF)
    p.matrix[rows, inner + ZOOM_VIDEO_PACKETS] = np.minimum(b.frame_pkts[rows], 255)


def patch_checksums(p: Packets, payload_sum: np.ndarray) -> None:
    """UDP and TCP checksums over pseudo-header, headers above IP, and payload."""
    l4 = p.col("l4_off")
    head_end = p.prefix + p.meta["length"]
    first = int(l4.min(initial=0)) & ~1  # keep high bytes on even columns
    cols = np.arange(first, p.matrix.shape[1])
    inside = (cols >= l4[:, None]) & (cols < head_end[:, None])
    words = p.matrix[:, first:].astype(np.int32) * inside
    header_sum = words[:, 0::2].sum(axis=1, dtype=np.int64) * 256 + words[:, 1::2].sum(axis=1)
    shifted = (p.meta["length"] - p.meta["l4_off"]) % 2 == 1
    payload = np.where(shifted, (payload_sum % ONES) * 256, payload_sum)
    l4_len = p.frame_len - p.meta["l4_off"]
    checksum = ONES - fold(p.meta["pseudo_sum"] + l4_len + header_sum + payload)
    tcp = p.meta["is_tcp"]
    checksum = np.where(~tcp & (checksum == 0), ONES, checksum)  # UDP: 0 means "none"
    put_u16(p.matrix, p.rows, l4 + np.where(tcp, TCP_CHECKSUM, UDP_CHECKSUM), checksum)
