"""Per-RTP-stream statistics computed exactly as tshark 4.0 computes ``-z rtp,streams``.

How tshark 4.0 computes each figure. Sources: Wireshark's ``ui/tap-rtp-analysis.c``
(``rtppacket_analyse``), ``ui/tap-rtp-common.c`` (``rtpstream_info_calculate``,
``rtpstream_info_analyse_process``), ``ui/cli/tap-rtp.c`` and ``epan/dissectors/packet-rtp.c``,
read in the versions before and after 4.0 that the code index holds; which variant 4.0 runs was
settled by replaying 360 random adversarial streams through tshark 4.0.17 and matching every
printed figure, and the clock-rate name table by the strings in the 4.0.17 binary.

* **Stream key**: source address and port, destination address and port, SSRC. Packets are
  analysed in capture order; the first packet only initialises the state.
* **Time**: arrival in milliseconds (``rel_ts``). ``time`` is the arrival of the last packet whose
  RTP timestamp is *in time sequence*: ``(ts - first_ts) mod 2**32 < 2**31`` (plus an off-by-one:
  when ``ts < first_ts`` a forward distance of exactly ``2**31`` also counts). So the test is
  against the stream's **first** timestamp, not the previous one: 90 kHz streams longer than
  6.6 h, or streams whose timestamp jumps by half the space, turn "out of time" for good.
* **Clock rate** (per packet, from that packet's payload type): static PTs < 96 use tshark's own
  table (RFC 3551 plus PT 1, 2, 19 at 8000 Hz; 44100 Hz for L16); dynamic PTs use the rate of the
  SDP ``rtpmap`` when SDP set the stream up, else a table of encoding names (AMR, H264, red ...;
  no Opus in 4.0), else 0. ``telephone-event`` is forced to 0. Rate 0 means "no jitter".
  Milliseconds per tick use **integer** division ``rate // 1000`` (44100 Hz counts as 44 kHz).
* **Jitter** (only packets in time sequence with a nonzero rate): ``nominal = fwd / (rate // 1000)``
  with ``fwd = (ts - first_ts) mod 2**32``; ``D = |t - (time + nominal - last_nominal)|`` where
  ``last_nominal`` is the nominal time of the last such packet (0 after the first packet; packets
  without a rate do move ``time`` but not ``last_nominal``); ``J = (15 J + D) / 16`` (RFC 3550
  A.8). Out-of-time packets leave ``J``, ``time`` and delta untouched.
* **Delta**: ``t - time`` for packets in time sequence.
* **Regular packets** feed Min/Mean/Max Delta and Min/Mean/Max Jitter (jitter only if the rate is
  nonzero): not the first packet, marker bit clear, PT not comfort noise (13 or 19), previous
  packet's PT not comfort noise, timestamp in time sequence. The jitter filter itself runs on
  every in-time packet with a rate; marker bits and CN only keep a packet out of these figures,
  and a payload-type change only changes the clock rate.
* **Mean Delta / Mean Jitter** are not plain means: at a regular packet with packet index ``n``
  (0 for the first packet of the stream) tshark sets ``mean = (mean * (n - 1) + x) / n``. With no
  irregular packet this is the mean over the ``N - 1`` deltas; irregular packets make earlier
  values weigh more. Mean Jitter averages ``J`` (not ``D``). Max starts at 0, Min prints -1 when
  no regular packet contributed.
* **Expected / Lost**: ``expected = stop + cycles * 65536 - start + 1`` with ``start`` the first
  packet's sequence number and ``stop`` the **last** packet's (not the highest); ``cycles`` counts
  wraps with a latch: an in-time packet with ``seq < start`` (or ``seq == 0`` right after 65535)
  counts a cycle unless the latch is set, and sets it; an in-time packet with ``seq > start``
  clears it. ``lost = expected - packets`` may be negative (duplicates); ``Lost %`` is
  ``100 * lost / expected``.
* **Problems?** is ``X`` when any packet had a timestamp out of time sequence or a sequence error:
  tshark keeps the highest in-time sequence number ``sn`` (moving forward when ``seq > sn``, or
  across the wrap when ``sn - seq > 0xFF00``); a jump forward by more than one is an error (lost),
  so is ``seq <= sn`` (late or duplicate; 65535 -> 0 is fine).
* Not printed by ``rtp,streams`` but computed by tshark: bandwidth (RTP bytes plus 28 (IPv4) or 48
  (IPv6) header bytes over a 1 s sliding window), skew and clock drift.

What this module adds, its own definitions (not tshark's): ``duplicates`` (packets whose extended
sequence number was already seen, looking back at most ``DUPLICATE_WINDOW`` = 4096 numbers below
the highest seen before, so that the state per stream is small and bounded; a repeat from further
back counts as out of order: 4096 packets are seconds of video and a minute of audio, and a
network duplicate comes at once), ``out_of_order`` (other packets whose extended sequence number
is below the highest seen before), ``bitrate_kbps`` (RTP bytes, header and payload, excluding
UDP/IP, times 8 over the stream's duration) and the extended sequence number itself, unwrapped
per stream as Wireshark's RTP dissector does (nearest to the previous packet's).

Where results can still differ from tshark: tshark unwraps per UDP conversation (both directions
and all SSRCs) for its ``rtp.extseq`` field, which the statistics above do not use; arrival times
are epoch seconds in float64 here (0.24 us resolution) versus nanoseconds in tshark; ``expected``
is reported as a signed integer where tshark keeps an unsigned 32-bit value, so ``loss_pct`` is 0
here when ``expected`` would be negative; dynamic clock rates come from the caller (SDP), which
must pass 0 for ``telephone-event``; rates below 1000 Hz give tshark a division by zero and are
treated as "no jitter" here.

Two implementations give the same figures (counts exactly, floats to 1e-9):

* ``RtpStreamAccumulator`` (numpy, one stream per object, the reference): the jitter filter is
  evaluated with a doubling prefix scan (about 14 vectorized passes whatever the length), the
  path-dependent means in closed form with cumulative logarithms, the sequence state machines
  with running maxima and masks. To merge exactly (tshark's figures depend on the stream's first
  timestamp, first sequence number and global packet index), an accumulator created with
  ``keep_for_merge=True`` keeps the compact per-packet columns it was fed (16 bytes a packet) and
  ``merge`` replays them; otherwise its memory does not grow with the stream.
* ``StreamSet`` (many streams, packets interleaved in capture order, one call per batch): tshark's
  per-packet loop in C (``analyzer._speedups``) over one fixed-size state row per stream (8 KiB,
  mostly the duplicate window's bitmap); without the extension it falls back to one accumulator
  per stream.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from analyzer import speedups

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# tshark 4.0 ``clock_map`` (ui/tap-rtp-analysis.c): static payload type -> clock rate in Hz.
TSHARK_STATIC_CLOCK_RATES: Mapping[int, int] = {
    0: 8000, 1: 8000, 2: 8000, 3: 8000, 4: 8000, 5: 8000, 6: 16000, 7: 8000, 8: 8000,
    9: 8000, 10: 44100, 11: 44100, 12: 8000, 13: 8000, 14: 90000, 15: 8000, 16: 11025,
    17: 22050, 18: 8000, 19: 8000, 25: 90000, 26: 90000, 28: 90000, 31: 90000, 32: 90000,
    33: 90000, 34: 90000,
}  # fmt: skip

# tshark 4.0 ``mimetype_and_clock_map``: encoding name prefix -> clock rate in Hz, searched from
# the end, case-insensitively, for a prefix of the name (used when SDP gave no rate).
TSHARK_ENCODING_CLOCK_RATES: tuple[tuple[str, int], ...] = (
    ("AMR", 8000), ("AMR-WB", 16000), ("BMPEG", 90000), ("BT656", 90000), ("DV", 90000),
    ("EVRC", 8000), ("EVRC0", 8000), ("EVRC1", 8000), ("EVRCB", 8000), ("EVRCB0", 8000),
    ("EVRCB1", 8000), ("EVRCWB", 16000), ("EVRCWB0", 16000), ("EVRCWB1", 16000),
    ("G7221", 16000), ("G726-16", 8000), ("G726-24", 8000), ("G726-32", 8000),
    ("G726-40", 8000), ("G729D", 8000), ("G729E", 8000), ("GSM-EFR", 8000),
    ("H263-1998", 90000), ("H263-2000", 90000), ("H264", 90000), ("MP1S", 90000),
    ("MP2P", 90000), ("MP4V-ES", 90000), ("mpa-robust", 90000), ("pointer", 90000),
    ("raw", 90000), ("red", 1000), ("SMV", 8000), ("SMV0", 8000), ("t140", 1000),
    ("telephone-event", 8000),
)  # fmt: skip

COMFORT_NOISE_PAYLOAD_TYPES = (13, 19)
FIRST_DYNAMIC_PAYLOAD_TYPE = 96
TS_MODULUS = 1 << 32
TS_HALF = 1 << 31
SEQ_MODULUS = 1 << 16
SEQ_WRAP_GAP = 0xFF00  # tshark: a step back larger than this is a forward jump across the wrap
SEQ_UNWRAP_HALF = 0x8000  # Wireshark's extended sequence number: nearest to the previous one
JITTER_DECAY = 15.0 / 16.0
SEQUENCE_WINDOW = 4096  # packets examined per pass of the sequence-state machine
DUPLICATE_WINDOW = 4096  # extended sequence numbers below the highest checked for duplicates
# (the C state keeps one bit each: 512 bytes a stream)
PAYLOAD_TYPE_COUNT = 128


@dataclass(frozen=True, slots=True)
class StreamStatistics:
    """Statistics of one RTP stream (one SSRC between two transport addresses).

    Times are in milliseconds unless the name says otherwise. Fields that tshark prints as 0 or -1
    when nothing contributed are ``None`` here.
    """

    packets: int  # tshark "Pkts"
    expected: int  # stop + cycles * 65536 - start + 1 (tshark's rule, signed here)
    lost: int  # tshark "Lost": expected - packets, negative with duplicates
    loss_pct: float  # tshark "Lost %": 100 * lost / expected (0 when expected <= 0)
    duplicates: int  # packets whose extended sequence number was seen (within DUPLICATE_WINDOW)
    out_of_order: int  # other packets whose extended sequence number is below an earlier one
    sequence_errors: int  # tshark's count of wrong sequence numbers
    problem: bool  # tshark "Problems?": a sequence error or a timestamp out of time sequence
    jitter_mean_ms: float | None  # tshark "Mean Jitter"; None when the clock rate is unknown
    jitter_max_ms: float | None  # tshark "Max Jitter"
    jitter_min_ms: float | None  # tshark "Min Jitter"
    delta_min_ms: float | None  # tshark "Min Delta" over regular packets
    delta_mean_ms: float | None  # tshark "Mean Delta" (its running formula)
    delta_max_ms: float | None  # tshark "Max Delta" (never below 0, as in tshark)
    bitrate_kbps: float | None  # RTP bytes (header + payload, no UDP/IP) * 8 / duration / 1000
    duration_s: float  # last_seen - first_seen
    first_seen: float  # arrival of the first packet, epoch seconds
    last_seen: float  # arrival of the last packet, epoch seconds
    first_frame: int  # capture frame number of the first packet (1-based)
    last_frame: int  # capture frame number of the last packet
    clock_rate: int | None  # Hz of the last packet used for jitter (tshark's statinfo->clock_rate)
    payload_types: tuple[int, ...]  # distinct payload types seen, ascending


def clock_rate_for_encoding(name: str) -> int | None:
    """tshark 4.0's clock rate for a dynamic payload named ``name`` without an SDP rate.

    Returns 0 for ``telephone-event`` (tshark computes no jitter for it), None when unknown.
    """
    if name.lower().startswith("telephone-event"):
        return 0
    for prefix, rate in reversed(TSHARK_ENCODING_CLOCK_RATES):
        if name.lower().startswith(prefix.lower()):
            return rate
    return None


def _static_rate_table() -> IntArray:
    """The static payload types' rates, for `_rate_table` to start from."""
    table = np.zeros(PAYLOAD_TYPE_COUNT, dtype=np.int64)
    for payload_type, rate in TSHARK_STATIC_CLOCK_RATES.items():
        table[payload_type] = rate
    table.setflags(write=False)
    return table


