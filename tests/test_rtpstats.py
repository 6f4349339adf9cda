"""Tests of analyzer.rtpstats from first principles.

Hand-computed streams (RFC 3550 A.8 jitter, tshark's rules as documented in the module), a plain
per-packet loop written from those rules as the reference for random adversarial streams, batch
splits and merges. The comparison with tshark itself is in test_rtpstats_tshark.py.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.rtpstats import (
    RtpStreamAccumulator,
    StreamStatistics,
    clock_rate_for_encoding,
    decaying_scan,
    parse_tshark_rtp_streams,
)

PCMU, CN, H263, L16_MONO, DYNAMIC = 0, 13, 34, 11, 96


@dataclass(frozen=True, slots=True)
class Packet:
    arrival_s: float
    seq: int
    ts: int
    pt: int = PCMU
    marker: bool = False
    size: int = 172


def feed(
    packets: list[Packet],
    splits: tuple[int, ...] = (),
    clock_rate: int | None = None,
    dynamic_clock_rates: Mapping[int, int] | None = None,
) -> RtpStreamAccumulator:
    accumulator = RtpStreamAccumulator(clock_rate, dynamic_clock_rates, keep_for_merge=True)
    for low, high in itertools.pairwise((0, *splits, len(packets))):
        update(accumulator, packets, low, high)
    return accumulator


def update(accumulator: RtpStreamAccumulator, packets: list[Packet], low: int, high: int) -> None:
    part = packets[low:high]
    accumulator.update(
        frame=np.arange(low + 1, high + 1),
        arrival_s=np.array([p.arrival_s for p in part]),
        sequence_number=np.array([p.seq for p in part], dtype=np.uint16),
        timestamp=np.array([p.ts for p in part], dtype=np.uint32),
        payload_type=np.array([p.pt for p in part], dtype=np.uint8),
        marker=np.array([p.marker for p in part], dtype=bool),
        rtp_bytes=np.array([p.size for p in part]),
    )


def stats(
    packets: list[Packet],
    clock_rate: int | None = None,
    dynamic_clock_rates: Mapping[int, int] | None = None,
) -> StreamStatistics:
    return feed(packets, (), clock_rate, dynamic_clock_rates).result()


def constant_rate(
    count: int, *, start_seq: int = 1000, start_ts: int = 5000, epoch: float = 100.0
) -> list[Packet]:
    """20 ms PCMU packets (160 ticks at 8 kHz) arriving on schedule.

    Times near 100 s keep float64 rounding negligible; epoch times (1.7e9 s) carry 0.24 us steps.
    """
    return [
        Packet(epoch + 0.02 * i, (start_seq + i) % 65536, (start_ts + 160 * i) % 2**32)
        for i in range(count)
    ]


# ---------------------------------------------------------------------------- hand-computed


def test_constant_rate_stream_has_no_jitter_and_no_loss() -> None:
    result = stats(constant_rate(50))
    assert (result.packets, result.expected, result.lost, result.loss_pct) == (50, 50, 0, 0.0)
    assert result.jitter_mean_ms == pytest.approx(0.0, abs=1e-9)
    assert result.jitter_max_ms == pytest.approx(0.0, abs=1e-9)
    assert result.delta_min_ms == pytest.approx(20.0)
    assert result.delta_mean_ms == pytest.approx(20.0)
    assert result.delta_max_ms == pytest.approx(20.0)
    assert not result.problem and result.sequence_errors == 0
    assert (result.duplicates, result.out_of_order) == (0, 0)
    assert result.clock_rate == 8000
    assert result.duration_s == pytest.approx(0.98)
    assert result.bitrate_kbps == pytest.approx(50 * 172 * 8 / 0.98 / 1000)
    assert (result.first_frame, result.last_frame) == (1, 50)


def test_epoch_arrival_times_are_precise_to_a_microsecond() -> None:
    result = stats(constant_rate(500, epoch=1_700_000_000.0))
    assert result.jitter_max_ms is not None and result.jitter_max_ms < 1e-3
    assert result.delta_max_ms == pytest.approx(20.0, abs=1e-3)


def test_one_late_packet_gives_the_rfc3550_jitter() -> None:
    # Packet 2 arrives 10 ms late. Transit differences D: 0, 10, 10, 0 (ms).
    # J: 0, 10/16, 0.625*15/16 + 10/16, 1.2109375*15/16.
    epoch = 100.0
    arrivals_ms = (0, 20, 50, 60, 80)
    packets = [Packet(epoch + t / 1000, i + 1, 160 * i) for i, t in enumerate(arrivals_ms)]
    result = stats(packets)
    jitters = (0.0, 0.625, 1.2109375, 1.13525390625)
    assert result.jitter_max_ms == pytest.approx(1.2109375, abs=1e-6)
    assert result.jitter_min_ms == pytest.approx(0.0, abs=1e-6)
    assert result.jitter_mean_ms == pytest.approx(sum(jitters) / 4, abs=1e-6)
    assert (result.delta_min_ms, result.delta_max_ms) == pytest.approx((10.0, 30.0), abs=1e-5)
    assert result.delta_mean_ms == pytest.approx(20.0, abs=1e-5)


def test_sequence_wrap_at_65535_is_not_a_loss() -> None:
    result = stats(constant_rate(8, start_seq=65530))
    assert (result.expected, result.lost) == (8, 0)
    assert not result.problem and result.sequence_errors == 0


def test_many_wraps_count_cycles() -> None:
    result = stats(constant_rate(200_000, start_seq=100))
    assert (result.expected, result.lost, result.sequence_errors) == (200_000, 0, 0)


def test_a_lost_packet() -> None:
    packets = [p for p in constant_rate(20) if p.seq != 1010]
    result = stats(packets)
    assert (result.packets, result.expected, result.lost) == (19, 20, 1)
    assert result.loss_pct == pytest.approx(5.0)
    assert result.sequence_errors == 1 and result.problem
    assert (result.duplicates, result.out_of_order) == (0, 0)


def test_a_duplicate_makes_lost_negative() -> None:
    packets = constant_rate(20)
    packets.insert(6, packets[5])
    result = stats(packets)
    assert (result.packets, result.expected, result.lost) == (21, 20, -1)
    assert result.loss_pct == pytest.approx(-5.0)
    assert (result.duplicates, result.out_of_order, result.sequence_errors) == (1, 0, 1)


def test_reordered_pair() -> None:
    packets = constant_rate(20)
    packets[10], packets[11] = packets[11], packets[10]
    result = stats(packets)
    assert (result.expected, result.lost) == (20, 0)
    # tshark: the jump to 1011 is one error, the late 1010 another.
    assert (result.out_of_order, result.duplicates, result.sequence_errors) == (1, 0, 2)


def test_timestamp_before_the_first_is_a_problem_and_skipped() -> None:
    packets = constant_rate(10)
    packets[5] = Packet(packets[5].arrival_s + 0.005, packets[5].seq, 4000)  # before ts 5000
    result = stats(packets)
    # Packet 5 does not move tshark's highest sequence number either, so packet 6 counts as a jump.
    assert result.problem and result.sequence_errors == 1 and result.lost == 0
    # Packet 5 moves neither the jitter nor the time reference: packet 6 is on schedule.
    assert result.jitter_max_ms == pytest.approx(0.0, abs=1e-6)
    assert result.delta_max_ms == pytest.approx(40.0, abs=1e-5)


def test_comfort_noise_and_the_packet_after_it_are_not_regular() -> None:
    # PT 0, 0, 13, 0, 0 at 0, 20, 45, 60, 80 ms: D = 0, 5, 5, 0 -> J = 0, 0.3125,
    # 0.60546875, 0.567626953125. Regular packets: index 1 and 4. tshark's mean divides by the
    # packet index: n=1 -> 0; n=4 -> (0 * 3 + 0.567626953125) / 4.
    epoch = 100.0
    times, types = (0, 20, 45, 60, 80), (PCMU, PCMU, CN, PCMU, PCMU)
    schedule = enumerate(zip(times, types, strict=True))
    packets = [Packet(epoch + t / 1000, i, 160 * i, pt) for i, (t, pt) in schedule]
    result = stats(packets)
    assert result.jitter_max_ms == pytest.approx(0.567626953125, abs=1e-6)
    assert result.jitter_mean_ms == pytest.approx(0.567626953125 / 4, abs=1e-6)
    assert result.delta_mean_ms == pytest.approx(20.0, abs=1e-5)
    assert result.payload_types == (PCMU, CN)


def test_marker_bit_excludes_a_packet_from_delta_statistics() -> None:
    # Arrivals 0, 20, 40, 360 (marked), 80, 100 ms: the 320 ms delta of the marked packet is
    # left out, the -280 ms of the next one (80 - 360) is counted.
    packets = constant_rate(6)
    packets[3] = Packet(packets[3].arrival_s + 0.3, packets[3].seq, packets[3].ts, marker=True)
    result = stats(packets)
    assert result.delta_max_ms == pytest.approx(20.0, abs=1e-5)
    assert result.delta_min_ms == pytest.approx(-280.0, abs=1e-5)


def test_unknown_dynamic_clock_rate_gives_no_jitter() -> None:
    packets = [Packet(p.arrival_s, p.seq, p.ts, DYNAMIC) for p in constant_rate(10)]
    unknown = stats(packets)
    assert unknown.jitter_mean_ms is None and unknown.jitter_max_ms is None
    assert unknown.clock_rate is None and unknown.delta_mean_ms == pytest.approx(20.0)
    known = stats(packets, clock_rate=8000)
    assert known.jitter_max_ms == pytest.approx(0.0, abs=1e-9) and known.clock_rate == 8000
    no_events = stats(packets, clock_rate=8000, dynamic_clock_rates={DYNAMIC: 0})
    assert no_events.jitter_max_ms is None


def test_static_payload_type_ignores_the_callers_rate() -> None:
    assert stats(constant_rate(5), clock_rate=48000).clock_rate == 8000


def test_l16_at_44100_hz_uses_44_ticks_per_ms_as_tshark_does() -> None:
    packets = [Packet(1.0 + 0.01 * i, i, 441 * i, L16_MONO) for i in range(2)]
    result = stats(packets)
    assert result.jitter_max_ms == pytest.approx(abs(10.0 - 441 / 44) / 16, rel=1e-6)


def test_single_packet_stream() -> None:
    result = stats(constant_rate(1))
    assert (result.packets, result.expected, result.lost) == (1, 1, 0)
    assert result.delta_mean_ms is None and result.jitter_mean_ms is None
    assert result.bitrate_kbps is None and result.duration_s == 0.0


def test_empty_accumulator_has_no_result() -> None:
    with pytest.raises(ValueError):
        RtpStreamAccumulator(None).result()


def test_encoding_clock_rates() -> None:
    assert clock_rate_for_encoding("AMR-WB") == 16000  # the longer name wins
    assert clock_rate_for_encoding("amr") == 8000
    assert clock_rate_for_encoding("H264") == 90000
    assert clock_rate_for_encoding("telephone-event") == 0
    assert clock_rate_for_encoding("opus") is None  # not in tshark 4.0's table


# ---------------------------------------------------------------------------- the scan


def test_decaying_scan_matches_the_recursion() -> None:
    rng = np.random.default_rng(7)
    inputs = rng.exponential(1.0, 20_000) * np.where(rng.random(20_000) < 0.01, 1e6, 1.0)
    expected, state = np.empty_like(inputs), 3.5
    for k, value in enumerate(inputs):
        state = 15 / 16 * state + value
        expected[k] = state
    assert np.allclose(decaying_scan(inputs, 15 / 16, 3.5), expected, rtol=1e-12, atol=0)


# ---------------------------------------------------------------------------- reference loop


@dataclass(slots=True)
class RunningMean:
    """tshark's running mean at regular packets, and the values it saw."""

    mean: float = 0.0
    values: list[float] = field(default_factory=list)

    def add(self, value: float, index: int) -> None:
        self.mean = (self.mean * (index - 1) + value) / index
        self.values.append(value)


