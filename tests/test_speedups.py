"""The C fast paths (analyzer._speedups) against the Python/numpy reference code.

RTP statistics: random interleaved multi-stream inputs (loss, duplicates, reordering, wraps,
timestamp jumps, comfort noise, markers, unknown clock rates) split into random batches give the
same figures from the C loop, from the numpy accumulators and from a plain per-packet loop written
here from the rules in analyzer/rtpstats.py's docstring; one interleaved capture is also checked
against tshark. Record walkers: pcap and pcapng files packed here with struct following
draft-ietf-opsawg-pcap / -pcapng, fuzzed bytes and the real corpus captures walk to the same
records, stop offsets and errors with and without the extension. Header decoder and Zoom
classifier: every PacketColumns / ZoomColumns field, values and dtypes, is the same from C and
from numpy on the scapy-built cases of test_packets.py (cut at every length), the captures of
test_reader.py, every corpus and sample capture, a 50k-packet benchmark capture, and
hypothesis-mutated frames and payload heads.
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import analyzer
from analyzer import flows as flows_module
from analyzer import speedups
from analyzer.capture.batch import PacketBatch
from analyzer.capture.formats import (
    MAX_PACKET,
    PcapngWalker,
    PcapWalker,
    RecordArrays,
    Walker,
)
from analyzer.capture.reader import CaptureReader
from analyzer.decode.dns import DnsMessage, parse_dns
from analyzer.decode.dns import _message as dns_from_c
from analyzer.decode.tls import ClientHello, parse_client_hello
from analyzer.decode.zoom import HEAD_BYTES, MEDIA_KINDS, ZoomColumns, zoom_columns
from analyzer.flows import FlowTable
from analyzer.media import MediaScan, RtcpCandidates, RtpPackets, find_media
from analyzer.packets import Gather, PacketColumns, decode_batch
from analyzer.rtpstats import (
    DUPLICATE_WINDOW,
    TSHARK_STATIC_CLOCK_RATES,
    RtpStreamAccumulator,
    StreamSet,
    StreamStatistics,
    parse_tshark_rtp_streams,
)
from tests.test_dns import header as dns_header
from tests.test_dns import pointer as dns_pointer
from tests.test_dns import question as dns_question
from tests.test_dns import record as dns_record
from tests.test_dns import zoom_cname_response
from tests.test_packets import CASES, batch_of, mutated_frames, write_pcaps
from tests.test_reader import big_capture, pcapng_capture, write_pcap
from tests.test_reader import pcap_records as reader_records
from tests.test_tls import FULL_CLIENT_EXTENSIONS
from tests.test_tls import _outcome as tls_outcome
from tests.test_tls import client_hello_body as tls_client_hello_body
from tests.test_tls import ext as tls_ext
from tests.test_tls import sni_ext as tls_sni_ext
from tests.test_tls import u16s as tls_u16s
from tests.test_tls import vec as tls_vec
from tests.test_zoom import SEEDS as ZOOM_SEEDS

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
ROOT = Path(__file__).resolve().parents[1]
needs_extension = pytest.mark.skipif(not speedups.HAVE_SPEEDUPS, reason="extension not built")

# ---------------------------------------------------------------------------- RTP: inputs


@dataclass(frozen=True, slots=True)
class Packet:
    stream: int
    arrival_s: float
    seq: int
    ts: int
    pt: int
    marker: bool
    size: int


@dataclass(frozen=True, slots=True)
class StreamSetup:
    clock_rate: int | None
    dynamic: Mapping[int, int]


SETUPS = (  # (clock rate from SDP, rtpmap overrides), payload type mixes
    (StreamSetup(None, {}), (0,)),
    (StreamSetup(None, {}), (8, 13)),
    (StreamSetup(None, {}), (34, 19, 0)),
    (StreamSetup(None, {}), (11,)),  # L16 at 44100 Hz: 44 ticks per ms for tshark
    (StreamSetup(None, {}), (96,)),  # unknown clock rate: no jitter
    (StreamSetup(48000, {101: 0}), (96, 101)),  # telephone-event forced to 0
    (StreamSetup(90000, {97: 16000}), (96, 97)),
    (StreamSetup(500, {}), (96,)),  # below 1000 Hz: no jitter
)


def random_stream(
    rng: random.Random, stream: int, count: int, setup_index: int, start_seq: int | None = None
) -> list[Packet]:
    """One stream: jitter, loss, duplicates, reordering, sequence and timestamp jumps (also far
    enough to leave the duplicate window), arrivals going back, CN, markers, rate changes."""
    kinds = SETUPS[setup_index][1]
    seq = rng.choice([rng.randrange(65536), 65535 - rng.randrange(40), 0])
    seq = seq if start_seq is None else start_seq
    ts = rng.choice([rng.randrange(2**32), 2**32 - rng.randrange(1, 9000)])
    arrival, packets = 1.7e9 + rng.random(), []
    for _ in range(count):
        roll, sent_seq, sent_ts = rng.random(), seq, ts
        if roll < 0.05:  # late or repeated
            sent_seq = (seq - rng.randrange(0, 5)) % 65536
        elif roll < 0.08:  # loss
            seq = sent_seq = (seq + rng.randrange(2, 50)) % 65536
        elif roll < 0.09:  # a jump anywhere
            seq = sent_seq = rng.randrange(65536)
        elif roll < 0.10:  # a long step either way: walks the extended number past the window
            seq = sent_seq = (seq + rng.choice([30000, -30000])) % 65536
        if rng.random() < 0.03:
            sent_ts = (ts - rng.randrange(1, 5000)) % 2**32
        if rng.random() < 0.005:
            ts = (ts + rng.choice([2**31, 3 * 2**30])) % 2**32
        pt = rng.choice(kinds) if rng.random() < 0.2 else kinds[0]
        size = rng.choice([172, 60, 1200])
        packets.append(Packet(stream, arrival, sent_seq, sent_ts, pt, rng.random() < 0.05, size))
        seq = seq if roll < 0.05 else (seq + 1) % 65536
        ts = (ts + 160) % 2**32
        arrival += -0.003 if rng.random() < 0.01 else max(0.0, 0.02 + rng.gauss(0, 0.004))
    return packets


def interleave(rng: random.Random, streams: list[list[Packet]]) -> list[Packet]:
    """The streams' packets in one random capture order, each stream's own order kept."""
    labels = [index for index, packets in enumerate(streams) for _ in packets]
    rng.shuffle(labels)
    cursors = [iter(packets) for packets in streams]
    return [next(cursors[label]) for label in labels]


def columns(packets: list[Packet], first_frame: int) -> dict[str, np.ndarray]:
    return {
        "stream_id": np.array([p.stream for p in packets], dtype=np.int64),
        "frame": np.arange(first_frame, first_frame + len(packets)),
        "arrival_s": np.array([p.arrival_s for p in packets]),
        "sequence_number": np.array([p.seq for p in packets], dtype=np.uint16),
        "timestamp": np.array([p.ts for p in packets], dtype=np.uint32),
        "payload_type": np.array([p.pt for p in packets], dtype=np.uint8),
        "marker": np.array([p.marker for p in packets], dtype=bool),
        "rtp_bytes": np.array([p.size for p in packets], dtype=np.int32),
    }


def run_set(
    native: bool, setups: list[StreamSetup], packets: list[Packet], cuts: tuple[int, ...]
) -> list[StreamStatistics | None]:
    streams = StreamSet(native=native)
    for setup in setups:
        streams.add_stream(setup.clock_rate, setup.dynamic)
    for low, high in itertools.pairwise((0, *cuts, len(packets))):
        streams.update(**columns(packets[low:high], low + 1))
    return [
        streams.result(i) if any(p.stream == i for p in packets) else None
        for i in range(len(setups))
    ]


# ---------------------------------------------------------------------------- RTP: reference


def rate_table(setup: StreamSetup) -> dict[int, int]:
    """Clock rate per payload type as the rtpstats docstring states tshark picks it."""
    rates = {pt: TSHARK_STATIC_CLOCK_RATES.get(pt, 0) for pt in range(96)}
    rates |= {pt: setup.clock_rate or 0 for pt in range(96, 128)}
    return rates | dict(setup.dynamic)


@dataclass(slots=True)
class Running:
    """tshark's mean ``(mean * (n - 1) + x) / n`` at regular packets, with min and max."""

    mean: float = 0.0
    count: int = 0
    maximum: float = 0.0
    minimum: float = 0.0

    def add(self, value: float, index: int) -> None:
        self.mean = (self.mean * (index - 1) + value) / index
        self.minimum = value if self.count == 0 else min(self.minimum, value)
        self.maximum, self.count = max(self.maximum, value), self.count + 1

    def figures(self) -> tuple[float | None, float | None, float | None]:
        return (self.minimum, self.mean, self.maximum) if self.count else (None, None, None)


def unwrap(extended: int, seq: int) -> int:
    """The extended number of ``seq`` nearest to the previous packet's ``extended``."""
    step = seq - extended % 65536
    step -= 65536 if step > 0x8000 else 0
    step += 65536 if step < -0x8000 else 0
    return extended + step