_STATIC_RATES = _static_rate_table()


def _rate_table(clock_rate: int | None, dynamic: Mapping[int, int]) -> IntArray:
    """Clock rate (Hz, 0 = none) for each 7-bit payload type, as tshark picks it."""
    table = _STATIC_RATES.copy()
    table[FIRST_DYNAMIC_PAYLOAD_TYPE:] = clock_rate or 0
    for payload_type, rate in dynamic.items():
        if payload_type >= FIRST_DYNAMIC_PAYLOAD_TYPE:
            table[payload_type & 0x7F] = rate
    return table


# ---------------------------------------------------------------------------- vector kernels


def decaying_scan(inputs: FloatArray, decay: float, start: float) -> FloatArray:
    """``y[k] = decay * y[k-1] + inputs[k]`` with ``y[-1] = start``, without a per-element loop.

    Hillis-Steele doubling: after the pass with shift ``s`` each element holds the sum of its last
    ``2 s`` terms; it stops once ``decay ** s`` underflows to 0 (14 passes for 15/16).
    """
    out = np.array(inputs, dtype=np.float64, copy=True)
    factor, shift = decay, 1
    while shift < out.size and factor > 0.0:
        out[shift:] += factor * out[:-shift]
        factor, shift = factor * factor, shift * 2
    if start:
        out += start * np.power(decay, np.arange(1, out.size + 1, dtype=np.float64))
    return out