def reference(packets: list[Packet], rates: dict[int, int]) -> dict[str, object]:
    """The documented rules, one packet at a time (a transcription, not the vectorized code)."""
    first, t0 = packets[0], packets[0].arrival_s
    time_ms = last_nominal = jitter = 0.0
    highest = stop = first.seq
    latched, cycles, errors, problem, previous_pt = False, 0, 0, False, first.pt
    means = {"delta": RunningMean(), "jitter": RunningMean()}
    for n, packet in enumerate(packets[1:], start=1):
        t = (packet.arrival_s - t0) * 1000
        forward = (packet.ts - first.ts) % 2**32
        in_time = forward < 2**31 or (packet.ts < first.ts and forward == 2**31)
        seq = packet.seq
        if in_time and not latched and (seq < first.seq or (seq == 0 and stop == 65535)):
            cycles, latched = cycles + 1, True
        elif in_time and latched and seq > first.seq:
            latched = False
        wrap = in_time and highest == 65535 and seq == 0
        if (seq <= highest and not wrap) or (in_time and seq > highest + 1):
            errors += 1
        if in_time and (seq > highest or highest - seq > 0xFF00):
            highest = seq
        ticks = rates.get(packet.pt, 0) // 1000
        delta = t - time_ms
        if in_time and ticks:
            nominal = forward / ticks
            jitter = (15 * jitter + abs(t - (time_ms + nominal - last_nominal))) / 16
            last_nominal = nominal
        regular = in_time and not packet.marker and packet.pt not in (13, 19)
        regular = regular and previous_pt not in (13, 19)
        for name, value, wanted in (("delta", delta, True), ("jitter", jitter, bool(ticks))):
            if regular and wanted:
                means[name].add(value, n)
        problem = problem or not in_time
        time_ms = t if in_time else time_ms
        stop, previous_pt = seq, packet.pt
    expected = stop + cycles * 65536 - first.seq + 1
    out: dict[str, object] = {
        "expected": expected,
        "lost": expected - len(packets),
        "sequence_errors": errors,
        "problem": problem or errors > 0,
    }
    for name, running in means.items():
        values = running.values
        out[f"{name}_mean_ms"] = running.mean if values else None
        out[f"{name}_max_ms"] = max(0.0, *values) if values else None
        out[f"{name}_min_ms"] = min(values) if values else None
    return out