def reference(packets: list[Packet], rates: dict[int, int]) -> dict[str, Any]:
    """All StreamStatistics fields of one stream, one packet at a time."""
    first, t0 = packets[0], packets[0].arrival_s
    time_ms = last_nominal = jitter = 0.0
    highest = stop = first.seq
    latched, cycles, errors, problem, previous_pt, clock = False, 0, 0, False, first.pt, 0
    delta_stats, jitter_stats = Running(), Running()
    extended = top = first.seq
    seen, duplicates, out_of_order = {first.seq}, 0, 0
    for n, packet in enumerate(packets[1:], start=1):
        t, seq = (packet.arrival_s - t0) * 1000, packet.seq
        forward = (packet.ts - first.ts) % 2**32
        in_time = forward < 2**31 or (packet.ts < first.ts and forward == 2**31)
        if in_time and not latched and (seq < first.seq or (seq == 0 and stop == 65535)):
            cycles, latched = cycles + 1, True
        elif in_time and latched and seq > first.seq:
            latched = False
        wrap = in_time and highest == 65535 and seq == 0
        if (seq <= highest and not wrap) or (in_time and seq > highest + 1):
            errors += 1
        if in_time and (seq > highest or highest - seq > 0xFF00):
            highest = seq
        ticks = rates[packet.pt] // 1000
        delta = t - time_ms
        if in_time and ticks > 0:
            nominal = forward / ticks
            jitter = (15 * jitter + abs(t - (time_ms + nominal - last_nominal))) / 16
            last_nominal, clock = nominal, rates[packet.pt]
        regular = in_time and not packet.marker and {packet.pt, previous_pt}.isdisjoint({13, 19})
        if regular:
            delta_stats.add(delta, n)
        if regular and in_time and ticks > 0:
            jitter_stats.add(jitter, n)
        problem = problem or not in_time
        time_ms = t if in_time else time_ms
        stop, previous_pt = seq, packet.pt
        extended = unwrap(extended, seq)
        if extended in seen and extended > top - DUPLICATE_WINDOW:
            duplicates += 1
        elif extended < top:
            out_of_order += 1
        seen.add(extended)
        top = max(top, extended)
    expected = stop + cycles * 65536 - first.seq + 1
    duration = packets[-1].arrival_s - t0
    rtp_bytes = sum(p.size for p in packets)
    out: dict[str, Any] = {
        "packets": len(packets),
        "expected": expected,
        "lost": expected - len(packets),
        "loss_pct": 100 * (expected - len(packets)) / expected if expected > 0 else 0.0,
        "duplicates": duplicates,
        "out_of_order": out_of_order,
        "sequence_errors": errors,
        "problem": problem or errors > 0,
        "bitrate_kbps": rtp_bytes * 8 / duration / 1000 if duration > 0 else None,
        "duration_s": duration,
        "first_seen": t0,
        "last_seen": packets[-1].arrival_s,
        "clock_rate": clock or None,
        "payload_types": tuple(sorted({p.pt for p in packets})),
    }
    for name, running in (("delta", delta_stats), ("jitter", jitter_stats)):
        low, mean, high = running.figures()
        out |= {f"{name}_min_ms": low, f"{name}_mean_ms": mean, f"{name}_max_ms": high}
    return out


def assert_same(got: StreamStatistics, want: StreamStatistics | Mapping[str, Any]) -> None:
    """Integers, flags and payload types exactly; floats to 1e-9 (relative or absolute)."""
    for item in fields(StreamStatistics):
        if isinstance(want, StreamStatistics):
            expected = getattr(want, item.name)
        elif item.name in want:
            expected = want[item.name]
        else:
            continue
        value = getattr(got, item.name)
        if isinstance(value, float) and isinstance(expected, float):
            assert value == pytest.approx(expected, rel=1e-9, abs=1e-9), item.name
        else:
            assert value == expected, item.name


# ---------------------------------------------------------------------------- RTP: tests


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[StreamSetup], list[Packet], tuple[int, ...]]:
    seed = draw(st.integers(0, 2**32))
    counts = draw(st.lists(st.integers(1, 600), min_size=1, max_size=8))
    kinds = draw(st.lists(st.sampled_from(range(len(SETUPS))), min_size=len(counts),
                          max_size=len(counts)))
    rng = random.Random(seed)
    shapes = enumerate(zip(counts, kinds, strict=True))
    streams = [random_stream(rng, i, n, k) for i, (n, k) in shapes]
    packets = interleave(rng, streams)
    cut_points = draw(st.lists(st.integers(1, max(1, len(packets) - 1)), max_size=8))
    setups = [SETUPS[k][0] for k in kinds]
    return setups, packets, tuple(sorted(set(cut_points)))


@needs_extension
@settings(max_examples=60, deadline=None)
@given(scenarios())
def test_c_loop_numpy_and_reference_agree(
    scenario: tuple[list[StreamSetup], list[Packet], tuple[int, ...]],
) -> None:
    setups, packets, cuts = scenario
    native = run_set(True, setups, packets, cuts)
    fallback = run_set(False, setups, packets, cuts)
    for index, setup in enumerate(setups):
        own = [p for p in packets if p.stream == index]
        got, vectorized = native[index], fallback[index]
        assert got is not None and vectorized is not None
        assert_same(got, reference(own, rate_table(setup)))
        assert_same(got, vectorized)
        frames = [n + 1 for n, p in enumerate(packets) if p.stream == index]
        assert (got.first_frame, got.last_frame) == (frames[0], frames[-1])


@needs_extension
def test_streams_added_while_others_run() -> None:
    """The C state table grows (copying the rows in use) between updates; no stream notices."""
    rng = random.Random(3)
    kinds = [i % len(SETUPS) for i in range(700)]
    streams = [random_stream(rng, i, 20, k) for i, k in enumerate(kinds)]
    results = []
    for native in (True, False):
        stream_set = StreamSet(native=native)
        for index, (packets, kind) in enumerate(zip(streams, kinds, strict=True)):
            assert stream_set.add_stream(SETUPS[kind][0].clock_rate,
                                         SETUPS[kind][0].dynamic) == index
            stream_set.update(**columns(packets[:10], 1))
        for packets in streams:
            stream_set.update(**columns(packets[10:], 11))
        results.append([stream_set.result(i) for i in range(len(streams))])
    for got, vectorized, own in zip(*results, streams, strict=True):
        assert_same(got, vectorized)
        assert got.packets == len(own)


def capture_of(packets: list[Packet]) -> bytes:
    """A pcap (microseconds) of IPv4/UDP frames carrying the packets as RTP to port 40000."""
    out = struct.pack("<IHHiIII", PCAP_MAGIC_NUMBER[False], 2, 4, 0, 0, 65535, 1)
    for p in packets:
        rtp = struct.pack("!BBHII", 0x80, p.marker << 7 | p.pt, p.seq, p.ts, p.stream + 1)
        udp = struct.pack("!HHHH", 20000 + 2 * p.stream, 40000, 8 + p.size, 0)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + p.size, 0, 0, 64, 17, 0,
                         bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
        frame = bytes(12) + b"\x08\x00" + ip + udp + rtp + bytes(p.size - 12)
        sec, usec = divmod(round(p.arrival_s * 1e6), 10**6)
        out += struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame
    return out


@needs_extension
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_interleaved_streams_match_tshark(tmp_path: Path) -> None:
    rng = random.Random(2026)
    streams = [random_stream(rng, i, rng.randrange(50, 800), i % 5) for i in range(8)]
    packets = interleave(rng, streams)
    packets = [replace(p, arrival_s=round(p.arrival_s, 6)) for p in packets]  # as pcap stores
    path = tmp_path / "interleaved.pcap"
    path.write_bytes(capture_of(packets))
    command = ["tshark", "-r", str(path), "-d", "udp.port==40000,rtp", "-q", "-z", "rtp,streams"]
    rows = parse_tshark_rtp_streams(subprocess.run(command, capture_output=True, text=True,
                                                   check=True).stdout)
    results = run_set(True, [SETUPS[i % 5][0] for i in range(8)], packets, (1000, 2500))
    assert sorted(row["ssrc"] for row in rows) == list(range(1, 9))
    for row in rows:
        ours = results[row["ssrc"] - 1]
        assert ours is not None
        assert (ours.packets, ours.lost, ours.problem) == (row["packets"], row["lost"],
                                                           row["problem"])
        for kind in ("delta", "jitter"):  # tshark prints 3 decimals, -1 / 0 when nothing counted
            if row[f"min_{kind}_ms"] == -1.0:
                assert getattr(ours, f"{kind}_min_ms") is None
                continue
            for stat in ("min", "mean", "max"):
                value = getattr(ours, f"{kind}_{stat}_ms")
                assert value == pytest.approx(row[f"{stat}_{kind}_ms"], abs=0.0015), (kind, stat)


@pytest.mark.parametrize("start_seq", [0, 40_000])
@pytest.mark.parametrize("native", [False, pytest.param(True, marks=needs_extension)])
def test_long_stream_with_wraps_in_many_batches(native: bool, start_seq: int) -> None:
    rng = random.Random(11)
    packets = random_stream(rng, 0, 150_000, 1, start_seq)
    setups = [SETUPS[1][0]]
    cuts = tuple(range(9_973, len(packets), 9_973))
    (got,) = run_set(native, setups, packets, cuts)
    assert got is not None
    assert_same(got, reference(packets, rate_table(setups[0])))