def _last_flagged_before(flags: BoolArray) -> IntArray:
    """Index of the last flagged element strictly before each position, -1 if none."""
    marks = np.where(flags, np.arange(flags.size), -1)
    last = np.maximum.accumulate(marks) if flags.size else marks
    return np.concatenate(([-1], last[:-1])).astype(np.int64)


def _fill_before(values: FloatArray, flags: BoolArray, carry: float) -> FloatArray:
    """Value of the last flagged element strictly before each position, ``carry`` if none."""
    before = _last_flagged_before(flags)
    return np.where(before >= 0, values[np.maximum(before, 0)], carry)


def _previous(values: IntArray, carry: int) -> IntArray:
    """The array shifted right by one, ``carry`` first."""
    return np.concatenate(([carry], values[:-1])).astype(np.int64)


def _track_highest_sequence(seq: IntArray, in_time: BoolArray, highest: int) -> IntArray:
    """tshark's ``seq_num`` before each packet and after the last (one longer than ``seq``).

    It moves to an in-time packet's number when that is higher, or lower by more than 0xFF00
    (a wrap). Between such wrap resets it is a running maximum, so each pass takes a window,
    computes the maximum and cuts at the first reset.
    """
    out = np.empty(seq.size + 1, dtype=np.int64)
    pos = 0
    while pos < seq.size:
        window, timely = seq[pos : pos + SEQUENCE_WINDOW], in_time[pos : pos + SEQUENCE_WINDOW]
        running = np.maximum.accumulate(np.concatenate(([highest], np.where(timely, window, -1))))
        resets = np.flatnonzero(timely & (running[:-1] - window > SEQ_WRAP_GAP))
        stop = int(resets[0]) + 1 if resets.size else window.size
        out[pos : pos + stop] = running[:stop]
        highest = int(window[stop - 1]) if resets.size else int(running[-1])
        pos += stop
    out[seq.size] = highest
    return out


def _count_latch_sets(sets: BoolArray, resets: BoolArray, latched: bool) -> tuple[int, bool]:
    """Count set events that find the latch clear; return (count, latch state at the end)."""
    events = np.where(sets, 1, np.where(resets, -1, 0))
    events = events[events != 0]
    if events.size == 0:
        return 0, latched
    before = np.concatenate(([1 if latched else -1], events[:-1]))
    return int(np.count_nonzero((events == 1) & (before == -1))), bool(events[-1] == 1)