def adversarial_stream(seed: int, count: int) -> list[Packet]:
    """Jitter, loss, duplicates, reordering, sequence and timestamp jumps, CN, markers."""
    rng = random.Random(seed)
    seq = rng.choice([rng.randrange(65536), 65535 - rng.randrange(60), 0])
    ts = rng.choice([rng.randrange(2**32), 2**32 - rng.randrange(1, 9000)])
    kinds = rng.choice([[PCMU], [PCMU, CN], [PCMU, 101], [DYNAMIC], [H263, 19, PCMU]])
    arrival, packets = 1.7e9 + rng.random(), []
    for _ in range(count):
        roll, sent_seq, sent_ts = rng.random(), seq, ts
        if roll < 0.05:
            sent_seq = (seq - rng.randrange(0, 5)) % 65536
        elif roll < 0.08:
            seq = sent_seq = (seq + rng.randrange(2, 50)) % 65536
        elif roll < 0.09:
            seq = sent_seq = rng.randrange(65536)
        if rng.random() < 0.03:
            sent_ts = (ts - rng.randrange(1, 5000)) % 2**32
        if rng.random() < 0.005:
            ts = (ts + rng.choice([2**31, 3 * 2**30])) % 2**32
        pt = rng.choice(kinds) if rng.random() < 0.2 else kinds[0]
        packets.append(Packet(arrival, sent_seq, sent_ts, pt, rng.random() < 0.05))
        seq = seq if roll < 0.05 else (seq + 1) % 65536
        ts, arrival = (ts + 160) % 2**32, arrival + max(0.0, 0.02 + rng.gauss(0, 0.004))
    return packets


