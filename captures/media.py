"""Media timing: when RTP packets are sent, when they reach the capture point, and the RTCP
statistics a sender and a receiver would report about them."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from captures.wire import ReportBlock


@dataclass(frozen=True, slots=True)
class RtpStream:
    """Static parameters of one RTP stream."""

    ssrc: int
    payload_type: int
    clock_rate: int
    media: str
    seq0: int
    ts0: int


@dataclass(frozen=True, slots=True)
class MediaPacket:
    send_us: int
    seq: int
    ts: int
    marker: bool
    size: int
    frame_no: int
    pkts_in_frame: int
    index_in_frame: int


def _ticks(stream: RtpStream, elapsed_us: int) -> int:
    return stream.ts0 + elapsed_us * stream.clock_rate // 1_000_000


def audio_packets(rng: random.Random, stream: RtpStream, start_us: int, end_us: int,
                  sizes: tuple[int, int], ptime_us: int = 20_000) -> list[MediaPacket]:
    """One packet every ptime; the timestamp advances by exactly ptime worth of samples."""
    out = []
    for n, t in enumerate(range(start_us, end_us, ptime_us)):
        ts = stream.ts0 + n * ptime_us * stream.clock_rate // 1_000_000
        send = t + rng.randrange(0, 400)  # scheduling noise of the sender
        out.append(MediaPacket(send, (stream.seq0 + n) & 0xFFFF, ts, n == 0,
                               rng.randrange(*sizes), n, 1, 0))
    return out


@dataclass(frozen=True, slots=True)
class VideoShape:
    fps: float
    keyframe_every: int
    key_packets: int
    delta_packets: tuple[int, int]
    packet_size: tuple[int, int]


def video_packets(rng: random.Random, stream: RtpStream, start_us: int, end_us: int,
                  shape: VideoShape) -> list[MediaPacket]:
    """Frames at the given rate, each sent as a burst; the marker is on a frame's last packet."""
    out: list[MediaPacket] = []
    frame_us = int(1_000_000 / shape.fps)
    seq = stream.seq0
    for frame_no, t in enumerate(range(start_us, end_us, frame_us)):
        count = shape.key_packets if frame_no % shape.keyframe_every == 0 else rng.randint(
            *shape.delta_packets)
        ts = _ticks(stream, t - start_us)
        for i in range(count):
            size = rng.randrange(*shape.packet_size) if i == count - 1 else shape.packet_size[1]
            out.append(MediaPacket(t + i * 180, seq & 0xFFFF, ts, i == count - 1, size, frame_no,
                                   count, i))
            seq += 1
    return out


@dataclass(frozen=True, slots=True)
class PathModel:
    """One-way delay to the capture point, jitter, and which packets (by index) are lost or
    arrive after their successor."""

    delay_us: int
    jitter_us: int
    lose: frozenset[int] = frozenset()
    reorder: frozenset[int] = frozenset()


def arrivals(rng: random.Random, packets: list[MediaPacket], path: PathModel
             ) -> list[tuple[int, MediaPacket]]:
    """Arrival times: FIFO (a packet never overtakes by chance), forced swaps, losses removed."""
    times: list[int] = []
    for pkt in packets:
        t = pkt.send_us + path.delay_us + rng.randrange(0, path.jitter_us + 1)
        times.append(max(t, times[-1] + 40) if times else t)
    for i in sorted(path.reorder):
        if i + 1 < len(times):
            times[i], times[i + 1] = times[i + 1] + 350, times[i + 1]
    return [(t, p) for i, (t, p) in enumerate(zip(times, packets, strict=True))
            if i not in path.lose]


@dataclass
class SenderStats:
    packets: int = 0
    octets: int = 0

    def count(self, payload_len: int) -> None:
        self.packets += 1
        self.octets += payload_len


@dataclass
class ReceiverStats:
    """RFC 3550 A.1/A.3/A.8 reception statistics for one source."""

    clock_rate: int
    base: int | None = None
    max_ext: int = 0
    received: int = 0
    jitter: float = 0.0
    last_transit: float | None = None
    expected_prior: int = 0
    received_prior: int = 0
    history: list[int] = field(default_factory=list)

    def update(self, arrival_us: int, seq: int, ts: int) -> None:
        ext = self._extend(seq)
        self.max_ext = max(self.max_ext, ext)
        self.received += 1
        transit = arrival_us * self.clock_rate / 1_000_000 - ts
        if self.last_transit is not None:
            self.jitter += (abs(transit - self.last_transit) - self.jitter) / 16
        self.last_transit = transit

    def _extend(self, seq: int) -> int:
        if self.base is None:
            self.base = self.max_ext = seq
            return seq
        base = self.max_ext - (self.max_ext & 0xFFFF)
        candidates = (base - 0x10000 + seq, base + seq, base + 0x10000 + seq)
        return min(candidates, key=lambda c: abs(c - self.max_ext))

    def report(self, ssrc: int) -> ReportBlock:
        assert self.base is not None
        expected = self.max_ext - self.base + 1
        lost = expected - self.received
        interval_expected = expected - self.expected_prior
        interval_lost = interval_expected - (self.received - self.received_prior)
        self.expected_prior, self.received_prior = expected, self.received
        fraction = (interval_lost << 8) // interval_expected if interval_expected and (
            interval_lost > 0) else 0
        return ReportBlock(ssrc, fraction, lost, self.max_ext & 0xFFFFFFFF, int(self.jitter))


ULAW_BIAS = 0x84
ULAW_CLIP = 32635


def linear_to_ulaw(sample: int) -> int:
    """ITU-T G.711 mu-law encoding of a 16-bit linear sample."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), ULAW_CLIP) + ULAW_BIAS
    exponent = min(max(magnitude.bit_length() - 8, 0), 7)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def pcmu_payload(rng: random.Random, pkt: MediaPacket, talking: bool) -> bytes:
    """160 mu-law samples (20 ms at 8 kHz): a voiced tone with noise, or near-silence."""
    amplitude = 6000 if talking else 40
    base = pkt.seq * 160
    return bytes(linear_to_ulaw(int(amplitude * math.sin(2 * math.pi * 180 * (base + i) / 8000)
                                    + rng.gauss(0, amplitude / 8 + 8))) for i in range(160))