def _extend_sequence(seq: IntArray, last_extended: int) -> IntArray:
    """Extended sequence numbers, each nearest (within 0x8000) to the previous packet's."""
    steps = seq - _previous(seq, last_extended % SEQ_MODULUS)
    steps = np.where(steps > SEQ_UNWRAP_HALF, steps - SEQ_MODULUS, steps)
    steps = np.where(steps < -SEQ_UNWRAP_HALF, steps + SEQ_MODULUS, steps)
    return last_extended + np.cumsum(steps)


# ---------------------------------------------------------------------------- running summaries


@dataclass(slots=True)
class _TsharkMean:
    """tshark's running ``mean = (mean * (n - 1) + x) / n`` at regular packets, plus min/max.

    Kept as ``scaled = mean * last_index`` so a batch folds in closed form: between two regular
    packets at indices p < n the scaled sum grows by ``(n - 1) / p`` before adding ``x``.
    """

    scaled: float = 0.0
    last_index: int = 0
    count: int = 0
    maximum: float = 0.0
    minimum: float = float("inf")

    def fold(self, values: FloatArray, indices: IntArray) -> None:
        if values.size == 0:
            return
        previous = _previous(indices, self.last_index)
        growth = np.where(
            previous > 0, np.log1p((indices - 1 - previous) / np.maximum(previous, 1)), 0.0
        )
        log_scale = np.cumsum(growth)
        weights = np.exp(log_scale[-1] - log_scale)
        # (a product and a sum, not `values @ weights`: the BLAS dot product wakes OpenBLAS's
        # threads, which then spin for a while on the cores the pipeline needs)
        self.scaled = (self.scaled * float(np.exp(log_scale[-1]))
                       + float((values * weights).sum()))
        self.last_index = int(indices[-1])
        self.count += values.size
        self.maximum = max(self.maximum, float(values.max()))
        self.minimum = min(self.minimum, float(values.min()))

    def mean(self) -> float | None:
        return self.scaled / self.last_index if self.count else None

    def extremes(self) -> tuple[float | None, float | None]:
        return (self.minimum, self.maximum) if self.count else (None, None)


@dataclass(slots=True)
class _SeenSequences:
    """Extended sequence numbers seen so far, as sorted disjoint closed intervals."""

    starts: IntArray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    ends: IntArray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    def contains(self, values: IntArray) -> BoolArray:
        if self.starts.size == 0:
            return np.zeros(values.size, dtype=np.bool_)
        slot = np.searchsorted(self.starts, values, side="right") - 1
        return (slot >= 0) & (values <= self.ends[np.maximum(slot, 0)])

    def add(self, values: IntArray) -> None:
        unique = np.unique(values)
        breaks = np.flatnonzero(np.diff(unique) > 1)
        starts = np.concatenate((self.starts, unique[np.concatenate(([0], breaks + 1))]))
        ends = np.concatenate((self.ends, unique[np.concatenate((breaks, [unique.size - 1]))]))
        order = np.argsort(starts, kind="stable")
        starts, ends = starts[order], ends[order]
        reach = np.maximum.accumulate(ends)
        fresh = np.concatenate(([True], starts[1:] > reach[:-1] + 1))
        group_last = np.concatenate((np.flatnonzero(fresh)[1:] - 1, [fresh.size - 1]))
        self.starts, self.ends = starts[fresh], reach[group_last]

    def forget_below(self, lowest: int) -> None:
        """Drop the numbers below ``lowest`` (they left the duplicate window for good)."""
        keep = self.ends >= lowest
        self.starts, self.ends = np.maximum(self.starts[keep], lowest), self.ends[keep]


@dataclass(slots=True)
class _Batch:
    """The compact per-packet columns an accumulator keeps so a predecessor can replay them."""

    arrival_s: FloatArray
    sequence_number: IntArray
    timestamp: IntArray
    payload_type: IntArray
    marker: BoolArray
    first_frame: int
    last_frame: int
    rtp_bytes: int

    def compact(self) -> _Batch:
        """A private copy in the smallest types (16 bytes a packet)."""
        return replace(
            self,
            arrival_s=self.arrival_s.copy(),
            sequence_number=self.sequence_number.astype(np.uint16),
            timestamp=self.timestamp.astype(np.uint32),
            payload_type=self.payload_type.astype(np.uint8),
            marker=self.marker.copy(),
        )

    def widened(self) -> _Batch:
        """The int64 columns the arithmetic works on."""
        return replace(
            self,
            sequence_number=self.sequence_number.astype(np.int64),
            timestamp=self.timestamp.astype(np.int64),
            payload_type=self.payload_type.astype(np.int64),
        )

    def without_first(self) -> _Batch:
        return replace(
            self,
            arrival_s=self.arrival_s[1:],
            sequence_number=self.sequence_number[1:],
            timestamp=self.timestamp[1:],
            payload_type=self.payload_type[1:],
            marker=self.marker[1:],
        )