def assert_close(result: StreamStatistics, other: StreamStatistics | dict[str, object]) -> None:
    for name in ("expected", "lost", "sequence_errors", "problem"):
        want = other[name] if isinstance(other, dict) else getattr(other, name)
        assert getattr(result, name) == want, name
    for kind in ("delta", "jitter"):
        for stat in ("mean", "max", "min"):
            name = f"{kind}_{stat}_ms"
            want = other[name] if isinstance(other, dict) else getattr(other, name)
            got = getattr(result, name)
            assert (got is None) == (want is None), name
            if got is not None:
                assert got == pytest.approx(want, rel=1e-9, abs=1e-9), name


RATES = {pt: 8000 for pt in (PCMU, CN, 19)} | {H263: 90000}


@pytest.mark.parametrize("seed", range(40))
def test_vectorized_equals_the_per_packet_loop(seed: int) -> None:
    packets = adversarial_stream(seed, random.Random(seed).randrange(1, 2500))
    assert_close(stats(packets), reference(packets, RATES))


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    count=st.integers(2, 1500),
    cuts=st.lists(st.floats(0, 1, exclude_min=True, exclude_max=True), max_size=6),
)
def test_any_batch_split_gives_the_same_result(seed: int, count: int, cuts: list[float]) -> None:
    packets = adversarial_stream(seed, count)
    splits = tuple(sorted({max(1, int(c * count)) for c in cuts}))
    whole, split = stats(packets), feed(packets, splits).result()
    assert_close(split, whole)
    for name in ("packets", "duplicates", "out_of_order", "payload_types", "last_frame"):
        assert getattr(split, name) == getattr(whole, name)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    count=st.integers(2, 1500),
    cuts=st.lists(st.floats(0, 1, exclude_min=True, exclude_max=True), min_size=1, max_size=3),
    nested=st.booleans(),
)
def test_merging_consecutive_parts_equals_one_pass(
    seed: int, count: int, cuts: list[float], nested: bool
) -> None:
    packets = adversarial_stream(seed, count)
    bounds = (0, *sorted({max(1, int(c * count)) for c in cuts}), count)
    parts = [feed(packets[lo:hi]) for lo, hi in itertools.pairwise(bounds) if hi > lo]
    if nested:  # ((a + (b + (c ...)))
        for earlier, later in zip(parts[-2::-1], parts[:0:-1], strict=True):
            earlier.merge(later)
    else:
        for later in parts[1:]:
            parts[0].merge(later)
    merged, whole = parts[0].result(), stats(packets)
    assert_close(merged, whole)
    for item in fields(StreamStatistics):
        if not item.name.endswith("_ms") and item.name not in ("first_frame", "last_frame"):
            assert getattr(merged, item.name) == pytest.approx(getattr(whole, item.name))


