"""Media streams as table columns, and the vectorized packet generator that advances them.

Every stream sends frames at a fixed interval (audio: one packet per 20 ms frame; video: a burst
of packets per frame, more on key frames). One call of `MediaTable.generate` produces all media
packets of all live streams whose frames fall in a time window, with loss, arrival jitter and
occasional reordering, and advances the streams' state.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from bench.batch import Batch

LOSS_RATE = 0.005
REORDER_RATE = 0.001
KEY_FRAME_FACTOR = 4.0  # a key frame has about this many times the packets of a delta frame
MAX_FRAME_PACKETS = 80
PACKET_JITTER_NS = 30_000  # per-packet jitter on top of the per-frame network delay


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """One RTP stream (one SSRC in one direction) and its sending pattern."""

    tpl: int
    label: int
    next_ns: int  # nominal time of the first frame
    end_ns: int
    interval_ns: int  # between frames
    ts_step: int  # RTP clock ticks per frame
    mean_pkts: float = 1.0  # packets per delta frame; 1.0 means audio
    key_every: int = 0  # frames between key frames (0: none)
    len_lo: int = 160  # payload bytes of a full packet
    len_hi: int = 160
    pacing_ns: int = 0  # between the packets of one frame
    jitter_ns: int = 2_000_000  # mean extra network delay of a frame
    seq: int = 0  # next RTP sequence number (unwrapped)
    ts0: int = 0  # RTP timestamp of frame 0
    frame: int = 0  # index of the next frame
    pkt_no: int = 0  # packets sent so far


FIELDS = tuple(StreamSpec.__dataclass_fields__)
FLOAT_FIELDS = {"mean_pkts"}


class MediaTable:
    """All live streams, one numpy column per StreamSpec field."""

    def __init__(self) -> None:
        self.cols: dict[str, np.ndarray] = {name: np.zeros(0, self._dtype(name)) for name in FIELDS}

    @staticmethod
    def _dtype(name: str) -> type:
        return np.float64 if name in FLOAT_FIELDS else np.int64

    def __len__(self) -> int:
        return len(self.cols["tpl"])

    def add(self, specs: list[StreamSpec]) -> None:
        rows = [asdict(s) for s in specs]
        for name in FIELDS:
            new: np.ndarray = np.array([r[name] for r in rows], self._dtype(name))
            self.cols[name] = np.concatenate([self.cols[name], new])

    def drop_finished(self) -> None:
        keep = self.cols["next_ns"] < self.cols["end_ns"]
        self.cols = {name: col[keep] for name, col in self.cols.items()}

    def generate(self, t0: int, t1: int, rng: np.random.Generator) -> Batch:
        """Media packets of the frames whose nominal time is in [t0, t1), and advance state."""
        c = self.cols
        frames = frame_counts(c["next_ns"], np.minimum(c["end_ns"], t1), c["interval_ns"])
        f_stream, f_index = expand(frames)
        packets = packets_per_frame(f_stream, c["frame"][f_stream] + f_index, c, rng)
        batch = self._packets(f_stream, f_index, packets, rng)
        self._advance(frames, np.bincount(f_stream, packets, len(frames)).astype(np.int64))
        return batch.take(np.flatnonzero(rng.random(len(batch)) >= LOSS_RATE))

    def _packets(
        self, f_stream: np.ndarray, f_index: np.ndarray, packets: np.ndarray,
        rng: np.random.Generator,
    ) -> Batch:
        c = self.cols
        p_frame, p_in_frame = expand(packets)
        stream = f_stream[p_frame]
        frame = c["frame"][stream] + f_index[p_frame]
        rank = rank_in_group(stream, len(c["tpl"]))
        frame_ns = c["next_ns"][stream] + f_index[p_frame] * c["interval_ns"][stream]
        last = p_in_frame == packets[p_frame] - 1
        frame_delay = network_delay(c["jitter_ns"][f_stream], rng)[p_frame]
        return Batch.build(
            len(stream),
            time_ns=arrival_times(frame_ns, p_in_frame, last, stream, c, rng) + frame_delay,
            tpl=c["tpl"][stream], label=c["label"][stream],
            seq=c["seq"][stream] + rank, pkt_no=c["pkt_no"][stream] + rank,
            rtp_ts=c["ts0"][stream] + frame * c["ts_step"][stream],
            frame=frame, frame_ns=frame_ns, frame_pkts=packets[p_frame],
            first=p_in_frame == 0, marker=last & (c["mean_pkts"][stream] > 1.0),
            payload_len=payload_lengths(stream, last, c, rng),
        )

    def _advance(self, frames: np.ndarray, packets: np.ndarray) -> None:
        c = self.cols
        c["next_ns"] += frames * c["interval_ns"]
        c["frame"] += frames
        c["seq"] += packets
        c["pkt_no"] += packets


def frame_counts(next_ns: np.ndarray, stop_ns: np.ndarray, interval: np.ndarray) -> np.ndarray:
    """How many frames each stream sends at or after next_ns and before stop_ns."""
    span = np.maximum(stop_ns - next_ns, 0)
    return (span + interval - 1) // interval


def expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For counts [2, 0, 3]: owners [0, 0, 2, 2, 2] and positions [0, 1, 0, 1, 2]."""
    owners = np.repeat(np.arange(len(counts)), counts)
    starts = np.cumsum(counts) - counts
    return owners, np.arange(len(owners)) - starts[owners]