@dataclass(slots=True)
class _Carry:
    """tshark's per-stream state after the packets processed so far (plus our own counters)."""

    packets: int = 0
    first_seen: float = 0.0
    last_seen: float = 0.0
    first_frame: int = 0
    last_frame: int = 0
    rtp_bytes: int = 0
    first_timestamp: int = 0
    start_seq: int = 0
    stop_seq: int = 0
    previous_pt: int = 0
    time_ms: float = 0.0  # arrival (ms after first_seen) of the last in-time packet
    last_nominal_ms: float = 0.0
    jitter: float = 0.0
    clock_rate: int = 0
    highest_seq: int = 0
    latched: bool = False
    cycles: int = 0
    sequence_errors: int = 0
    problem: bool = False
    last_extended: int = 0
    highest_extended: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    payload_types: set[int] = field(default_factory=set)
    delta: _TsharkMean = field(default_factory=_TsharkMean)
    jitter_stats: _TsharkMean = field(default_factory=_TsharkMean)
    seen: _SeenSequences = field(default_factory=_SeenSequences)


# ---------------------------------------------------------------------------- the accumulator


class RtpStreamAccumulator:
    """Statistics of one RTP stream, fed in capture order in any number of batches.

    ``clock_rate`` is the rate (Hz) of the stream's dynamic payload types, from SDP, or None when
    unknown; ``dynamic_clock_rates`` overrides it per payload type (give 0 for
    ``telephone-event``). Static payload types always use tshark's table. With
    ``keep_for_merge`` it keeps its input (16 bytes a packet) so that it can be ``merge``d into
    a predecessor; otherwise its memory stays bounded whatever the stream's length.
    """

    def __init__(
        self,
        clock_rate: int | None,
        dynamic_clock_rates: Mapping[int, int] | None = None,
        keep_for_merge: bool = False,
    ) -> None:
        self._rates = _rate_table(clock_rate, dynamic_clock_rates or {})
        self._carry = _Carry()
        self._keep = keep_for_merge
        self._batches: list[_Batch] = []

    def update(
        self,
        frame: npt.ArrayLike,
        arrival_s: npt.ArrayLike,
        sequence_number: npt.ArrayLike,
        timestamp: npt.ArrayLike,
        payload_type: npt.ArrayLike,
        marker: npt.ArrayLike,
        rtp_bytes: npt.ArrayLike,
    ) -> None:
        """Add packets (parallel arrays, capture order): frame numbers, epoch arrival seconds,
        RTP sequence numbers, timestamps, payload types, marker bits, RTP packet sizes."""
        frames = np.asarray(frame, dtype=np.int64)
        if frames.size == 0:
            return
        batch = _Batch(
            np.asarray(arrival_s, dtype=np.float64),
            np.asarray(sequence_number, dtype=np.int64) % SEQ_MODULUS,
            np.asarray(timestamp, dtype=np.int64) % TS_MODULUS,
            np.asarray(payload_type, dtype=np.int64) & 0x7F,
            np.asarray(marker, dtype=np.bool_),
            int(frames[0]),
            int(frames[-1]),
            int(np.asarray(rtp_bytes, dtype=np.int64).sum()),
        )
        self._ingest(batch)

    def merge(self, later: RtpStreamAccumulator) -> None:
        """Append ``later``, an accumulator fed the packets that follow this one's.

        ``later``'s kept columns are replayed through this accumulator's state (and its clock
        rates), so the result equals one pass over both parts; ``later`` is left unchanged. It
        must have been created with ``keep_for_merge=True`` (ValueError otherwise).
        """
        if later._carry.packets and not later._keep:
            raise ValueError("the later accumulator was not created with keep_for_merge=True")
        for batch in later._batches:
            self._ingest(batch.widened())

    def result(self) -> StreamStatistics:
        """The statistics of the packets seen so far (raises ValueError when there were none)."""
        carry = self._carry
        if carry.packets == 0:
            raise ValueError("no RTP packet was added to this stream")
        return _Totals(
            carry.packets, carry.start_seq, carry.stop_seq, carry.cycles,
            carry.duplicates, carry.out_of_order, carry.sequence_errors, carry.problem,
            (*carry.delta.extremes(), carry.delta.mean()),
            (*carry.jitter_stats.extremes(), carry.jitter_stats.mean()),
            carry.rtp_bytes, carry.first_seen, carry.last_seen,
            carry.first_frame, carry.last_frame, carry.clock_rate,
            tuple(sorted(carry.payload_types)),
        ).statistics()

    # -- batch processing ----------------------------------------------------------------

    def _ingest(self, batch: _Batch) -> None:
        if self._keep:
            self._batches.append(batch.compact())
        carry = self._carry
        if carry.packets == 0:
            self._start(batch)
            batch = batch.without_first()
        carry.last_frame = batch.last_frame
        carry.last_seen = float(batch.arrival_s[-1]) if batch.arrival_s.size else carry.last_seen
        carry.rtp_bytes += batch.rtp_bytes
        if batch.arrival_s.size:
            self._process(batch)

    def _start(self, batch: _Batch) -> None:
        """tshark's first-packet branch: it only initialises the state."""
        carry = self._carry
        carry.packets = 1
        carry.first_seen = carry.last_seen = float(batch.arrival_s[0])
        carry.first_frame = batch.first_frame
        carry.first_timestamp = int(batch.timestamp[0])
        carry.start_seq = carry.stop_seq = carry.highest_seq = int(batch.sequence_number[0])
        carry.previous_pt = int(batch.payload_type[0])
        carry.last_extended = carry.highest_extended = int(batch.sequence_number[0])
        carry.seen.add(batch.sequence_number[:1])
        carry.payload_types.add(carry.previous_pt)

    def _process(self, batch: _Batch) -> None:
        carry = self._carry
        indices = carry.packets + np.arange(batch.arrival_s.size, dtype=np.int64)
        in_time = self._timing(batch, indices)
        self._sequence(batch, in_time)
        self._ordering(batch.sequence_number)
        carry.packets += batch.arrival_s.size
        carry.stop_seq = int(batch.sequence_number[-1])
        carry.previous_pt = int(batch.payload_type[-1])
        carry.payload_types.update(np.unique(batch.payload_type).tolist())

    def _timing(self, batch: _Batch, indices: IntArray) -> BoolArray:
        """Delta and jitter of one batch; returns which packets were in time sequence."""
        carry = self._carry
        arrival_ms = (batch.arrival_s - carry.first_seen) * 1000.0
        forward = (batch.timestamp - carry.first_timestamp) % TS_MODULUS
        in_time = (forward < TS_HALF) | (
            (batch.timestamp < carry.first_timestamp) & (forward == TS_HALF)
        )
        rates = self._rates[batch.payload_type]
        ticks_per_ms = rates // 1000
        jittered = in_time & (ticks_per_ms > 0)
        nominal = np.where(jittered, forward / np.maximum(ticks_per_ms, 1), 0.0)
        time_ms = _fill_before(arrival_ms, in_time, carry.time_ms)
        last_nominal = _fill_before(nominal, jittered, carry.last_nominal_ms)
        transit_change = np.abs(arrival_ms - (time_ms + (nominal - last_nominal)))
        jitter = np.zeros(arrival_ms.size)
        jitter[jittered] = decaying_scan(transit_change[jittered] / 16, JITTER_DECAY, carry.jitter)
        regular = in_time & ~batch.marker & ~_is_comfort_noise(batch.payload_type)
        regular &= ~_is_comfort_noise(_previous(batch.payload_type, carry.previous_pt))
        carry.delta.fold((arrival_ms - time_ms)[regular], indices[regular])
        carry.jitter_stats.fold(jitter[regular & jittered], indices[regular & jittered])
        self._carry_timing(arrival_ms, in_time, nominal, jittered, jitter, rates)
        return in_time

    def _carry_timing(
        self,
        arrival_ms: FloatArray,
        in_time: BoolArray,
        nominal: FloatArray,
        jittered: BoolArray,
        jitter: FloatArray,
        rates: IntArray,
    ) -> None:
        carry = self._carry
        if in_time.any():
            carry.time_ms = float(arrival_ms[np.flatnonzero(in_time)[-1]])
        if jittered.any():
            last = np.flatnonzero(jittered)[-1]
            carry.last_nominal_ms = float(nominal[last])
            carry.jitter = float(jitter[last])
            carry.clock_rate = int(rates[last])
        carry.problem |= not bool(in_time.all())

    def _sequence(self, batch: _Batch, in_time: BoolArray) -> None:
        """tshark's sequence errors and wrap cycles for one batch."""
        carry = self._carry
        seq = batch.sequence_number
        highest = _track_highest_sequence(seq, in_time, carry.highest_seq)
        before = highest[:-1]
        wrapped = in_time & (before == SEQ_MODULUS - 1) & (seq == 0)
        errors = ((seq <= before) & ~wrapped) | (in_time & (seq > before + 1))
        carry.highest_seq = int(highest[-1])
        carry.sequence_errors += int(np.count_nonzero(errors))
        carry.problem |= bool(errors.any())
        previous = _previous(seq, carry.stop_seq)
        below = in_time & ((seq < carry.start_seq) | ((seq == 0) & (previous == SEQ_MODULUS - 1)))
        above = in_time & (seq > carry.start_seq)
        cycles, carry.latched = _count_latch_sets(below, above, carry.latched)
        carry.cycles += cycles

    def _ordering(self, seq: IntArray) -> None:
        """Duplicates and out-of-order packets by extended sequence number."""
        carry = self._carry
        extended = _extend_sequence(seq, carry.last_extended)
        _, first = np.unique(extended, return_index=True)
        repeated = np.ones(extended.size, dtype=np.bool_)
        repeated[first] = False
        highest = np.maximum.accumulate(np.concatenate(([carry.highest_extended], extended)))
        in_window = extended > highest[:-1] - DUPLICATE_WINDOW
        duplicate = (repeated | carry.seen.contains(extended)) & in_window
        late = ~duplicate & (extended < highest[:-1])
        carry.duplicates += int(np.count_nonzero(duplicate))
        carry.out_of_order += int(np.count_nonzero(late))
        carry.seen.add(extended)
        carry.last_extended = int(extended[-1])
        carry.highest_extended = int(highest[-1])
        carry.seen.forget_below(carry.highest_extended - DUPLICATE_WINDOW + 1)