@pytest.mark.parametrize("native", [False, pytest.param(True, marks=needs_extension)])
def test_duplicates_are_looked_for_within_the_window_only(native: bool) -> None:
    # Extended numbers 0 1 2 W/2 W-100 W+1 (W: the window), then back to W-100, W/2 and 2
    # (repeats at most W-1 below the highest: duplicates) and 1 (W below: out of order).
    window = DUPLICATE_WINDOW
    seqs = [0, 1, 2, window // 2, window - 100, window + 1, window - 100, window // 2, 2, 1]
    packets = [Packet(0, 100 + 0.02 * i, s, 160 * i, 0, False, 172) for i, s in enumerate(seqs)]
    (got,) = run_set(native, [StreamSetup(None, {})], packets, (4,))
    assert got is not None and (got.duplicates, got.out_of_order) == (3, 1)


def steady(seqs: list[int], timestamps: list[int] | None = None) -> list[Packet]:
    """20 ms PCMU packets with the given sequence numbers (and timestamps)."""
    stamps = timestamps or [160 * i for i in range(len(seqs))]
    return [Packet(0, 100 + 0.02 * i, s % 65536, t % 2**32, 0, False, 172)
            for i, (s, t) in enumerate(zip(seqs, stamps, strict=True))]


def run_three_ways(native: bool, packets: list[Packet], cuts: tuple[int, ...]) -> StreamStatistics:
    """The chosen path, checked against the per-packet reference."""
    setup = StreamSetup(None, {})
    (got,) = run_set(native, [setup], packets, cuts)
    assert got is not None
    assert_same(got, reference(packets, rate_table(setup)))
    return got


@pytest.mark.parametrize("native", [False, pytest.param(True, marks=needs_extension)])
def test_forward_jumps_forget_the_numbers_they_skip(native: bool) -> None:
    # More numbers than the window holds, then jumps of k; the k - 1 skipped numbers arrive late
    # (out of order, although their twins a window below were seen), then one repeat.
    window, count = DUPLICATE_WINDOW, DUPLICATE_WINDOW + 4464
    jumps = (2, 3, 63, 64, 65, 129, 1000, window - 1, window, window + 1, 32767)
    seqs = list(range(count))
    for k in jumps:
        top = seqs[-1] if len(seqs) == count else max(seqs)
        seqs += [top + k, *range(top + 1, top + k), top + k - 1]
    got = run_three_ways(native, steady(seqs), (count + 1, count + 1000))
    assert (got.duplicates, got.out_of_order) == (len(jumps), sum(k - 1 for k in jumps))


@pytest.mark.parametrize("start_seq", [0, 65_530])
@pytest.mark.parametrize("native", [False, pytest.param(True, marks=needs_extension)])
def test_wraps_without_loss(native: bool, start_seq: int) -> None:
    got = run_three_ways(native, steady(list(range(start_seq, start_seq + 140_000))), (65_536,))
    assert (got.expected, got.lost, got.sequence_errors, got.problem) == (140_000, 0, 0, False)


@pytest.mark.parametrize(("first_ts", "in_time"), [(2**31 + 100, True), (100, False)])
@pytest.mark.parametrize("native", [False, pytest.param(True, marks=needs_extension)])
def test_timestamp_exactly_half_the_space_away(native: bool, first_ts: int, in_time: bool) -> None:
    # tshark's off-by-one: 2**31 ahead counts as in time only when the timestamp is numerically
    # below the first one.
    stamps = [first_ts, first_ts + 160, first_ts + 2**31, first_ts + 480]
    got = run_three_ways(native, steady([1, 2, 3, 4], stamps), ())
    assert got.problem is not in_time


@pytest.mark.parametrize(
    ("seqs", "late_ts"),
    [
        ([65534, 65535, 0, 1], 2),  # 65535 -> 0 is a wrap only for a packet in time
        ([0xFF10, 0xFF11, 0x11, 0x12], None),  # 0xFF00 back: not yet a wrap for tshark
        ([0xFF10, 0xFF11, 0x10, 0x11], None),  # 0xFF01 back: a wrap
    ],
)
@pytest.mark.parametrize("native", [False, pytest.param(True, marks=needs_extension)])
def test_sequence_boundaries(native: bool, seqs: list[int], late_ts: int | None) -> None:
    stamps = [160 * i + (2**31 + 7 if i == late_ts else 0) for i in range(len(seqs))]
    run_three_ways(native, steady(seqs, stamps), ())


@pytest.mark.parametrize("native", [False, pytest.param(True, marks=needs_extension)])
def test_stream_set_errors(native: bool) -> None:
    streams = StreamSet(native=native)
    first = streams.add_stream(None)
    assert (first, streams.add_stream(8000), len(streams)) == (0, 1, 2)
    with pytest.raises(ValueError):
        streams.result(first)
    with pytest.raises(IndexError):
        streams.result(2)
    one = {k: v[:1] for k, v in columns([Packet(0, 1.0, 1, 1, 0, False, 1)], 1).items()}
    with pytest.raises(IndexError):
        streams.update(**(one | {"stream_id": np.array([2])}))
    with pytest.raises(IndexError):
        streams.update(**(one | {"stream_id": np.array([-1])}))
    streams.update(**{k: v[:0] for k, v in one.items()})  # an empty batch is fine
    streams.update(**one)
    assert streams.result(first).packets == 1


@needs_extension
def test_state_rows_do_not_grow_with_the_stream() -> None:
    streams = StreamSet(native=True)
    ids = [streams.add_stream(None) for _ in range(40)]  # forces the arrays to grow twice
    packets = random_stream(random.Random(3), 39, 50_000, 0)
    streams.update(**columns(packets, 1))
    state_bytes = streams._state.nbytes
    streams.update(**columns(packets, 50_001))
    assert streams._state.nbytes == state_bytes and len(ids) == 40
    assert streams.result(39).packets == 100_000


def test_accumulator_keeps_columns_only_when_asked() -> None:
    packets = random_stream(random.Random(5), 0, 300, 0)
    batch = {k: v for k, v in columns(packets, 1).items() if k != "stream_id"}
    plain = RtpStreamAccumulator(None)
    kept, earlier = (RtpStreamAccumulator(None, keep_for_merge=True) for _ in range(2))
    plain.update(**batch)
    kept.update(**batch)
    assert plain._batches == [] and len(kept._batches) == 1
    with pytest.raises(ValueError, match="keep_for_merge"):
        earlier.merge(plain)
    earlier.merge(kept)
    assert earlier.result() == kept.result()


@needs_extension
def test_c_argument_checks() -> None:
    module = speedups.native
    assert module is not None and module.RTP_DUPLICATE_WINDOW == DUPLICATE_WINDOW
    state = np.zeros(module.RTP_STATE_SIZE, dtype=np.uint8)
    rates = np.zeros((1, 128), dtype=np.int64)
    good = [np.zeros(2, np.int64), np.ones(2, np.int64), np.ones(2), *[np.ones(2, np.int64)] * 3,
            np.zeros(2, bool), np.ones(2, np.int64)]
    module.rtp_update(state, rates, *good)
    with pytest.raises(TypeError, match="arrival_s"):
        module.rtp_update(state, rates, *good[:2], np.ones(2, np.float32), *good[3:])
    with pytest.raises(ValueError, match="items"):
        module.rtp_update(state, rates, *good[:3], np.ones(3, np.int64), *good[4:])
    with pytest.raises(ValueError, match="wrong size"):
        module.rtp_update(state[:-8], rates, *good)
    with pytest.raises(BufferError):
        module.rtp_update(bytes(module.RTP_STATE_SIZE), rates, *good)  # read-only state


def test_pure_python_switch() -> None:
    code = "from analyzer import speedups, rtpstats; print(speedups.HAVE_SPEEDUPS, " \
        "rtpstats.StreamSet().native)"
    env = os.environ | {speedups.PURE_PYTHON_VARIABLE: "1"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, check=True)
    assert result.stdout.split() == ["False", "False"]
    with pytest.raises(RuntimeError):
        StreamSet(native=True) if not speedups.HAVE_SPEEDUPS else _forced_off()


def test_a_build_of_another_version_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    stale = type(sys)("analyzer._speedups")
    stale.API_VERSION = speedups.API_VERSION + 1  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "analyzer._speedups", stale)
    monkeypatch.setattr(analyzer, "_speedups", stale, raising=False)
    monkeypatch.delenv(speedups.PURE_PYTHON_VARIABLE, raising=False)
    with pytest.warns(RuntimeWarning, match="another version"):
        assert speedups._load() is None


def _forced_off() -> None:
    saved = speedups.native
    speedups.native = None
    try:
        StreamSet(native=True)
    finally:
        speedups.native = saved


# ---------------------------------------------------------------------------- record walkers


def using(native: bool) -> Any:
    """Context: the C paths switched on (when built) or off."""
    return pytest.MonkeyPatch.context() if native else _pure_python()


class _pure_python:  # used like a function
    def __enter__(self) -> None:
        self.saved, speedups.native = speedups.native, None

    def __exit__(self, *exc: object) -> None:
        speedups.native = self.saved


def outcome(walker: Walker, data: bytes, start: int, chunk: int) -> tuple[Any, ...]:
    """Walk ``data`` as the reader does (``chunk`` bytes at a time, carrying the unfinished tail);
    the records as arrays, where it stopped, the error and the walker's findings."""
    parts, base, pos, end, error = [], 0, start, 0, ""
    while True:  # like the reader: the unfinished tail plus the next chunk
        end = min(len(data), end + chunk)
        result = walker.walk(data[base:end], pos - base)
        part = RecordArrays.join([result.records])  # lists (Python walkers) to arrays
        parts.append(replace(part, data_offset=part.data_offset + base))  # offsets in the file
        pos, error = base + result.stop, result.error
        if error or end == len(data):
            break
        base = pos
    records = RecordArrays.join(parts)
    found = (sorted(walker.linktypes), walker.timestamp_resolution, walker.skipped_blocks)
    return (*(getattr(records, f.name).tolist() for f in fields(RecordArrays)), pos, error, found)


def both_ways(make: Any, data: bytes, start: int, chunk: int = 1 << 30) -> tuple[Any, ...]:
    """The outcome with the C walker and with the Python one, asserted equal."""
    results = []
    for native in (True, False):
        with using(native):
            try:
                results.append(outcome(make(), data, start, chunk))
            except Exception as exc:  # the same exception either way is fine too
                results.append((type(exc), str(exc)))
    assert results[0] == results[1]
    return results[0]


PCAP_MAGIC_NUMBER = {False: 0xA1B2C3D4, True: 0xA1B23C4D}  # microseconds, nanoseconds


def pcap_file(endian: str, nanoseconds: bool, records: list[tuple[int, int, int, int]]) -> bytes:
    """A classic pcap file: (seconds, fraction, caplen, wirelen) records of zero bytes."""
    out = struct.pack(endian + "IHHiIII", PCAP_MAGIC_NUMBER[nanoseconds], 2, 4, 0, 0, 65535, 1)
    for sec, frac, caplen, wirelen in records:
        out += struct.pack(endian + "IIII", sec, frac, caplen, wirelen) + bytes(caplen)
    return out


pcap_records = st.lists(
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 300),
              st.integers(0, 2**32 - 1)),
    max_size=40,
)