def rank_in_group(owner: np.ndarray, n_groups: int) -> np.ndarray:
    """Position of each element among those with the same owner (owners sorted ascending)."""
    counts = np.bincount(owner, minlength=n_groups)
    return np.arange(len(owner)) - (np.cumsum(counts) - counts)[owner]


def packets_per_frame(
    stream: np.ndarray, frame: np.ndarray, c: dict[str, np.ndarray], rng: np.random.Generator
) -> np.ndarray:
    mean = c["mean_pkts"][stream]
    key_every = c["key_every"][stream]
    is_key = (key_every > 0) & (frame % np.maximum(key_every, 1) == 0)
    extra = np.where(is_key, mean * KEY_FRAME_FACTOR, mean - 1.0)
    packets = 1 + rng.poisson(np.maximum(extra, 0.0))
    return np.where(mean > 1.0, np.minimum(packets, MAX_FRAME_PACKETS), 1).astype(np.int64)


def payload_lengths(
    stream: np.ndarray, last: np.ndarray, c: dict[str, np.ndarray], rng: np.random.Generator
) -> np.ndarray:
    """Full packets: uniform in [len_lo, len_hi]; a video frame's last packet: anything up to hi."""
    lo, hi = c["len_lo"][stream], c["len_hi"][stream]
    lo = np.where(last & (c["mean_pkts"][stream] > 1.0), lo // 5, lo)
    return lo + (rng.random(len(stream)) * (hi - lo + 1)).astype(np.int64)


def network_delay(mean_ns: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Extra one-way delay of each frame (exponential: mostly small, occasionally large)."""
    return (rng.exponential(1.0, len(mean_ns)) * mean_ns).astype(np.int64)


def arrival_times(
    frame_ns: np.ndarray, p_in_frame: np.ndarray, last: np.ndarray, stream: np.ndarray,
    c: dict[str, np.ndarray], rng: np.random.Generator,
) -> np.ndarray:
    """Send time + small per-packet jitter + rare reordering delay (the per-frame network delay
    is added by the caller)."""
    n = len(stream)
    gap = np.where(last, c["interval_ns"][stream], c["pacing_ns"][stream])
    reorder = (rng.random(n) < REORDER_RATE) * rng.uniform(1.2, 2.5, n) * gap
    sent = frame_ns + p_in_frame * c["pacing_ns"][stream]
    delay = rng.random(n) * PACKET_JITTER_NS + reorder
    return sent + delay.astype(np.int64)