def _is_comfort_noise(payload_type: IntArray) -> BoolArray:
    return np.isin(payload_type, COMFORT_NOISE_PAYLOAD_TYPES)


Extremes = tuple[float | None, float | None, float | None]  # min, max, tshark's mean


@dataclass(frozen=True, slots=True)
class _Totals:
    """The final per-stream state both implementations reduce to."""

    packets: int
    start_seq: int
    stop_seq: int
    cycles: int
    duplicates: int
    out_of_order: int
    sequence_errors: int
    problem: bool
    delta: Extremes
    jitter: Extremes
    rtp_bytes: int
    first_seen: float
    last_seen: float
    first_frame: int
    last_frame: int
    clock_rate: int
    payload_types: tuple[int, ...]

    def statistics(self) -> StreamStatistics:
        expected = self.stop_seq + self.cycles * SEQ_MODULUS - self.start_seq + 1
        lost = expected - self.packets
        duration = self.last_seen - self.first_seen
        return StreamStatistics(
            packets=self.packets,
            expected=expected,
            lost=lost,
            loss_pct=100.0 * lost / expected if expected > 0 else 0.0,
            duplicates=self.duplicates,
            out_of_order=self.out_of_order,
            sequence_errors=self.sequence_errors,
            problem=self.problem,
            jitter_mean_ms=self.jitter[2],
            jitter_max_ms=self.jitter[1],
            jitter_min_ms=self.jitter[0],
            delta_min_ms=self.delta[0],
            delta_mean_ms=self.delta[2],
            delta_max_ms=self.delta[1],
            bitrate_kbps=self.rtp_bytes * 8 / duration / 1000 if duration > 0 else None,
            duration_s=duration,
            first_seen=self.first_seen,
            last_seen=self.last_seen,
            first_frame=self.first_frame,
            last_frame=self.last_frame,
            clock_rate=self.clock_rate or None,
            payload_types=self.payload_types,
        )


