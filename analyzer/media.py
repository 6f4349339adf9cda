"""The media fast path: RTP and RTCP found and decoded as columns, fed to per-stream statistics.

RTP is looked for in four places, all vectorized over the batch:
  * plain UDP payloads whose first byte is in the RTP range of the RFC 7983 table;
  * TURN ChannelData (RFC 8656 §12) on flows that spoke STUN/TURN: the RTP starts 4 bytes in;
  * Microsoft's multiplexed TURN frames (0xFF10, MS-TURN §2.2.3): 12 bytes in;
  * Zoom's server (SFU) and peer-to-peer media encapsulations (`analyzer.decode.zoom`).
Only RTCP packets (about one a second per stream) are looked at one by one, to spot the SRTCP
trailer and read SR/SDES; and only a bounded sample of them per flow.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from analyzer.capture.batch import PacketBatch
from analyzer.decode import rtcp, zoom
from analyzer.decode.demux import Demux, classify_many
from analyzer.decode.payload_types import static_payload_type
from analyzer.decode.rtp import RtpColumns, rtp_header_columns
from analyzer.ecb import EcbDetector, EcbResult
from analyzer.facts import CaptureFacts, FlowFacts, SdpMedia
from analyzer.flows import FlowAssignment, FlowTable
from analyzer.packets import PROTO_UDP, Gather, PacketColumns
from analyzer.rtpstats import StreamSet, StreamStatistics

ENCAP_PLAIN, ENCAP_TURN, ENCAP_MS_TURN, ENCAP_ZOOM = 0, 1, 2, 3
ENCAP_NAMES = ("rtp", "turn-channel", "ms-turn", "zoom")
ZOOM_PORTS = (8801, 8810)
TURN_PORTS = (3478, 3479, 3480, 3481, 5349)
ZOOM_FEC_PT = 110
MAX_RTCP_SAMPLES_PER_FLOW = 8  # enough to see an SRTCP trailer; RTCP is parsed one by one
CLOCK_PROBE_PACKETS = 64
INFERRED = "inferred from RTP timestamp rate"
COMMON_CLOCK_RATES = np.array([8000, 16000, 24000, 32000, 44100, 48000, 90000])
HEAD_COLUMNS = 16
ECB_MAX_STREAMS = 32  # the ECB test samples the first streams of a capture ...
ECB_PACKETS_PER_STREAM = 400  # ... and the first packets of each (bounded memory and time)
ECB_BYTES_PER_PACKET = 512
NOT_MEDIA = frozenset({"dns", "sip", "quic", "tls"})  # flows the slow path identified otherwise
NOT_MEDIA_PORTS = frozenset({53, 67, 68, 123, 137, 138, 161, 500, 1900, 4500, 5353, 5355})


def head_matrix(g: Gather, offset: np.ndarray, length: np.ndarray, columns: int) -> np.ndarray:
    """The first `columns` bytes at each offset as an (N, columns) matrix, zero past `length`.

    One strided row gather (a sliding-window view of the buffer) instead of a gather per column.
    """
    buffer = g.buffer
    if buffer.size < columns:
        buffer = np.concatenate([buffer, np.zeros(columns, dtype=np.uint8)])
    windows = sliding_window_view(buffer, columns)
    head = windows[np.minimum(offset, windows.shape[0] - 1)]
    short = np.flatnonzero((length < columns) | (offset > windows.shape[0] - 1))
    if short.size:
        keep = np.arange(columns)[None, :] < np.minimum(length[short], columns)[:, None]
        keep &= offset[short][:, None] + np.arange(columns)[None, :] < g.buffer.size
        head[short] = np.where(keep, head[short], 0)
    return head


@dataclass(slots=True)
class Candidates:
    """Places where an RTP/RTCP header may start, one per packet that has one."""

    row: np.ndarray  # index into the batch's PacketColumns
    offset: np.ndarray  # absolute offset of the RTP header in the buffer
    length: np.ndarray  # bytes from there to the end of the (inner) packet
    encap: np.ndarray  # ENCAP_*
    zoom_kind: np.ndarray  # Zoom media kind name index (-1 outside Zoom)
    zoom_layout: np.ndarray  # index into zoom.LAYOUT_CODES (0 outside Zoom)


@dataclass(slots=True)
class StreamState:
    """One RTP stream: a flow direction and an SSRC (and, inside Zoom, FEC kept apart)."""

    flow_index: int
    direction: int
    ssrc: int
    encap: int
    fec: bool
    payload_types: dict[int, int] = field(default_factory=dict)  # pt -> packets
    zoom_kinds: set[str] = field(default_factory=set)
    zoom_layouts: set[str] = field(default_factory=set)
    clock_rate: int | None = None
    clock_rate_source: str = ""
    set_id: int = -1  # index in MediaExtractor.stream_set once the clock rate is decided
    pending: list[dict[str, np.ndarray]] = field(default_factory=list)
    pending_packets: int = 0
    first_frame: int = 0
    ecb_id: int = -1  # index in the ECB detector, or -1 when not sampled


class MediaExtractor:
    def __init__(self, flows: FlowTable, capture: CaptureFacts, facts: list[FlowFacts]) -> None:
        self.flows = flows
        self.capture = capture
        self.facts = facts
        self.streams: dict[tuple[int, int, int, bool], StreamState] = {}
        self.ecb = EcbDetector(ECB_PACKETS_PER_STREAM, ECB_BYTES_PER_PACKET)
        self.stream_set = StreamSet()
        self.zoom_layouts: dict[int, set[str]] = {}  # flow index -> verified Zoom layouts
        self._ecb_streams = 0
        self.rtcp_packets: dict[tuple[int, int], int] = {}  # (flow, direction) -> count
        self.srtcp_packets: dict[tuple[int, int], int] = {}
        self._rtcp_sampled: dict[int, int] = {}

    # ------------------------------------------------------------------ per batch

    def process(self, batch: PacketBatch, cols: PacketColumns, assign: FlowAssignment) -> None:
        g = Gather(batch.buffer)
        cand = self._candidates(g, cols, assign)
        if cand.row.size == 0:
            return
        head = head_matrix(g, cand.offset, cand.length, HEAD_COLUMNS)
        rtp = rtp_header_columns(head, cand.length)
        is_rtcp = ((head[:, 0] >> 6) == 2) & (head[:, 1] >= 192) & (head[:, 1] <= 223)
        self._rtcp(batch, cand, assign, is_rtcp)
        ok = rtp.valid & ~is_rtcp
        if ok.any():
            self._rtp(g, cols, assign, cand, rtp, ok)

    def _candidates(
        self, g: Gather, cols: PacketColumns, assign: FlowAssignment
    ) -> Candidates:
        fi, plen, at = assign.flow_index, cols.payload_len, cols.payload_offset
        udp = (cols.ip_proto == PROTO_UDP) & (fi >= 0) & (plen >= 8)
        rows = np.flatnonzero(udp)
        mode = self._flow_modes(fi[rows])
        first = g.u8(at[rows])
        demux = classify_many(first)
        parts = [self._plain(rows, at, plen, mode, demux)]
        parts.append(self._turn(g, rows, at, plen, mode, demux))
        parts.append(self._zoom(g, rows, at, plen, mode, fi))
        fields = ("row", "offset", "length", "encap", "zoom_kind", "zoom_layout")
        merged = {f: np.concatenate([getattr(p, f) for p in parts]) for f in fields}
        order = np.argsort(merged["row"], kind="stable")  # back to capture order
        cand = Candidates(*(merged[f][order] for f in fields))
        # a Zoom packet with two RTP packets: the first (FEC) ends where the second starts
        same = np.flatnonzero(cand.row[1:] == cand.row[:-1])
        cand.length[same] = cand.offset[same + 1] - cand.offset[same]
        return cand

    def _flow_modes(self, flow_index: np.ndarray) -> np.ndarray:
        """Per packet: 0 plain, 1 Zoom server flow, 2 Zoom P2P flow, 3 no media; +4 with TURN."""
        present, inverse = np.unique(flow_index, return_inverse=True)
        modes = np.array([self._flow_mode(int(i)) for i in present], dtype=np.int8)
        return modes[inverse]

    def _flow_mode(self, index: int) -> int:
        flow, facts = self.flows.flows[index], self.facts[index]
        ports = (flow.a[2], flow.b[2])
        if facts.protocols & NOT_MEDIA or any(p in NOT_MEDIA_PORTS for p in ports):
            return 3  # no RTP here: neither plain (mode & 3 != 0) nor Zoom (mode 3 unused)
        mode = 0
        if any(ZOOM_PORTS[0] <= p <= ZOOM_PORTS[1] for p in ports):
            mode = 1
        elif facts.zoom_p2p or any(
            (flow.address(s), flow.port(s)) in self.capture.zoom_stun_clients for s in (0, 1)
        ):
            mode = 2
        if facts.stun is not None or any(p in TURN_PORTS for p in ports):
            mode += 4
        return mode

    @staticmethod
    def _plain(rows: np.ndarray, at: np.ndarray, plen: np.ndarray, mode: np.ndarray,
               demux: np.ndarray) -> Candidates:
        sel = rows[((mode & 3) == 0) & (demux == Demux.RTP)]
        return Candidates(sel, at[sel], plen[sel], np.full(sel.size, ENCAP_PLAIN),
                          np.full(sel.size, -1), np.zeros(sel.size, dtype=np.int64))

    @staticmethod
    def _turn(g: Gather, rows: np.ndarray, at: np.ndarray, plen: np.ndarray, mode: np.ndarray,
              demux: np.ndarray) -> Candidates:
        turn = (mode & 4) != 0
        channel = rows[turn & (demux == Demux.TURN_CHANNEL) & (plen[rows] >= 16)]
        ms = rows[turn & (demux == Demux.QUIC_LONG) & (plen[rows] >= 24)]
        ms = ms[g.u16(at[ms]) == 0xFF10]
        inner_len = np.minimum(g.u16(at[channel] + 2).astype(np.int64), plen[channel] - 4)
        sel = np.concatenate([channel, ms])
        return Candidates(
            sel, np.concatenate([at[channel] + 4, at[ms] + 12]),
            np.concatenate([inner_len, plen[ms] - 12]),
            np.concatenate([np.full(channel.size, ENCAP_TURN), np.full(ms.size, ENCAP_MS_TURN)]),
            np.full(sel.size, -1), np.zeros(sel.size, dtype=np.int64),
        )

    def _zoom(self, g: Gather, rows: np.ndarray, at: np.ndarray, plen: np.ndarray,
              mode: np.ndarray, flow_index: np.ndarray) -> Candidates:
        zoom_rows = ((mode & 3) == 1) | ((mode & 3) == 2)
        sel = rows[zoom_rows]
        head = head_matrix(g, at[sel], plen[sel], zoom.HEAD_BYTES)
        zc = zoom.zoom_columns(head, plen[sel], (mode[zoom_rows] & 3) == 1)
        self._note_zoom_layouts(flow_index[sel], zc.layout, zc.valid)
        ok = zc.valid & (zc.rtp_offset >= 0)
        second = ok & (zc.second_rtp_offset >= 0)
        rows_out = np.concatenate([sel[ok], sel[second]])
        rel = np.concatenate([zc.rtp_offset[ok], zc.second_rtp_offset[second]])
        kinds = np.concatenate([zc.media_kind[ok], zc.media_kind[second]])
        layouts = np.concatenate([zc.layout[ok], zc.layout[second]])
        return Candidates(rows_out, at[rows_out] + rel, plen[rows_out] - rel,
                          np.full(rows_out.size, ENCAP_ZOOM), kinds.astype(np.int64),
                          layouts.astype(np.int64))

    def _note_zoom_layouts(self, flow_index: np.ndarray, layout: np.ndarray,
                           valid: np.ndarray) -> None:
        """Which Zoom layouts (sfu, p2p, legacy) each flow's packets verified as."""
        if not valid.any():
            return
        keys = np.unique(flow_index[valid] * 8 + layout[valid])
        for key in keys.tolist():
            self.zoom_layouts.setdefault(key // 8, set()).add(str(zoom.LAYOUT_CODES[key % 8]))

    # ------------------------------------------------------------------ RTCP (sampled)

    def _rtcp(self, batch: PacketBatch, cand: Candidates, assign: FlowAssignment,
              is_rtcp: np.ndarray) -> None:
        for i in np.flatnonzero(is_rtcp).tolist():
            row = int(cand.row[i])
            fi, d = int(assign.flow_index[row]), int(assign.direction[row])
            key = (fi, d)
            self.rtcp_packets[key] = self.rtcp_packets.get(key, 0) + 1
            if self._rtcp_sampled.get(fi, 0) >= MAX_RTCP_SAMPLES_PER_FLOW:
                continue
            self._rtcp_sampled[fi] = self._rtcp_sampled.get(fi, 0) + 1
            start = int(cand.offset[i])
            self._rtcp_sample(fi, key, batch.buffer[start : start + int(cand.length[i])].tobytes())

    def _rtcp_sample(self, fi: int, key: tuple[int, int], data: bytes) -> None:
        try:
            compound = rtcp.parse_rtcp_compound(data)
        except Exception:
            return
        if compound.srtcp_trailer is not None:
            self.srtcp_packets[key] = self.srtcp_packets.get(key, 0) + 1

    # ------------------------------------------------------------------ RTP streams

    def _rtp(self, g: Gather, cols: PacketColumns, assign: FlowAssignment, cand: Candidates,
             rtp: RtpColumns, ok: np.ndarray) -> None:
        row = cand.row[ok]
        fi = assign.flow_index[row]
        d = assign.direction[row].astype(np.int64)
        ssrc = rtp.ssrc[ok].astype(np.int64)
        pt = rtp.payload_type[ok].astype(np.int64)
        fec = (cand.encap[ok] == ENCAP_ZOOM) & (pt == ZOOM_FEC_PT)
        key = (fi << 34) | (d << 33) | (fec.astype(np.int64) << 32) | ssrc
        codes, _ = pd.factorize(key)
        columns = {
            "frame": cols.frame[row], "arrival_s": cols.ts_ns[row] / 1e9,
            "sequence_number": rtp.sequence_number[ok],
            "timestamp": rtp.timestamp[ok], "payload_type": pt.astype(np.uint8),
            "marker": rtp.marker[ok], "rtp_bytes": cand.length[ok],
        }
        encap = cand.encap[ok]
        first = np.full(codes.max() + 1, row.size, dtype=np.int64)
        np.minimum.at(first, codes, np.arange(row.size))
        states = [self._stream(int(fi[i]), int(d[i]), int(ssrc[i]), int(encap[i]), bool(fec[i]))
                  for i in first.tolist()]
        self._describe(states, codes, pt, cand.zoom_kind[ok], cand.zoom_layout[ok], encap)
        set_ids = np.array([s.set_id for s in states], dtype=np.int64)[codes]
        started = set_ids >= 0
        if started.any():
            self.stream_set.update(set_ids[started],
                                   **{name: col[started] for name, col in columns.items()})
        self._hold(states, codes, started, columns)
        ecb_ids = np.array([s.ecb_id for s in states], dtype=np.int64)[codes]
        self._sample_for_ecb(g, cand, rtp, ok, ecb_ids, cols.frame[row])

    def _sample_for_ecb(self, g: Gather, cand: Candidates, rtp: RtpColumns, ok: np.ndarray,
                        ecb_ids: np.ndarray, frames: np.ndarray) -> None:
        """Hand the payloads (after every cleartext header) of sampled streams to the ECB test."""
        take = ecb_ids >= 0
        if not take.any():
            return
        start = cand.offset[ok][take]
        header = rtp.header_length_min[ok][take]
        extension = rtp.extension[ok][take]
        words = g.u16(start + header + 2).astype(np.int64)
        header = header + np.where(extension, 4 + 4 * words, 0)
        length = cand.length[ok][take] - header
        seq = rtp.sequence_number[ok][take].astype(np.uint64)
        stamp = rtp.timestamp[ok][take].astype(np.uint64)
        ident = rtp.ssrc[ok][take].astype(np.uint64)
        header_hash = (ident << np.uint64(32)) ^ (seq << np.uint64(16)) ^ stamp
        self.ecb.add(ecb_ids[take], frames[take], g.buffer, start + header, np.maximum(length, 0),
                     header_hash)

    def ecb_result(self, stream: StreamState) -> EcbResult | None:
        return self.ecb.result(stream.ecb_id) if stream.ecb_id >= 0 else None

    def _stream(self, fi: int, d: int, ssrc: int, encap: int, fec: bool) -> StreamState:
        key = (fi, d, ssrc, fec)
        stream = self.streams.get(key)
        if stream is None:
            stream = self.streams[key] = StreamState(fi, d, ssrc, encap, fec)
            if self._ecb_streams < ECB_MAX_STREAMS and not fec:
                stream.ecb_id, self._ecb_streams = self._ecb_streams, self._ecb_streams + 1
        return stream

    def _describe(self, states: list[StreamState], codes: np.ndarray, pt: np.ndarray,
                  kinds: np.ndarray, layouts: np.ndarray, encap: np.ndarray) -> None:
        """Payload types, Zoom media kinds and layouts per stream: one count per distinct pair."""
        pairs, counts = np.unique(codes * 128 + pt, return_counts=True)
        for pair, count in zip(pairs.tolist(), counts.tolist(), strict=True):
            stream = states[pair // 128]
            stream.payload_types[pair % 128] = stream.payload_types.get(pair % 128, 0) + count
        zoom_rows = encap == ENCAP_ZOOM
        if zoom_rows.any():
            for pair in np.unique(codes[zoom_rows] * 64 + kinds[zoom_rows] + 1).tolist():
                if pair % 64:
                    states[pair // 64].zoom_kinds.add(zoom.MEDIA_KINDS[pair % 64 - 1])
            for pair in np.unique(codes[zoom_rows] * 8 + layouts[zoom_rows]).tolist():
                if pair % 8:
                    states[pair // 8].zoom_layouts.add(str(zoom.LAYOUT_CODES[pair % 8]))

    def _hold(self, states: list[StreamState], codes: np.ndarray, started: np.ndarray,
              columns: dict[str, np.ndarray]) -> None:
        """Keep the first packets of new streams until their clock rate can be decided."""
        waiting = np.flatnonzero(~started)
        if waiting.size == 0:
            return
        order = waiting[np.argsort(codes[waiting], kind="stable")]
        bounds = np.flatnonzero(np.diff(codes[order])) + 1
        for part in np.split(order, bounds):
            stream = states[int(codes[part[0]])]
            stream.first_frame = stream.first_frame or int(columns["frame"][part[0]])
            stream.pending.append({name: col[part] for name, col in columns.items()})
            stream.pending_packets += part.size
            if stream.pending_packets >= CLOCK_PROBE_PACKETS:
                self._start(stream)

    def _start(self, stream: StreamState) -> None:
        """Decide the clock rate (SDP, static table, or inferred) and replay pending packets.

        The statistics get the SDP's rtpmap rates per payload type, and the inferred rate only
        when nothing else is known, so that jitter matches Wireshark's wherever it knows.
        """
        pending = {k: np.concatenate([p[k] for p in stream.pending]) for k in stream.pending[0]}
        stream.first_frame = int(pending["frame"][0])
        stream.clock_rate, stream.clock_rate_source = self._clock_rate(stream, pending)
        sdp = self.sdp_for(stream)
        inferred = stream.clock_rate if stream.clock_rate_source == INFERRED else None
        stream.set_id = self.stream_set.add_stream(inferred, sdp_clock_rates(sdp))
        self.stream_set.update(np.full(pending["frame"].size, stream.set_id), **pending)
        stream.pending, stream.pending_packets = [], 0

    def finish(self) -> None:
        for stream in self.streams.values():
            if stream.set_id < 0 and stream.pending:
                self._start(stream)

    def statistics(self, stream: StreamState) -> StreamStatistics:
        return self.stream_set.result(stream.set_id)

    def _clock_rate(self, stream: StreamState, packets: dict[str, np.ndarray]
                    ) -> tuple[int | None, str]:
        pt = int(packets["payload_type"][0])
        sdp = self.sdp_for(stream)
        if sdp is not None and pt in sdp.clock_rates:
            return sdp.clock_rates[pt], f"sdp a=rtpmap (frame {sdp.frame})"
        static = static_payload_type(pt)
        if static is not None:
            return static.clock_rate, "static payload type (RFC 3551)"
        inferred = infer_clock_rate(packets["arrival_s"], packets["timestamp"])
        if inferred is not None:
            return inferred, INFERRED
        return None, "unknown"

    def sdp_for(self, stream: StreamState) -> SdpMedia | None:
        """The SDP m= line that announced this stream's destination (else its source) before
        the stream's first packet."""
        flow = self.flows.flows[stream.flow_index]
        for side in (1 - stream.direction, stream.direction):
            endpoint = (flow.address(side), flow.port(side))
            entry = self.capture.sdp_before(endpoint, stream.first_frame)
            if entry is not None:
                return entry
        return None

    def media_kind(self, stream: StreamState) -> str:
        if stream.zoom_kinds:
            return "+".join(sorted(stream.zoom_kinds))
        sdp = self.sdp_for(stream)
        if sdp is not None:
            return sdp.media
        pt = max(stream.payload_types, key=lambda p: stream.payload_types[p])
        static = static_payload_type(pt)
        if static is not None:
            return static.media
        return self._teams_port_media(stream) or _media_from_clock(stream.clock_rate)

    def _teams_port_media(self, stream: StreamState) -> str:
        """Teams clients send audio, video and sharing from UDP 50000-19/-39/-59 (QoS ranges)."""
        flow = self.flows.flows[stream.flow_index]
        ports = [p for p in (flow.a[2], flow.b[2]) if 50000 <= p <= 50059]
        if flow.transport != "udp" or not ports:
            return ""
        port = ports[0]
        if not any(e.service == "teams" for e in self.facts[stream.flow_index].evidence):
            return ""
        return ("audio", "video", "screen")[(port - 50000) // 20]


def _media_from_clock(clock_rate: int | None) -> str:
    """Video payload formats use a 90 kHz clock (RFC 3551 §5); audio ones use audio rates."""
    if clock_rate is None:
        return ""
    return "video" if clock_rate == 90000 else "audio"


def sdp_clock_rates(sdp: SdpMedia | None) -> dict[int, int] | None:
    """Per-payload-type rates from a=rtpmap; telephone-event gets 0 (no jitter), as in tshark."""
    if sdp is None:
        return None
    return {pt: 0 if sdp.encodings.get(pt, "").lower() == "telephone-event" else rate
            for pt, rate in sdp.clock_rates.items()}


def infer_clock_rate(arrival_s: np.ndarray, timestamp: np.ndarray) -> int | None:
    """Clock rate from RTP timestamp advance over arrival time, snapped to a common rate.

    Uses the whole probe window (so video frames sharing one timestamp do not matter) and
    accepts the nearest common rate only within 20 %; needs at least 0.2 s of packets.
    """
    if arrival_s.size < 2:
        return None
    span = float(arrival_s[-1] - arrival_s[0])
    ticks = (int(timestamp[-1]) - int(timestamp[0])) % (1 << 32)
    if span < 0.2 or ticks == 0 or ticks >= 1 << 31:
        return None
    rate = ticks / span
    nearest = int(COMMON_CLOCK_RATES[np.argmin(np.abs(np.log(COMMON_CLOCK_RATES / rate)))])
    return nearest if abs(nearest / rate - 1) <= 0.2 else None