def test_merge_leaves_the_later_part_unchanged() -> None:
    packets = adversarial_stream(3, 400)
    earlier, later = feed(packets[:150]), feed(packets[150:])
    before = later.result()
    earlier.merge(later)
    assert later.result() == before


# ---------------------------------------------------------------------------- tshark's table


def tshark_row(src: str, dst: str, ssrc: int, payload: str, figures: list[float]) -> str:
    """A row as tshark 4.0's ui/cli/tap-rtp.c formats it ("%13.6f %13.6f %15s %5u ..."),
    12 packets, lost -1 (-9.1%), the problem column after the six figures."""
    numbers = " ".join(f"{value:15.3f}" for value in figures)
    head = f"{27.8:13.6f} {28.8:13.6f} {src:>15} {5004:5d} {dst:>15} {40000:5d} 0x{ssrc:08X}"
    return f"{head} {payload:>16} {12:5d} {-1:5d} ({-9.1:.1f}%) {numbers} "


def test_parse_tshark_rtp_streams() -> None:
    figures = [0.474, 281.861, 34261.832, -1.0, 0.0, 0.0]
    text = "\n".join(
        [
            "========================= RTP Streams ========================",
            "   Start time      End time     Src IP addr  Port    Dest IP addr  Port       SSRC",
            tshark_row("10.35.60.100", "2001:db8::1", 0xEAF0EAF, "g711A, CN, RTPType-100", figures)
            + "X",
            tshark_row("10.0.0.1", "10.0.0.2", 0x1, "h263", figures),
            "==============================================================",
        ]
    )
    rows = parse_tshark_rtp_streams(text)
    assert len(rows) == 2
    first = rows[0]
    assert (first["src"], first["dst"], first["ssrc"]) == ("10.35.60.100", "2001:db8::1", 0xEAF0EAF)
    assert (first["src_port"], first["dst_port"]) == (5004, 40000)
    assert (first["packets"], first["lost"]) == (12, -1)
    assert first["payload"] == "g711A, CN, RTPType-100" and first["problem"] is True
    assert first["lost_pct"] == -9.1 and first["start_time"] == 27.8
    assert [first[k] for k in ("min_delta_ms", "mean_delta_ms", "max_delta_ms")] == figures[:3]
    assert [first[k] for k in ("min_jitter_ms", "mean_jitter_ms", "max_jitter_ms")] == figures[3:]
    assert rows[1]["problem"] is False and rows[1]["payload"] == "h263"


def test_the_accumulator_keeps_its_own_copy_of_the_columns() -> None:
    packets = adversarial_stream(5, 300)
    arrivals = np.array([p.arrival_s for p in packets[100:]])
    later = RtpStreamAccumulator(None, keep_for_merge=True)
    later.update(
        frame=np.arange(101, 301),
        arrival_s=arrivals,
        sequence_number=np.array([p.seq for p in packets[100:]]),
        timestamp=np.array([p.ts for p in packets[100:]]),
        payload_type=np.array([p.pt for p in packets[100:]]),
        marker=np.array([p.marker for p in packets[100:]]),
        rtp_bytes=np.full(200, 172),
    )
    arrivals[:] = 0.0  # a caller reusing its buffer must not change what was fed
    earlier = feed(packets[:100])
    earlier.merge(later)
    assert_close(earlier.result(), stats(packets))