@needs_extension
@settings(max_examples=150, deadline=None)
@given(
    endian=st.sampled_from("<>"), nanoseconds=st.booleans(), records=pcap_records,
    oversized=st.none() | st.integers(0, 40), cut=st.integers(0, 40), chunk=st.integers(16, 5000),
)
def test_pcap_walkers_agree(
    endian: str, nanoseconds: bool, records: list[tuple[int, int, int, int]],
    oversized: int | None, cut: int, chunk: int,
) -> None:
    if oversized is not None:  # a record claiming more than Wireshark's limit stops the walk
        records.insert(min(oversized, len(records)), (1, 2, MAX_PACKET + 1, 0))
    data = pcap_file(endian, nanoseconds, records)
    data = data[: max(24, len(data) - cut)]
    got = both_ways(lambda: PcapWalker(data[:24]), data, 24, chunk)
    offsets, caplens, wirelens, stamps, _, stop, error, _ = got
    tick = 1 if nanoseconds else 1000
    whole = [r for r in itertools.takewhile(lambda r: r[2] <= MAX_PACKET, records)]
    expected_offsets = list(itertools.accumulate((16 + r[2] for r in whole), initial=24 + 16))
    kept = [(o, r) for o, r in zip(expected_offsets, whole, strict=False) if o + r[2] <= len(data)]
    assert offsets == [o for o, _ in kept] and caplens == [r[2] for _, r in kept]
    assert wirelens == [r[3] for _, r in kept]
    assert stamps == [r[0] * 10**9 + r[1] * tick for _, r in kept]
    assert bool(error) == (oversized is not None and len(kept) == len(whole)
                           and stop + 16 <= len(data))


def option(endian: str, code: int, value: bytes) -> bytes:
    return struct.pack(endian + "HH", code, len(value)) + value + bytes(-len(value) % 4)


def block(endian: str, block_type: int, body: bytes, trailer_delta: int = 0) -> bytes:
    body += bytes(-len(body) % 4)
    length = 12 + len(body)
    return (struct.pack(endian + "II", block_type, length) + body
            + struct.pack(endian + "I", length + trailer_delta))


@dataclass(frozen=True, slots=True)
class Interface:
    linktype: int
    snaplen: int
    tsresol: int | None  # if_tsresol byte: bit 7 set = power of 2
    tsoffset: int | None  # if_tsoffset, seconds