# ---------------------------------------------------------------------------- many streams


class StreamSet:
    """Statistics of many RTP streams fed together: each batch holds packets of any streams,
    interleaved in capture order.

    Uses the C loop of ``analyzer._speedups`` when available (``native=None``), else, or with
    ``native=False``, one ``RtpStreamAccumulator`` per stream; both give the same figures.
    """

    def __init__(self, native: bool | None = None) -> None:
        use_native = speedups.enabled() if native is None else native
        if use_native and speedups.native is None:
            raise RuntimeError("analyzer._speedups is not available")
        self._native: ModuleType | None = speedups.native if use_native else None
        self._count = 0
        self._accumulators: list[RtpStreamAccumulator] = []
        if self._native is not None:
            self._state = np.zeros(0, dtype=_native_state_dtype(self._native))
            self._rates = np.zeros((0, PAYLOAD_TYPE_COUNT), dtype=np.int64)

    @property
    def native(self) -> bool:
        """Whether the C loop computes the statistics."""
        return self._native is not None

    def __len__(self) -> int:
        return self._count

    def add_stream(
        self, clock_rate: int | None, dynamic_clock_rates: Mapping[int, int] | None = None
    ) -> int:
        """A new stream with ``RtpStreamAccumulator``'s clock-rate arguments; returns its id."""
        stream_id = self._count
        if self._native is None:
            self._accumulators.append(RtpStreamAccumulator(clock_rate, dynamic_clock_rates))
        else:
            self._reserve(stream_id + 1)
            self._rates[stream_id] = _rate_table(clock_rate, dynamic_clock_rates or {})
        self._count += 1
        return stream_id

    def update(
        self,
        stream_id: npt.ArrayLike,
        frame: npt.ArrayLike,
        arrival_s: npt.ArrayLike,
        sequence_number: npt.ArrayLike,
        timestamp: npt.ArrayLike,
        payload_type: npt.ArrayLike,
        marker: npt.ArrayLike,
        rtp_bytes: npt.ArrayLike,
    ) -> None:
        """Add packets of any streams (parallel arrays in capture order), ``stream_id`` naming
        each packet's stream; the other columns as in ``RtpStreamAccumulator.update``."""
        ids = np.ascontiguousarray(stream_id, dtype=np.int64)
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= self._count):
            raise IndexError(f"stream id out of range ({self._count} streams)")
        columns = (frame, arrival_s, sequence_number, timestamp, payload_type, marker, rtp_bytes)
        if self._native is None:
            self._update_each(ids, columns)
        else:
            self._native.rtp_update(
                self._state[: self._count], self._rates[: self._count], ids,
                *_native_columns(*columns),
            )

    def result(self, stream_id: int) -> StreamStatistics:
        """The statistics of one stream so far (ValueError when it has no packet yet)."""
        if not 0 <= stream_id < self._count:
            raise IndexError(f"no stream {stream_id} ({self._count} streams)")
        if self._native is None:
            return self._accumulators[stream_id].result()
        return _totals_from_state(self._state[stream_id]).statistics()

    def _reserve(self, count: int) -> None:
        if count <= self._state.size:
            return
        capacity = max(count, 4 * self._state.size, 256)
        # rows past _count are zeros: only the rows in use are copied (fewer fresh pages)
        state = np.zeros(capacity, dtype=self._state.dtype)
        state[: self._count] = self._state[: self._count]
        rates = np.zeros((capacity, PAYLOAD_TYPE_COUNT), dtype=np.int64)
        rates[: self._count] = self._rates[: self._count]
        self._state, self._rates = state, rates

    def _update_each(self, ids: IntArray, columns: tuple[npt.ArrayLike, ...]) -> None:
        """The fallback: each stream's packets (stable order) to its own accumulator."""
        arrays = [np.asarray(column) for column in columns]
        order = np.argsort(ids, kind="stable")
        starts = np.flatnonzero(np.diff(ids[order])) + 1
        for part in np.split(order, starts) if ids.size else []:
            self._accumulators[int(ids[part[0]])].update(*(array[part] for array in arrays))