def section_header(endian: str) -> bytes:
    return block(endian, 0x0A0D0D0A, struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def interface_block(endian: str, iface: Interface) -> bytes:
    options = b""
    if iface.tsresol is not None:
        options += option(endian, 9, bytes([iface.tsresol]))
    if iface.tsoffset is not None:
        options += option(endian, 14, struct.pack(endian + "q", iface.tsoffset))
    body = struct.pack(endian + "HHI", iface.linktype, 0, iface.snaplen)
    return block(endian, 1, body + options + option(endian, 0, b""))


def section_blocks(endian: str, interfaces: list[Interface], items: list[tuple[Any, ...]]) -> bytes:
    out = section_header(endian) + b"".join(interface_block(endian, i) for i in interfaces)
    return out + b"".join(item_block(endian, *item) for item in items)


def item_block(endian: str, kind: str, iface: int, units: int, size: int, wirelen: int,
               other_type: int, damage: int) -> bytes:
    """A packet block (EPB, OPB, SPB) or another block; ``damage`` inflates the caplen field
    (EPB, OPB) or the trailing length (SPB)."""
    data, hi, lo = (bytes(range(256)) * (size // 256 + 1))[:size], units >> 32, units & 0xFFFFFFFF
    if kind == "epb":
        body = struct.pack(endian + "IIIII", iface, hi, lo, size + damage, wirelen) + data
        return block(endian, 6, body)
    if kind == "opb":  # the drops count set, so that the 16-bit interface id matters
        body = struct.pack(endian + "HHIIII", iface, 0x0101, hi, lo, size + damage, wirelen) + data
        return block(endian, 2, body)
    if kind == "spb":
        return block(endian, 3, struct.pack(endian + "I", wirelen) + data, damage)
    return block(endian, other_type, data)  # NRB, ISB, a frame block, unknown


TSRESOL = [None, 6, 9, 3, 0, 12, 28, 30, 0x80 | 20, 0x80 | 30, 0x80, 0x80 | 64, 0x80 | 127]
TSOFFSET = [None, 0, 5, -5, 1_700_000_000, 2**33, 2**62, -(2**62)]
OTHER_BLOCKS = [4, 5, 0xBAD, 0x40000BAD, 0x12345, 0x204]


def random_interface(rng: random.Random) -> Interface:
    snaplen = rng.choice([0, 64, 1500, 65535, MAX_PACKET + 10])
    return Interface(rng.choice([1, 101, 113]), snaplen, rng.choice(TSRESOL), rng.choice(TSOFFSET))


def random_units(rng: random.Random, iface: Interface | None) -> int:
    """Timestamp units: realistic, anything, or at the edge of int64 nanoseconds."""
    roll = rng.random()
    if roll < 0.6:
        return rng.randrange(2**62)
    if roll < 0.8 or iface is None or iface.tsresol is None or iface.tsresol & 0x80:
        return rng.randrange(2**64)
    exponent = iface.tsresol
    per_unit = 10 ** (9 - exponent) if exponent <= 9 else 1
    edge = (2**63 - 1 - 10**9 * (iface.tsoffset or 0)) // per_unit
    return min(max(edge + rng.randrange(-3, 4), 0), 2**64 - 1)


def random_item(rng: random.Random, interfaces: list[Interface]) -> tuple[Any, ...]:
    kind = rng.choices(["epb", "opb", "spb", "other"], [60, 10, 15, 8])[0]
    iface = rng.randrange(len(interfaces) + 1) if rng.random() < 0.01 else 0
    iface = rng.randrange(len(interfaces)) if interfaces and not iface else iface
    size = rng.randrange(0, 200)
    wirelen = size + rng.randrange(0, 80) if rng.random() < 0.9 else rng.randrange(2**32)
    damage = rng.choice([4, MAX_PACKET]) if rng.random() < 0.004 else 0
    units = random_units(rng, interfaces[iface] if iface < len(interfaces) else None)
    return (kind, iface, units, size, wirelen, rng.choice(OTHER_BLOCKS), damage)


def random_pcapng(rng: random.Random) -> bytes:
    """Sections of either byte order, with interfaces (some described after packets, some
    sections with none), packet and other blocks, occasional damage, sometimes cut short."""
    out = b""
    for _ in range(rng.randrange(1, 4)):
        endian = rng.choice("<>")
        count = rng.choices([0, 1, 2, 4], [1, 12, 5, 3])[0]
        interfaces = [random_interface(rng) for _ in range(count)]
        out += section_header(endian) + b"".join(interface_block(endian, i) for i in interfaces)
        for _ in range(rng.randrange(0, 80)):
            if rng.random() < 0.03:
                interfaces.append(random_interface(rng))
                out += interface_block(endian, interfaces[-1])
            out += item_block(endian, *random_item(rng, interfaces))
    return out[: len(out) - rng.choice([0, 0, 0, 1, 4, 13])]


@needs_extension
@settings(max_examples=120, deadline=None)
@given(seed=st.integers(0, 2**32), chunk=st.sampled_from([12, 100, 1000, 1 << 20]))
def test_pcapng_walkers_agree(seed: int, chunk: int) -> None:
    data = random_pcapng(random.Random(seed))
    both_ways(lambda: PcapngWalker(data[:12]), data, 0, chunk)


@needs_extension
@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32), flips=st.lists(st.tuples(st.integers(0), st.binary(
    min_size=1, max_size=4)), min_size=1, max_size=6))
def test_damaged_pcapng_walks_the_same(seed: int, flips: list[tuple[int, bytes]]) -> None:
    data = bytearray(random_pcapng(random.Random(seed)))
    for position, value in flips:
        at = position % max(len(data), 1)
        data[at : at + len(value)] = value
    both_ways(lambda: PcapngWalker(bytes(data[:12])), bytes(data), 0)


@needs_extension
@settings(max_examples=300, deadline=None)
@given(head=st.sampled_from([b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\x3c\x4d"]), body=st.binary())
def test_random_pcap_bytes_walk_the_same(head: bytes, body: bytes) -> None:
    data = head + bytes(20) + body
    both_ways(lambda: PcapWalker(data[:24]), data, 24)


@needs_extension
def test_packets_above_the_record_limit_stop_the_walk() -> None:
    iface = Interface(1, 0, None, None)
    for size in (MAX_PACKET, MAX_PACKET + 4):
        data = section_blocks("<", [iface], [("epb", 0, 1, size, size, 0, 0)] * 2)
        *records, _, error, _ = both_ways(lambda d=data: PcapngWalker(d[:12]), data, 0)
        assert (len(records[0]), bool(error)) == ((2, False) if size == MAX_PACKET else (0, True))


@needs_extension
def test_pcapng_timestamps_follow_the_interface_resolution() -> None:
    units = 1_700_000_000_123_456_789
    shapes = [(9, units), (6, units // 1000), (0x80 | 30, (units << 30) // 10**9)]
    interfaces = [Interface(1, 0, resol, 5) for resol, _ in shapes]
    items = [("epb", i, u, 10, 10, 0, 0) for i, (_, u) in enumerate(shapes)]
    items.append(("spb", 0, 0, 10, 10, 0, 0))
    data = section_blocks(">", interfaces, items)
    _, caplens, wirelens, stamps, _, stop, error, found = both_ways(
        lambda: PcapngWalker(data[:12]), data, 0
    )
    assert (stop, error, caplens, wirelens) == (len(data), "", [10] * 4, [10] * 4)
    assert stamps[0] == units + 5 * 10**9 and stamps[3] == 0
    assert abs(stamps[1] - stamps[0]) < 1000 and abs(stamps[2] - stamps[0]) <= 1
    assert found[1] == "2^-30 s,ns,us"


def corpus_captures() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return sorted(p for p in CORPUS.rglob("*") if p.suffix in (".pcap", ".pcapng"))


def read_capture(path: Path, native: bool, chunk: int) -> tuple[Any, ...]:
    """The batches' columns and packet bytes, taken as each batch comes (the reader refills
    a batch's buffer for a later one)."""
    batches, data = [], []
    with using(native):
        reader = CaptureReader(path, chunk_bytes=chunk)
        for batch in reader.batches():
            batches.append(batch)
            data += [batch.packet_bytes(i) for i in range(len(batch))]
    columns = [np.concatenate([getattr(b, name) for b in batches]) for name in BATCH_COLUMNS]
    return (*(column.tolist() for column in columns), b"".join(data), reader.info)


BATCH_COLUMNS = ("frame", "ts_ns", "caplen", "wirelen", "linktype")


@needs_extension
def test_corpus_captures_read_the_same_and_as_tshark_does() -> None:
    paths = corpus_captures()
    if not paths:
        pytest.skip("the corpus is absent")
    for path in paths:
        for chunk in (4096, 1 << 26):
            assert read_capture(path, True, chunk) == read_capture(path, False, chunk), path
    if shutil.which("tshark") is None:
        return
    with ThreadPoolExecutor(max_workers=4) as pool:
        for path, rows in zip(paths, pool.map(tshark_frames, paths), strict=True):
            frames, stamps, caplens, wirelens, *_ = read_capture(path, True, 1 << 26)
            assert [(f, t, w, c) for f, t, c, w in zip(frames, stamps, caplens, wirelens,
                                                       strict=True)] == rows, path


def tshark_frames(path: Path) -> list[tuple[int, int, int, int]]:
    """(frame number, epoch ns, frame.len, frame.cap_len) of each frame, as tshark reads them."""
    command = ["tshark", "-r", str(path), "-T", "fields", "-e", "frame.number",
               "-e", "frame.time_epoch", "-e", "frame.len", "-e", "frame.cap_len"]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rows = [line.split("\t") for line in output.splitlines()]
    return [(int(n), int(Decimal(t) * 10**9), int(w), int(c)) for n, t, w, c in rows]


@needs_extension
def test_walker_argument_checks() -> None:
    module = speedups.native
    assert module is not None
    data = pcap_file("<", False, [(1, 2, 3, 3)] * 4)
    small = [np.empty(2, np.int64) for _ in range(4)]
    with pytest.raises(ValueError, match="output arrays"):
        module.walk_pcap(data, 24, False, 1000, MAX_PACKET, *small)
    big = [np.empty(len(data), np.int64) for _ in range(4)]
    with pytest.raises(TypeError, match="ts_ns"):
        module.walk_pcap(data, 24, False, 1000, MAX_PACKET, *big[:3], np.empty(99, np.float64))
    with pytest.raises(ValueError, match="negative"):
        module.walk_pcap(data, -1, False, 1000, MAX_PACKET, *big)
    assert module.walk_pcap(data, len(data) + 5, False, 1000, MAX_PACKET, *big) == (0, 105, 0)
    assert module.walk_pcap(memoryview(data), 24, False, 1000, MAX_PACKET, *big) == (4, 100, 0)


# ---------------------------------------------------------------------------- header decoder

PACKET_FIELDS = [f.name for f in fields(PacketColumns)]
ZOOM_FIELDS = [f.name for f in fields(ZoomColumns)]


def assert_same_columns(native: Any, reference: Any, names: list[str], what: str) -> None:
    """Every named column equal in dtype and in every row."""
    for name in names:
        got, want = getattr(native, name), getattr(reference, name)
        assert got.dtype == want.dtype, f"{what}: {name} is {got.dtype}, not {want.dtype}"
        differ = np.flatnonzero(got != want)
        assert differ.size == 0, f"{what}: {name} differs at rows {differ[:5].tolist()}"


def decoded_both_ways(batch: PacketBatch, what: str) -> PacketColumns:
    """decode_batch in C and in numpy, asserted identical; the C result."""
    native = decode_batch(batch)
    with using(False):
        reference = decode_batch(batch)
    assert_same_columns(native, reference, PACKET_FIELDS, what)
    return native


def decode_capture_both_ways(path: Path, chunk: int = 64 << 20) -> Iterator[tuple[PacketBatch,
                                                                                  PacketColumns]]:
    """Each batch with its columns, checked; used before the next (the reader reuses buffers)."""
    for n, batch in enumerate(CaptureReader(path, chunk_bytes=chunk).batches()):
        yield batch, decoded_both_ways(batch, f"{path.name} batch {n}")


def check_capture(path: Path, chunk: int = 64 << 20) -> list[PacketColumns]:
    return [cols for _, cols in decode_capture_both_ways(path, chunk)]


@needs_extension
def test_c_outputs_are_the_dataclass_fields() -> None:
    module = speedups.native
    assert module is not None
    names = [name for name, _ in speedups.HEADER_COLUMNS]
    assert ["frame", "ts_ns", "wirelen", *names] == PACKET_FIELDS
    assert list(module.HEADER_COLUMNS) == names
    assert [name for name, _ in speedups.ZOOM_COLUMNS] == ZOOM_FIELDS
    assert list(module.ZOOM_COLUMNS) == ZOOM_FIELDS
    assert module.ZOOM_MEDIA_KINDS == MEDIA_KINDS


@needs_extension
def test_decoders_agree_on_the_packet_cases(tmp_path: Path) -> None:
    """The scapy-built frames of test_packets.py (every link type, VLAN, PPPoE, MPLS, LLC/SNAP,
    IPv6 extension headers, fragments, GRE, GTP-U, VXLAN, four-deep tunnels, snap-length cuts),
    as captures and cut at every length, followed by 0x00 or 0xff bytes or by nothing."""
    for path in sorted({path for path, _ in write_pcaps(tmp_path, CASES).values()}):
        for chunk in (4096, 64 << 20):
            check_capture(path, chunk)
    cuts = [(case.linktype, case.frame[:n]) for case in CASES for n in range(len(case.frame) + 1)]
    for gap in (b"", b"\0" * 64, b"\xff" * 64):
        decoded_both_ways(batch_of(cuts, gap=gap), f"cuts with gap {gap[:1]!r}")


@needs_extension
def test_decoders_agree_on_the_reader_captures(tmp_path: Path) -> None:
    mixed = tmp_path / "mixed.pcapng"
    mixed.write_bytes(pcapng_capture()[0])
    (cols,) = check_capture(mixed)
    assert list(cols.ip_version) == [4, 4, 4, 4, 0, 6, 4, 4, 4]
    for endian in "<>":
        write_pcap(tmp_path / "variant.pcap", reader_records(), endian=endian)
        check_capture(tmp_path / "variant.pcap")
    for path in big_capture(tmp_path)[:2]:
        for chunk in (4096, 64 << 20):
            check_capture(path, chunk)


def real_captures() -> list[Path]:
    return [*corpus_captures(), *sorted((ROOT / "captures").glob("*.pcap*"))]


@needs_extension
def test_decoders_agree_on_corpus_and_sample_captures() -> None:
    """In small batches (packets at buffer ends); whole files are decoded both ways again by
    test_zoom_classifiers_agree_on_corpus_and_sample_captures."""
    paths = real_captures()
    assert len(paths) >= 10  # the sample captures at least
    for path in paths:
        check_capture(path, chunk=4096)


@pytest.fixture(scope="module")
def bench_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 50k-packet capture from the benchmark generator (RTP, SRTP, Zoom, TURN, TLS, SIP)."""
    out = tmp_path_factory.mktemp("bench") / "bench-50k.pcap"
    command = [sys.executable, "-m", "bench.make_capture", str(out), "--packets", "50000",
               "--seed", "5"]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=120)
    return out


@needs_extension
def test_decoders_agree_on_a_benchmark_capture(bench_capture: Path) -> None:
    decoded = check_capture(bench_capture, chunk=8 << 20)
    assert sum(len(cols) for cols in decoded) == 50_000
    assert all(np.count_nonzero(cols.sport >= 0) > 0.9 * len(cols) for cols in decoded)


LINK_TYPES = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 147, -1]


def with_wirelen(batch: PacketBatch, extra: list[int]) -> PacketBatch:
    """The batch with wire lengths above (or, for negative extras, below) the captured ones."""
    more = np.resize(np.array(extra or [0], np.int64), len(batch))
    return replace(batch, wirelen=np.maximum(batch.caplen + more, 0))


@needs_extension
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(mutated_frames(), min_size=1, max_size=8), gap=st.binary(max_size=80),
       extra=st.lists(st.integers(-40, 3000), max_size=8))
def test_decoders_agree_on_mutated_frames(frames: list[tuple[int, bytes]], gap: bytes,
                                          extra: list[int]) -> None:
    decoded_both_ways(with_wirelen(batch_of(frames, gap=gap), extra), "mutated")


@needs_extension
@settings(max_examples=300, deadline=None)
@given(frames=st.lists(st.tuples(st.sampled_from(LINK_TYPES), st.binary(max_size=120)),
                       min_size=1, max_size=6), gap=st.binary(max_size=40))
def test_decoders_agree_on_arbitrary_bytes(frames: list[tuple[int, bytes]], gap: bytes) -> None:
    decoded_both_ways(batch_of(frames, gap=gap), "arbitrary")


def empty_outputs(count: int, columns: tuple[tuple[str, type], ...]) -> list[np.ndarray]:
    return [np.empty(count, dtype) for _, dtype in columns]


@needs_extension
def test_decode_headers_argument_checks() -> None:
    module = speedups.native
    assert module is not None
    inputs = [np.zeros(64, np.uint8), *(np.zeros(2, np.int64) for _ in range(3)),
              np.ones(2, np.int32)]
    module.decode_headers(*inputs, *empty_outputs(2, speedups.HEADER_COLUMNS))
    with pytest.raises(TypeError, match="arguments"):
        module.decode_headers(*inputs)
    with pytest.raises(TypeError, match="linktype"):
        module.decode_headers(*inputs[:4], np.ones(2, np.int64),
                              *empty_outputs(2, speedups.HEADER_COLUMNS))
    with pytest.raises(ValueError, match="items"):
        module.decode_headers(*inputs, *empty_outputs(3, speedups.HEADER_COLUMNS))
    read_only = np.zeros(2, bool)
    read_only.flags.writeable = False
    for unusable in (read_only, np.zeros(4, bool)[::2]):  # read-only, not contiguous
        with pytest.raises(ValueError):
            module.decode_headers(*inputs, *empty_outputs(2, speedups.HEADER_COLUMNS)[:-1],
                                  unusable)


# ---------------------------------------------------------------------------- Zoom classifier


def heads_of(batch: PacketBatch, cols: PacketColumns, width: int = HEAD_BYTES,
             beyond: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The zero-padded first bytes (``width`` columns; ``beyond`` fills the columns past
    HEAD_BYTES) and the captured lengths of every UDP payload of a batch."""
    rows = np.flatnonzero((cols.ip_proto == 17) & (cols.sport >= 0))
    at, length = cols.payload_offset[rows], cols.payload_len[rows]
    columns = np.arange(width)
    positions = np.minimum(at[:, None] + columns, batch.buffer.size - 1)
    head = np.where(columns < length[:, None], batch.buffer[positions], 0).astype(np.uint8)
    head[:, HEAD_BYTES:] = beyond
    return head, length


def classified_both_ways(head: np.ndarray, length: np.ndarray, server_flow: np.ndarray,
                         what: str) -> ZoomColumns:
    native = zoom_columns(head, length, server_flow)
    with using(False):
        reference = zoom_columns(head, length, server_flow)
    assert_same_columns(native, reference, ZOOM_FIELDS, what)
    return native


def classify_capture_both_ways(path: Path) -> int:
    """Every UDP payload of a capture, as from a server flow and as not; the valid rows."""
    valid = 0
    for n, (batch, cols) in enumerate(decode_capture_both_ways(path)):
        head, length = heads_of(batch, cols)
        for server_flow in (True, False):
            flags = np.full(length.size, server_flow)
            found = classified_both_ways(head, length, flags, f"{path.name} batch {n}")
            valid += int(np.count_nonzero(found.valid))
    return valid


@needs_extension
def test_zoom_classifiers_agree_on_corpus_and_sample_captures() -> None:
    valid = {path.name: classify_capture_both_ways(path) for path in real_captures()}
    assert valid["zoom_meeting.pcap"] > 0 and valid["zoom_p2p.pcap"] > 0
    if CORPUS.is_dir():
        assert valid["zoom.pcap"] > 0 and valid["zoom2.pcap"] > 0


@needs_extension
def test_zoom_classifiers_agree_on_a_benchmark_capture(bench_capture: Path) -> None:
    assert classify_capture_both_ways(bench_capture) > 10_000


@needs_extension
def test_zoom_columns_past_the_head_are_not_read(bench_capture: Path) -> None:
    """A wider matrix with junk past HEAD_BYTES classifies as the 64-byte one does."""
    batch = next(iter(CaptureReader(bench_capture, chunk_bytes=4 << 20).batches()))
    cols = decoded_both_ways(batch, "first batch")
    head, length = heads_of(batch, cols)
    flags = np.arange(length.size) % 3 == 0
    narrow = classified_both_ways(head, length, flags, "64 columns")
    wide, _ = heads_of(batch, cols, width=HEAD_BYTES + 37, beyond=0xFF)
    assert_same_columns(classified_both_ways(wide, length, flags, "101 columns"), narrow,
                        ZOOM_FIELDS, "wide")
    strided = np.asfortranarray(wide)  # not C-contiguous: the wrapper copies it
    assert_same_columns(classified_both_ways(strided, length, flags, "Fortran order"), narrow,
                        ZOOM_FIELDS, "strided")


@st.composite
def zoom_rows(draw: st.DrawFn) -> tuple[bytes, int, bool]:
    """A payload head (a Zoom seed of test_zoom.py edited, or random bytes) with its length,
    which may also disagree with the bytes given (longer: zero padding; or shorter)."""
    data = bytearray(draw(st.sampled_from(ZOOM_SEEDS) | st.binary(max_size=90)))
    for _ in range(draw(st.integers(0, 4))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    data = data[: draw(st.integers(0, len(data)))]
    length = draw(st.just(len(data)) | st.integers(-2, 300))
    return bytes(data), length, draw(st.booleans())


@needs_extension
@settings(max_examples=300, deadline=None)
@given(rows=st.lists(zoom_rows(), min_size=1, max_size=30), width=st.integers(HEAD_BYTES, 96))
def test_zoom_classifiers_agree_on_generated_heads(rows: list[tuple[bytes, int, bool]],
                                                   width: int) -> None:
    head = np.zeros((len(rows), width), np.uint8)
    for row, (data, _, _) in enumerate(rows):
        head[row, : min(len(data), width)] = np.frombuffer(data[:width], np.uint8)
    length = np.array([length for _, length, _ in rows], np.int64)
    flags = np.array([flag for _, _, flag in rows], bool)
    classified_both_ways(head, length, flags, "generated")


@needs_extension
def test_zoom_classify_argument_checks() -> None:
    module = speedups.native
    assert module is not None
    head, length, flags = np.zeros((2, 64), np.uint8), np.zeros(2, np.int64), np.zeros(2, bool)
    module.zoom_classify(head, 64, length, flags, *empty_outputs(2, speedups.ZOOM_COLUMNS))
    with pytest.raises(ValueError, match="width"):
        module.zoom_classify(head, 32, length, flags, *empty_outputs(2, speedups.ZOOM_COLUMNS))
    with pytest.raises(ValueError, match="width"):
        module.zoom_classify(head[:1], 64, length, flags, *empty_outputs(2, speedups.ZOOM_COLUMNS))
    with pytest.raises(TypeError, match="media_type"):
        outputs = empty_outputs(2, speedups.ZOOM_COLUMNS)
        outputs[2] = np.empty(2, np.int64)
        module.zoom_classify(head, 64, length, flags, *outputs)
    with pytest.raises(ValueError):  # the Python checks stay in front of both paths
        zoom_columns(np.zeros((2, 63), np.uint8), length, flags)


# ---------------------------------------------------------------------------- byte reads


@st.composite
def positions(draw: st.DrawFn, size: int) -> np.ndarray:
    """Byte positions in and around a buffer of `size` bytes, and a few far away."""
    near = st.integers(-8, size + 8)
    far = st.sampled_from([-(2**63), -(2**40), 2**40, 2**63 - 4, 2**63 - 1])
    return np.array(draw(st.lists(near | far, max_size=40)), np.int64)


@needs_extension
@settings(max_examples=300, deadline=None)
@given(data=st.data(), buffer=st.binary(max_size=64))
def test_gather_reads_agree(data: st.DataObject, buffer: bytes) -> None:
    """Gather.u8/u16/u32 in C equal the numpy reads (clamped positions, wrapping sums)."""
    g = Gather(np.frombuffer(buffer, np.uint8))
    pos = data.draw(positions(len(buffer)))
    for read in (g.u8, g.u16, g.u32, g.u64):
        native = read(pos)
        with using(False):
            reference = read(pos)
        assert native.dtype == reference.dtype and native.tolist() == reference.tolist()


@needs_extension
def test_gather_reads_keep_other_positions_on_the_numpy_path() -> None:
    g = Gather(np.arange(10, dtype=np.uint8))
    assert g.u16(np.array([[1, 2], [3, 9]], np.int64)).tolist() == [[0x0102, 0x0203],
                                                                   [0x0304, 0x0909]]
    assert g.u16(np.array([1, 2], np.int32)).tolist() == [0x0102, 0x0203]  # numpy path
    assert g.u8(3).tolist() == 3


@needs_extension
def test_gather_be_argument_checks() -> None:
    module = speedups.native
    assert module is not None
    buffer, pos = np.zeros(8, np.uint8), np.zeros(2, np.int64)
    module.gather_be(buffer, pos, 2, np.empty(2, np.uint32))
    for width in (0, 5):
        with pytest.raises(ValueError, match="width"):
            module.gather_be(buffer, pos, width, np.empty(2, np.uint32))
    with pytest.raises(ValueError, match="items"):
        module.gather_be(buffer, pos, 2, np.empty(3, np.uint32))
    with pytest.raises(TypeError, match="positions"):
        module.gather_be(buffer, pos.astype(np.float64), 2, np.empty(2, np.uint32))


@settings(max_examples=200, deadline=None)
@given(buffer=st.binary(max_size=40), data=st.data(), columns=st.integers(0, 20))
def test_gather_rows_reads_each_byte_in_range(buffer: bytes, data: st.DataObject,
                                              columns: int) -> None:
    """Gather.rows (the heads the media finder's numpy reference decodes) byte by byte."""
    offset = data.draw(positions(len(buffer)))
    length = np.array(data.draw(st.lists(st.integers(-3, 50), min_size=offset.size,
                                         max_size=offset.size)), np.int64)
    head = Gather(np.frombuffer(buffer, np.uint8)).rows(offset, length, columns)
    assert head.shape == (offset.size, columns) and head.dtype == np.uint8
    for row, (start, size) in enumerate(zip(offset.tolist(), length.tolist(), strict=True)):
        want = [buffer[start + j] if j < size and 0 <= start + j < len(buffer) else 0
                for j in range(columns)]
        assert head[row].tolist() == want


# ---------------------------------------------------------------------------- media finder

RTP_PACKET_FIELDS = [f.name for f in fields(RtpPackets)]
RTCP_FIELDS = [f.name for f in fields(RtcpCandidates)]


@needs_extension
def test_media_finder_outputs_are_the_dataclass_fields() -> None:
    module = speedups.native
    assert module is not None
    assert list(module.RTP_PACKET_COLUMNS) == ["index", *RTP_PACKET_FIELDS[1:]]
    assert [name for name, _ in speedups.RTP_PACKET_COLUMNS] == list(module.RTP_PACKET_COLUMNS)
    assert list(module.RTCP_COLUMNS) == ["rtcp_" + name for name in speedups.RTCP_COLUMNS]
    assert RTCP_FIELDS == ["row", "offset", "length"]


def found_both_ways(buffer: np.ndarray, start: np.ndarray, size: np.ndarray, mode: np.ndarray,
                    flow: np.ndarray, direction: np.ndarray, what: str) -> MediaScan:
    """find_media in C and in numpy, asserted identical (dtypes too); the C result."""
    args = (Gather(buffer), start, size, mode, flow, direction)
    native = find_media(*args)
    with using(False):
        reference = find_media(*args)
    assert_same_columns(native.rtp, reference.rtp, RTP_PACKET_FIELDS, what)
    assert_same_columns(native.rtcp, reference.rtcp, RTCP_FIELDS, what)
    assert_same_columns(native, reference, ["zoom_valid", "zoom_layout"], what)
    return native


MODES = [0, 1, 2, 3, 4, 5, 6, 7]  # plain, Zoom server, Zoom P2P, none; +4 TURN


def find_media_in_capture(path: Path, chunk: int = 64 << 20) -> tuple[int, int]:
    """Every UDP payload of a capture under each flow mode, and under mixed modes; how many RTP
    packets and Zoom-verified payloads were found."""
    rng = np.random.default_rng(7)
    packets = zoom = 0
    for n, batch in enumerate(CaptureReader(path, chunk_bytes=chunk).batches()):
        cols = decode_batch(batch)
        assign = FlowTable().update(cols)
        rows = np.flatnonzero((cols.ip_proto == 17) & (assign.flow_index >= 0)
                              & (cols.payload_len >= 8))
        start, size = cols.payload_offset[rows], cols.payload_len[rows]
        flow, direction = assign.flow_index[rows], assign.direction[rows]
        mixed = rng.integers(0, 8, rows.size).astype(np.int8)
        for mode in [*(np.full(rows.size, m, np.int8) for m in MODES), mixed]:
            found = found_both_ways(batch.buffer, start, size, mode, flow, direction,
                                    f"{path.name} batch {n} mode {mode[:1]}")
            packets += found.rtp.row.size
            zoom += int(np.count_nonzero(found.zoom_valid))
    return packets, zoom


@needs_extension
def test_media_finders_agree_on_a_benchmark_capture(bench_capture: Path) -> None:
    packets, zoom = find_media_in_capture(bench_capture, chunk=8 << 20)
    assert packets > 100_000 and zoom > 10_000


@needs_extension
def test_media_finders_agree_on_corpus_and_sample_captures() -> None:
    """In small batches too (payloads at buffer ends)."""
    found = {path.name: find_media_in_capture(path, 4096) for path in real_captures()}
    assert found["zoom_meeting.pcap"][1] > 0 and found["zoom_p2p.pcap"][1] > 0
    assert sum(packets for packets, _ in found.values()) > 1000


def rtp_bytes(first: int, second: int, rest: bytes) -> bytes:
    return bytes([first, second]) + rest


@st.composite
def media_payload(draw: st.DrawFn) -> bytes:
    """An RTP or RTCP header (with CSRCs and extensions), one inside a TURN ChannelData or
    MS-TURN frame, a Zoom seed (test_zoom.py), or random bytes; then edited a little."""
    rtp = st.builds(rtp_bytes, st.sampled_from([0x80, 0x81, 0x90, 0x91, 0xA0, 0xB2, 0x9F]),
                    st.sampled_from([0, 8, 96, 111, 127, 200, 201, 0xE0, 0xEE]),
                    st.binary(max_size=40))
    channel = st.builds(lambda c, n, r: bytes([c, 1]) + n.to_bytes(2, "big") + r,
                        st.integers(0x40, 0x4F), st.integers(0, 80), rtp)
    ms_turn = st.builds(lambda h, r: b"\xff\x10" + h + r, st.binary(min_size=10, max_size=10),
                        rtp)
    data = bytearray(draw(rtp | channel | ms_turn | st.sampled_from(ZOOM_SEEDS)
                          | st.binary(max_size=90)))
    for _ in range(draw(st.integers(0, 3))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@needs_extension
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads=st.lists(media_payload(), min_size=1, max_size=12), data=st.data())
def test_media_finders_agree_on_generated_payloads(payloads: list[bytes],
                                                   data: st.DataObject) -> None:
    """Payloads back to back in one buffer, each with a mode, flow and direction; lengths that
    may disagree with the bytes (longer, shorter, negative), and starts anywhere."""
    buffer = b"".join(payloads)
    ends = np.cumsum([len(p) for p in payloads])
    start = ends - [len(p) for p in payloads]
    size = np.array([len(p) for p in payloads], np.int64)
    count = len(payloads)
    lengths = st.lists(st.integers(-3, 120), min_size=count, max_size=count)
    if data.draw(st.booleans()):
        size = np.array(data.draw(lengths), np.int64)
    if data.draw(st.booleans()):
        start = data.draw(positions(len(buffer)).filter(lambda p: p.size >= count))[:count]
    mode = np.array(data.draw(st.lists(st.integers(-8, 8), min_size=count, max_size=count)),
                    np.int8)
    flow = np.array(data.draw(st.lists(st.integers(0, 2**28), min_size=count, max_size=count)),
                    np.int64)
    direction = np.array(data.draw(st.lists(st.integers(-1, 2), min_size=count,
                                            max_size=count)), np.int8)
    found_both_ways(np.frombuffer(buffer, np.uint8), start.astype(np.int64), size, mode, flow,
                    direction, "generated")


@needs_extension
def test_media_finders_agree_on_each_encapsulation() -> None:
    """Plain RTP and RTCP, both inside TURN ChannelData and MS-TURN frames, and the Zoom seeds,
    under every flow mode: each kind of RTP packet is found, the same both ways."""
    rtp, rtcp = rtp_bytes(0x90, 0x6F, bytes(range(10)) + b"\xbe\xde\x00\x01" + bytes(20)), \
        rtp_bytes(0x81, 0xC8, bytes(30))
    payloads = [rtp, rtcp, *ZOOM_SEEDS]
    for inner in (rtp, rtcp):
        payloads += [b"\x40\x01" + len(inner).to_bytes(2, "big") + inner,
                     b"\x40\x01\x00\x08" + inner, b"\xff\x10" + bytes(10) + inner]
    buffer = np.frombuffer(b"".join(payloads), np.uint8)
    size = np.array([len(p) for p in payloads], np.int64)
    start = np.cumsum(size) - size
    flow, direction = np.arange(size.size, dtype=np.int64), (np.arange(size.size) % 2)
    kinds = set()
    for mode in MODES:
        found = found_both_ways(buffer, start, size, np.full(size.size, mode, np.int8), flow,
                                direction.astype(np.int8), f"mode {mode}")
        kinds |= set(found.rtp.encap.tolist())
        assert found.rtcp.row.size > 0 or mode == 3
    assert kinds == {0, 1, 2, 3}


@needs_extension
def test_media_finder_reuses_its_scratch_arrays() -> None:
    payload = rtp_bytes(0x80, 0, bytes(range(20)))
    buffer = np.frombuffer(payload * 3, np.uint8)
    start, size = np.arange(3, dtype=np.int64) * len(payload), np.full(3, len(payload))
    scratch = speedups.MediaScratch()
    args = (np.zeros(3, np.int8), np.arange(3, dtype=np.int64), np.zeros(3, np.int8))
    first = find_media(Gather(buffer), start, size, *args, scratch)
    assert first.rtp.row.tolist() == [0, 1, 2] and first.rtp.stream_key.tolist() == [
        (f << 34) | 0x06070809 for f in range(3)]  # SSRC: payload bytes 8-11
    arrays = scratch.rtp["offset"]
    second = find_media(Gather(buffer), start[:2], size[:2], *(a[:2] for a in args), scratch)
    assert scratch.rtp["offset"] is arrays and second.rtp.offset.base is arrays
    assert second.rtp.offset.tolist() == [0, len(payload)]


@needs_extension
def test_find_media_argument_checks() -> None:
    module = speedups.native
    assert module is not None
    n = 2
    inputs = [np.zeros(64, np.uint8), np.zeros(n, np.int64), np.full(n, 8, np.int64),
              np.zeros(n, np.int8), np.zeros(n, np.int64), np.zeros(n, np.int8)]

    def outputs(capacity: int = 3 * n) -> list[np.ndarray]:
        rtp = [np.empty(capacity, dtype) for _, dtype in speedups.RTP_PACKET_COLUMNS]
        rtcp = [np.empty(capacity, np.int64) for _ in speedups.RTCP_COLUMNS]
        return [*rtp, *rtcp, np.empty(n, bool), np.empty(n, np.int8)]

    assert module.find_media(*inputs, *outputs()) == (0, 0)
    with pytest.raises(TypeError, match="arguments"):
        module.find_media(*inputs)
    with pytest.raises(ValueError, match="per payload"):
        module.find_media(*inputs, *outputs(3 * n - 1))
    with pytest.raises(TypeError, match="mode"):
        module.find_media(*inputs[:3], np.zeros(n, np.int64), *inputs[4:], *outputs())
    with pytest.raises(ValueError, match="items"):
        module.find_media(*inputs[:5], np.zeros(n + 1, np.int8), *outputs())


# --------------------------------------------------------------------------- flow keys


@dataclass
class _FlowColumns:
    """The PacketColumns fields analyzer/flows.py's flow keys read."""

    src_hi: np.ndarray
    src_lo: np.ndarray
    sport: np.ndarray
    dst_hi: np.ndarray
    dst_lo: np.ndarray
    dport: np.ndarray
    ip_proto: np.ndarray


_SMALL_U64 = st.sampled_from([0, 1, 0xFFFF_0A00_0001, 2**63, 2**64 - 1])  # ties are likely


@needs_extension
@settings(max_examples=200, deadline=None)
@given(data=st.data(), count=st.integers(0, 60))
def test_flow_keys_agree(data: st.DataObject, count: int) -> None:
    def column(values: st.SearchStrategy[int], dtype: type) -> np.ndarray:
        return np.array(data.draw(st.lists(values, min_size=count, max_size=count)), dtype=dtype)

    ports = st.sampled_from([-1, 0, 53, 3478, 8801, 65535])
    cols = _FlowColumns(column(_SMALL_U64, np.uint64), column(_SMALL_U64, np.uint64),
                        column(ports, np.int32), column(_SMALL_U64, np.uint64),
                        column(_SMALL_U64, np.uint64), column(ports, np.int32),
                        column(st.sampled_from([6, 17, 255]), np.uint8))
    rows = np.array(data.draw(st.lists(st.integers(0, max(count - 1, 0)),
                                       max_size=3 * count if count else 0)), dtype=np.int64)
    key_c, first_c = flows_module.flow_keys(cols, rows)  # type: ignore[arg-type]
    key_py, first_py = flows_module.flow_keys_numpy(cols, rows)  # type: ignore[arg-type]
    assert key_c.dtype == key_py.dtype and first_c.dtype == first_py.dtype
    assert np.array_equal(key_c, key_py) and np.array_equal(first_c, first_py)


@needs_extension
def test_flow_keys_refuse_rows_out_of_range() -> None:
    one = _FlowColumns(*(np.zeros(1, dtype=t) for t in (np.uint64, np.uint64, np.int32,
                                                        np.uint64, np.uint64, np.int32,
                                                        np.uint8)))
    with pytest.raises(IndexError):
        flows_module.flow_keys(one, np.array([1], dtype=np.int64))  # type: ignore[arg-type]
    with pytest.raises(IndexError):
        flows_module.flow_keys(one, np.array([-1], dtype=np.int64))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- handshake parsers


def parsed_both_ways(parse: Callable[[bytes], object], data: bytes) -> object:
    """What `parse` gives for `data` (or the text of its error) with the C reader and with
    Python's, asserted equal."""
    with using(True):
        fast = tls_outcome(parse, data)
    with using(False):
        slow = tls_outcome(parse, data)
    assert fast == slow
    return fast


GREASE_OR_NOT = st.one_of(st.sampled_from([0x0A0A, 0x3A3A, 0xFAFA, 0x0A1A]),
                          st.integers(0, 0xFFFF))
SMALL_BYTES = st.binary(max_size=12)


@st.composite
def client_hello_extension(draw: st.DrawFn) -> bytes:
    """One extension: the ones the C reader reads, in usual and unusual layouts, or another."""
    names = st.lists(SMALL_BYTES, max_size=3)
    choice = draw(st.integers(0, 10))
    if choice == 0:
        return tls_sni_ext(draw(st.binary(max_size=20)))
    if choice == 1:  # server_name: any name type, several names, trailing bytes
        entries = b"".join(bytes([draw(st.sampled_from([0, 1]))]) + tls_vec(name, 2)
                           for name in draw(names))
        return tls_ext(0, tls_vec(entries, 2) + draw(st.sampled_from([b"", b"\x00"])))
    if choice == 2:
        listed = b"".join(tls_vec(name, 1) for name in draw(names))  # (trailing bytes: bad)
        return tls_ext(16, tls_vec(listed, 2) + draw(st.sampled_from([b"", b"", b"\x00"])))
    if choice == 3:
        return tls_ext(43, tls_vec(tls_u16s(*draw(st.lists(GREASE_OR_NOT, max_size=4))), 1))
    if choice == 4:
        return tls_ext(14, tls_vec(tls_u16s(*draw(st.lists(GREASE_OR_NOT, max_size=3))), 2)
                       + tls_vec(draw(SMALL_BYTES), 1) + draw(st.sampled_from([b"", b"", b"x"])))
    if choice == 5:  # ALPN, supported_versions or use_srtp holding any bytes
        return tls_ext(draw(st.sampled_from([0, 14, 16, 43])), draw(SMALL_BYTES))
    if choice == 6:  # lists of any length (odd ones are malformed), filling their extension
        return tls_ext(43, tls_vec(draw(SMALL_BYTES), 1))
    if choice == 7:
        return tls_ext(14, tls_vec(draw(SMALL_BYTES), 2) + tls_vec(draw(SMALL_BYTES), 1))
    return tls_ext(draw(st.sampled_from([57, 0xFFA5, 0xFE0D, 0x1A1A, 23, 65281])),
                   draw(SMALL_BYTES))


@st.composite
def client_hello_message(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A ClientHello body (TLS or DTLS), well-formed or edited, cut or extended."""
    dtls = draw(st.booleans())
    extensions = draw(st.one_of(st.none(), st.lists(client_hello_extension(), max_size=6)))
    body = bytearray(tls_client_hello_body(
        None if extensions is None else b"".join(extensions),
        suites=tuple(draw(st.lists(GREASE_OR_NOT, max_size=5))),
        cookie=draw(SMALL_BYTES) if dtls else None, session_id=draw(st.binary(max_size=32))))
    for at, value in draw(st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)),
                                   max_size=2)):
        body[at % len(body)] = value
    cut = draw(st.integers(0, len(body)))
    return bytes(body[:cut] if draw(st.booleans()) else body + draw(SMALL_BYTES)), dtls


@needs_extension
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(client_hello_message())
def test_client_hello_readers_agree(message: tuple[bytes, bool]) -> None:
    """The C reader of ClientHellos gives what Python's gives, or leaves the hello to it: the
    same fields, or the same error, on any hello, well-formed or not."""
    body, dtls = message
    parsed_both_ways(lambda data: parse_client_hello(data, dtls=dtls), body)


@needs_extension
def test_client_hello_c_reader_reads_the_usual_hellos() -> None:
    """C reads the usual hellos itself (else the test above could not fail), and leaves the
    malformed ones and unusual layouts to Python."""
    assert speedups.native is not None
    full = tls_client_hello_body(FULL_CLIENT_EXTENSIONS, suites=(0x2A2A, 0x1301))
    usual = [full, tls_client_hello_body(None), tls_client_hello_body(b""),
             tls_client_hello_body(FULL_CLIENT_EXTENSIONS, cookie=b"\x01\x02")]
    for body, dtls in zip(usual, [False, False, False, True], strict=True):
        fields = speedups.native.client_hello(body, dtls)
        assert fields is not None
        with using(False):
            assert ClientHello(*fields) == parse_client_hello(body, dtls=dtls)
    two_names = tls_ext(0, tls_vec(b"\x01" + tls_vec(b"a", 2) + b"\x00" + tls_vec(b"b", 2), 2))
    odd_suites = tls_u16s(0x0303) + bytes(32) + tls_vec(b"", 1) + tls_vec(b"\x13\x01\x00", 2)
    for body in (full[:-1], full + b"\x00", tls_client_hello_body(two_names),
                 odd_suites + tls_vec(b"\x00", 1)):
        assert speedups.native.client_hello(body, False) is None


@st.composite
def dns_message_bytes(draw: st.DrawFn) -> bytes:
    """A DNS message: questions and answers of the kept types and others, names compressed by
    pointers to earlier ones (or anywhere), up to past the longest name, with record lengths
    right or wrong and counts right or wrong; then edited, cut or extended."""
    labels = st.one_of(st.lists(st.binary(min_size=1, max_size=8), max_size=3),
                       st.lists(st.binary(min_size=50, max_size=63), min_size=3, max_size=5))
    message = bytearray(12)

    def name() -> bytes:
        own = b"".join(bytes([len(label)]) + label for label in draw(labels))
        if draw(st.booleans()):
            return own + b"\x00"
        return own + dns_pointer(draw(st.integers(0, len(message) + len(own) + 2)))

    questions = draw(st.integers(0, 3))
    for _ in range(questions):
        message += dns_question(name(), draw(st.sampled_from([1, 28, 5])))
    answers = draw(st.integers(0, 4))
    for _ in range(answers):
        rtype = draw(st.sampled_from([1, 1, 28, 5, 12, 15, 16]))
        owner = name()
        if rtype in (5, 12) and draw(st.booleans()):  # the target name in place
            start = len(message) + len(owner) + 10
            message += dns_record(owner, rtype, draw(st.integers(0, 2**32 - 1)), b"")
            target = name()
            message[start - 2 : start] = struct.pack("!H", draw(st.sampled_from(
                [len(target), len(target), max(len(target) - 1, 0), len(target) + 1])))
            message += target
            continue
        size = {1: 4, 28: 16}.get(rtype, draw(st.integers(0, 6)))
        size = draw(st.sampled_from([size, size, size + 1]))
        message += dns_record(owner, rtype, draw(st.integers(0, 2**32 - 1)),
                              draw(st.binary(min_size=size, max_size=size)))
    counts = draw(st.sampled_from([(questions, answers)] * 3 + [(questions + 1, answers),
                                                                (questions, answers + 1)]))
    message[:12] = dns_header(draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 0xFFFF)),
                              *counts)
    for at, value in draw(st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)),
                                   max_size=2)):
        message[at % len(message)] = value
    if draw(st.booleans()):
        return bytes(message)
    cut = draw(st.integers(0, len(message)))
    return bytes(message[:cut] if draw(st.booleans()) else message + draw(SMALL_BYTES))


@needs_extension
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dns_message_bytes())
def test_dns_readers_agree(data: bytes) -> None:
    """The C reader of DNS messages gives what Python's gives, or leaves the message to it."""
    parsed_both_ways(parse_dns, data)


@needs_extension
def test_dns_c_reader_reads_well_formed_messages() -> None:
    assert speedups.native is not None
    aaaa = (dns_header(7, 0x8180, 1, 2) + dns_question(b"\x01v\x00", 28)
            + dns_record(dns_pointer(12), 28, 5, bytes(10) + b"\xff\xff\x01\x02\x03\x04")
            + dns_record(dns_pointer(12), 15, 5, b"\x00\x01\x00"))
    for data in (zoom_cname_response(), aaaa, dns_header(1, 0, 0, 0)):
        parsed = speedups.native.dns_message(data)
        assert parsed is not None
        with using(False):
            assert parse_dns(data) == dns_from_c(*parsed)
    for data in (zoom_cname_response()[:-1], dns_header(1, 0, 1, 0), b"\x00" * 11):
        assert speedups.native.dns_message(data) is None
    for last in (62, 63):  # names of 255 bytes (the longest) and 256, one through a pointer
        labels = b"".join(bytes([size]) + b"a" * size for size in (63, 63, 63))
        tail = bytes([last]) + b"b" * last + b"\x00"
        whole = dns_header(1, 0, 1, 0) + dns_question(labels + tail)
        split = dns_header(1, 0, 2, 0) + dns_question(tail) + dns_question(labels + dns_pointer(12))
        for data in (whole, split):
            assert (speedups.native.dns_message(data) is None) == (last == 63)
            assert isinstance(parsed_both_ways(parse_dns, data), DnsMessage) == (last == 62)