def _native_state_dtype(module: ModuleType) -> np.dtype[Any]:
    """The C state row as a numpy structured dtype (layout exported by the extension)."""
    names, formats, offsets = zip(*module.RTP_STATE_LAYOUT, strict=True)
    spec: Any = {"names": names, "formats": formats, "offsets": offsets}
    spec["itemsize"] = module.RTP_STATE_SIZE
    return np.dtype(spec)


def _native_columns(
    frame: npt.ArrayLike,
    arrival_s: npt.ArrayLike,
    sequence_number: npt.ArrayLike,
    timestamp: npt.ArrayLike,
    payload_type: npt.ArrayLike,
    marker: npt.ArrayLike,
    rtp_bytes: npt.ArrayLike,
) -> tuple[npt.NDArray[Any], ...]:
    """The columns in the contiguous types the C loop reads (it reduces them mod 2**16 etc.)."""
    as_int = [np.ascontiguousarray(c, dtype=np.int64) for c in (frame, sequence_number)]
    more = [np.ascontiguousarray(c, dtype=np.int64) for c in (timestamp, payload_type)]
    return (
        as_int[0], np.ascontiguousarray(arrival_s, dtype=np.float64), as_int[1], *more,
        np.ascontiguousarray(marker, dtype=np.bool_),
        np.ascontiguousarray(rtp_bytes, dtype=np.int64),
    )


def _totals_from_state(state: np.void) -> _Totals:
    row = dict(zip(state.dtype.names or (), state.item(), strict=True))  # (one conversion)

    def running(name: str) -> Extremes:
        if not int(row[f"{name}_count"]):
            return (None, None, None)
        return (float(row[f"{name}_min"]), float(row[f"{name}_max"]), float(row[f"{name}_mean"]))

    if int(row["packets"]) == 0:
        raise ValueError("no RTP packet was added to this stream")
    kinds = tuple(pt for i, word in enumerate(row["payload_types"])
                  for pt in _set_bits(int(word), 64 * i))
    number = {name: int(row[name]) for name in _STATE_INTEGERS}
    return _Totals(
        **number, problem=bool(row["problem"]), delta=running("delta"),
        jitter=running("jitter_stats"), first_seen=float(row["first_seen"]),
        last_seen=float(row["last_seen"]), payload_types=kinds,
    )


def _set_bits(word: int, base: int) -> Iterator[int]:
    """base + the positions of the bits set in `word`, lowest first."""
    while word:
        low = word & -word
        yield base + low.bit_length() - 1
        word ^= low


_STATE_INTEGERS = (
    "packets", "start_seq", "stop_seq", "cycles", "duplicates", "out_of_order",
    "sequence_errors", "rtp_bytes", "first_frame", "last_frame", "clock_rate",
)


# ---------------------------------------------------------------------------- tshark's table

_TSHARK_STREAM_ROW = re.compile(
    r"^\s*(?P<start>-?[\d.]+)\s+(?P<end>-?[\d.]+)\s+(?P<src>\S+)\s+(?P<src_port>\d+)\s+"
    r"(?P<dst>\S+)\s+(?P<dst_port>\d+)\s+0x(?P<ssrc>[0-9A-Fa-f]{8})\s+(?P<payload>.*?)\s+"
    r"(?P<packets>\d+)\s+(?P<lost>-?\d+)\s+\((?P<lost_pct>-?[\d.]+|-?nan|-?inf)%\)\s+"
    r"(?P<figures>(?:-?[\d.]+\s+){5}-?[\d.]+)(?:\s+(?P<problem>X))?\s*$"
)
_FIGURE_NAMES = (
    "min_delta_ms",
    "mean_delta_ms",
    "max_delta_ms",
    "min_jitter_ms",
    "mean_jitter_ms",
    "max_jitter_ms",
)


def parse_tshark_rtp_streams(text: str) -> list[dict[str, Any]]:
    """Rows of tshark 4.0's ``-q -z rtp,streams`` table, one dict per stream.

    Keys: start_time, end_time (seconds relative to the first frame), src, src_port, dst,
    dst_port, ssrc (int), payload (tshark's names, comma-separated), packets, lost, lost_pct,
    min/mean/max_delta_ms, min/mean/max_jitter_ms (tshark's -1 and 0 placeholders kept), problem.
    """
    return [_stream_row(match) for match in _stream_matches(text)]


def _stream_matches(text: str) -> Iterator[re.Match[str]]:
    for line in text.splitlines():
        match = _TSHARK_STREAM_ROW.match(line)
        if match:
            yield match


def _stream_row(match: re.Match[str]) -> dict[str, Any]:
    figures = [float(value) for value in match["figures"].split()]
    return {
        "start_time": float(match["start"]),
        "end_time": float(match["end"]),
        "src": match["src"],
        "src_port": int(match["src_port"]),
        "dst": match["dst"],
        "dst_port": int(match["dst_port"]),
        "ssrc": int(match["ssrc"], 16),
        "payload": match["payload"].strip(),
        "packets": int(match["packets"]),
        "lost": int(match["lost"]),
        "lost_pct": float(match["lost_pct"]),
        **dict(zip(_FIGURE_NAMES, figures, strict=True)),
        "problem": match["problem"] == "X",
    }
