"""The media fast path: RTP and RTCP found and decoded as columns, fed to per-stream statistics.

RTP is looked for in four places, over the whole batch at once (`find_media`: one pass in C
with the extension, else vectorized numpy):
  * plain UDP payloads whose first byte is in the RTP range of the RFC 7983 table;
  * TURN ChannelData (RFC 8656 §12) on flows that spoke STUN/TURN: the RTP starts 4 bytes in;
  * Microsoft's multiplexed TURN frames (0xFF10, MS-TURN §2.2.3): 12 bytes in;
  * Zoom's server (SFU) and peer-to-peer media encapsulations (`analyzer.decode.zoom`).
Only RTCP packets (about one a second per stream) are looked at one by one, to spot the SRTCP
trailer and read SR/SDES; and only a bounded sample of them per flow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from operator import attrgetter

import numpy as np
import pandas as pd

from analyzer import speedups
from analyzer.capture.batch import PacketBatch
from analyzer.decode import rtcp, zoom
from analyzer.decode.demux import Demux, classify_many
from analyzer.decode.payload_types import static_payload_type
from analyzer.decode.rtp import rtp_header_columns
from analyzer.ecb import EcbDetector, EcbResult
from analyzer.facts import CaptureFacts, FlowFacts, SdpMedia
from analyzer.flows import Flow, FlowAssignment, FlowTable
from analyzer.heldpackets import PROBE_COLUMNS, HeldPackets
from analyzer.packets import PROTO_UDP, Gather, PacketColumns, uncaptured_udp_bytes
from analyzer.rtpstats import StreamSet, StreamStatistics
from analyzer.streamcounts import StreamCounts

ENCAP_PLAIN, ENCAP_TURN, ENCAP_MS_TURN, ENCAP_ZOOM = 0, 1, 2, 3
ENCAP_NAMES = ("rtp", "turn-channel", "ms-turn", "zoom")
ZOOM_PORTS = (8801, 8810)
TURN_PORTS = (3478, 3479, 3480, 3481, 5349)
ZOOM_FEC_PT = 110
MAX_RTCP_SAMPLES_PER_FLOW = 8  # enough to see an SRTCP trailer; RTCP is parsed one by one
# A new stream's clock rate is decided from its first packets: at least CLOCK_PROBE_PACKETS of
# them spanning CLOCK_PROBE_SECONDS, or MAX_CLOCK_PROBE_PACKETS, whichever comes first. The
# window belongs to the stream, not to the batches it arrives in.
CLOCK_PROBE_PACKETS = 64
CLOCK_PROBE_SECONDS = 0.2
MAX_CLOCK_PROBE_PACKETS = 4096
INFERRED = "inferred from RTP timestamp rate"
COMMON_CLOCK_RATES = np.array([8000, 16000, 24000, 32000, 44100, 48000, 90000])
HEAD_COLUMNS = 16
ECB_MAX_STREAMS = 32  # the ECB test samples the first streams of a capture ...
ECB_PACKETS_PER_STREAM = 400  # ... and the first packets of each (bounded memory and time)
ECB_BYTES_PER_PACKET = 512
PROBATION_SAMPLES = 4  # a stream's payloads held for the ECB test until it is valid RTP
# A flow keeps this many streams on probation until one is valid RTP; RTP-like packets of
# further SSRCs are only counted (a flow of random bytes would make a stream of each)
PROBATION_STREAMS_PER_FLOW = 64
NOT_MEDIA = frozenset({"dns", "sip", "quic", "tls"})  # flows the slow path identified otherwise
NOT_MEDIA_PORTS = frozenset({53, 67, 68, 123, 137, 138, 161, 500, 1900, 4500, 5353, 5355})


@dataclass(slots=True)
class MediaWork:
    """The UDP payloads of one batch that `MediaExtractor.scan` looks at, with what it needs
    of their packets; all arrays are parallel."""

    offset: np.ndarray  # int64: start of the UDP payload in the batch's buffer
    length: np.ndarray  # int64: payload bytes
    flow: np.ndarray  # int64: index of the flow in the FlowTable
    direction: np.ndarray  # int8
    mode: np.ndarray  # int8: the flow's mode (see MediaExtractor._flow_modes)
    frame: np.ndarray  # int64
    ts_ns: np.ndarray  # int64
    uncaptured: np.ndarray  # int64: payload bytes declared but not in the frame (snap length,
    # IP fragments), counted in the RTP bytes of the payload's last packet

    def part(self, rows: np.ndarray) -> MediaWork:
        return MediaWork(self.offset[rows], self.length[rows], self.flow[rows],
                         self.direction[rows], self.mode[rows], self.frame[rows],
                         self.ts_ns[rows], self.uncaptured[rows])


@dataclass(slots=True)
class Candidates:
    """Places where an RTP/RTCP header may start (find_media's numpy path)."""

    row: np.ndarray  # index of the payload
    offset: np.ndarray  # absolute offset of the RTP header in the buffer
    length: np.ndarray  # bytes from there to the end of the (inner) packet
    encap: np.ndarray  # ENCAP_*
    zoom_kind: np.ndarray  # Zoom media kind name index (-1 outside Zoom)
    zoom_layout: np.ndarray  # index into zoom.LAYOUT_CODES (0 outside Zoom)


@dataclass(slots=True)
class RtpPackets:
    """The RTP packets found in UDP payloads (valid RTP candidates, not RTCP), in order."""

    row: np.ndarray  # int64: index of the payload (of the packet in MediaExtractor.process)
    offset: np.ndarray  # int64 absolute offset of the RTP header in the buffer
    length: np.ndarray  # int64 bytes from there to the end of the (inner) packet
    encap: np.ndarray  # int8 ENCAP_*
    zoom_kind: np.ndarray  # int8 Zoom media kind name index (-1 outside Zoom)
    zoom_layout: np.ndarray  # int8 index into zoom.LAYOUT_CODES (0 outside Zoom)
    payload_type: np.ndarray  # uint8
    marker: np.ndarray  # bool
    sequence_number: np.ndarray  # uint16
    timestamp: np.ndarray  # uint32
    ssrc: np.ndarray  # uint32
    header_length_min: np.ndarray  # int64: 12 + 4 * CSRC count
    extension: np.ndarray  # bool
    stream_key: np.ndarray  # int64, see _stream_key

    def take(self, rows: np.ndarray) -> RtpPackets:
        return RtpPackets(*(getattr(self, f.name)[rows] for f in fields(self)))


@dataclass(slots=True)
class RtcpCandidates:
    """Candidates that start as RTCP (RFC 5761 §4), in order."""

    row: np.ndarray  # int64, as RtpPackets.row
    offset: np.ndarray  # int64
    length: np.ndarray  # int64


@dataclass(slots=True)
class MediaScan:
    """What `find_media` found in a batch's UDP payloads."""

    rtp: RtpPackets
    rtcp: RtcpCandidates
    zoom_valid: np.ndarray  # bool per payload: Zoom's classifier took it ...
    zoom_layout: np.ndarray  # int8 per payload: ... as this layout (LAYOUT_CODES index)


@dataclass(slots=True)
class _Slots:
    """Per UDP payload of a batch: its first candidate (plain or TURN) and up to two inside
    Zoom; `take` lists the payloads holding one, the other fields are parallel to `take`."""

    take: np.ndarray
    offset: np.ndarray
    length: np.ndarray
    encap: np.ndarray | int
    zoom_kind: np.ndarray | int = -1
    zoom_layout: np.ndarray | int = 0


@dataclass(slots=True)
class _FlowPorts:
    """What decides a flow's mode and never changes: its ports and endpoints."""

    flow: Flow
    no_media: bool
    zoom_server: bool
    turn: bool
    endpoints: tuple[tuple[str, int], tuple[str, int]] | None = None  # when first needed

    @classmethod
    def of(cls, flow: Flow) -> _FlowPorts:
        a, b = flow.a[2], flow.b[2]
        low, high = ZOOM_PORTS
        return cls(flow, no_media=a in NOT_MEDIA_PORTS or b in NOT_MEDIA_PORTS,
                   zoom_server=low <= a <= high or low <= b <= high,
                   turn=a in TURN_PORTS or b in TURN_PORTS)

    def named_endpoints(self) -> tuple[tuple[str, int], tuple[str, int]]:
        """(address text, port) of side A and of side B."""
        if self.endpoints is None:
            flow = self.flow
            self.endpoints = ((flow.address(0), flow.port(0)), (flow.address(1), flow.port(1)))
        return self.endpoints

    def zoom_stun_client(self, clients: dict[tuple[str, int], float]) -> bool:
        """Whether either endpoint was seen as a Zoom client in STUN."""
        endpoints = self.named_endpoints()
        return endpoints[0] in clients or endpoints[1] in clients


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
    serial: int = -1  # its number among the streams made (`HeldPackets.new_stream`)
    first_frame: int = 0
    ecb_id: int = -1  # index in the ECB detector, or -1 when not sampled
    confirmed_frame: int = -1  # the frame that made it valid RTP (`_probation`), -1: not yet
    last_sequence: int = -1  # while not valid: the sequence number of its last packet
    # while not valid: its first packets' payloads for the ECB test (frame, bytes kept, length
    # on the wire, header hash), should it become valid while an ECB slot is free
    probation_samples: list[tuple[int, bytes, int, int]] | None = None


@dataclass(slots=True)
class MediaPart:
    """A media worker's findings on its flows (see `MediaExtractor.part` and `absorb`)."""

    streams: list[StreamState]  # in order of creation
    statistics: list[StreamStatistics]  # parallel to streams
    ecb: list[EcbResult | None]  # parallel to streams
    zoom_layouts: dict[int, set[str]]
    rtcp_packets: dict[tuple[int, int], int]
    srtcp_packets: dict[tuple[int, int], int]
    unconfirmed: Unconfirmed


@dataclass(slots=True)
class Unconfirmed:
    """What looked like RTP or RTCP on flows where nothing confirmed it as media (see
    `MediaExtractor.finish`): not counted as streams."""

    flows: int = 0
    packets: int = 0  # RTP and RTCP

    def add(self, other: Unconfirmed) -> None:
        self.flows += other.flows
        self.packets += other.packets


@dataclass(slots=True)
class _Probation:
    """What `MediaExtractor._probation` decided for one batch's RTP packets."""

    held: np.ndarray  # packets of streams on probation, to hold for the ECB test
    ecb_ids: np.ndarray  # per packet: its stream's ECB slot, -1 where not sampled
    sampled: list[StreamState]  # streams that became valid now and got an ECB slot


StreamKey = tuple[int, int, int, bool]  # flow index, direction, SSRC, Zoom FEC


@dataclass(slots=True)
class _MergedResults:
    statistics: dict[StreamKey, StreamStatistics] = field(default_factory=dict)
    ecb: dict[StreamKey, EcbResult | None] = field(default_factory=dict)


@dataclass(slots=True)
class _BatchModes:
    """The media rows of one batch, their flows' modes as it started, and the changes the slow
    path made on the way: (flow, batch row, new mode), in row order."""

    rows: np.ndarray  # int64: batch rows of the UDP payloads that may carry media
    start: np.ndarray  # int8 per row: the flow's mode when the batch started
    flows: np.ndarray  # int64: the distinct flows of those rows
    clients_seen: int  # how many Zoom STUN clients the modes have taken into account
    events: list[tuple[int, int, int]] = field(default_factory=list)
    _by_endpoint: dict[tuple[str, int], list[int]] | None = None

    def modes_by_row(self, flow_of_row: np.ndarray) -> np.ndarray:
        """Each row's mode: that of the flow's last change before the row, else the start."""
        if not self.events:
            return self.start
        event = np.array(sorted(self.events), np.int64)  # by flow, then row
        changed = np.zeros(int(max(event[:, 0].max(), flow_of_row.max(initial=0))) + 1, bool)
        changed[event[:, 0]] = True
        at = np.flatnonzero(changed[flow_of_row])  # rows of flows whose mode changed
        span = int(self.rows.max(initial=0)) + 2
        event_key = event[:, 0] * span + event[:, 1] + 1
        last = np.searchsorted(event_key, flow_of_row[at] * span + self.rows[at] + 1) - 1
        hit = (last >= 0) & (event[np.maximum(last, 0), 0] == flow_of_row[at])
        modes = self.start.copy()
        modes[at[hit]] = event[last[hit], 2]
        return modes

    def flows_with(self, endpoints: list[tuple[str, int]],
                   ports_of: Callable[[int], _FlowPorts]) -> np.ndarray:
        """This batch's flows that have one of `endpoints` on either side."""
        if self._by_endpoint is None:
            self._by_endpoint = {}
            for flow in self.flows.tolist():
                for endpoint in ports_of(flow).named_endpoints():
                    self._by_endpoint.setdefault(endpoint, []).append(flow)
        found = {f for endpoint in endpoints for f in self._by_endpoint.get(endpoint, ())}
        return np.array(sorted(found), np.int64)


def _key_of(stream: StreamState) -> StreamKey:
    return (stream.flow_index, stream.direction, stream.ssrc, stream.fec)


class MediaExtractor:
    def __init__(self, flows: FlowTable, capture: CaptureFacts, facts: list[FlowFacts]) -> None:
        self.flows = flows
        self.capture = capture
        self.facts = facts
        self.streams: dict[StreamKey, StreamState] = {}
        self.ecb = EcbDetector(ECB_PACKETS_PER_STREAM, ECB_BYTES_PER_PACKET)
        self.stream_set = StreamSet()
        # packets of streams whose clock rate is not decided yet (`_hold`)
        self._held = HeldPackets(CLOCK_PROBE_PACKETS, CLOCK_PROBE_SECONDS,
                                 MAX_CLOCK_PROBE_PACKETS)
        self._by_serial: list[StreamState] = []
        self._counts = StreamCounts()  # payload types, Zoom kinds and layouts (`_describe`)
        self.zoom_layouts: dict[int, set[str]] = {}  # flow index -> verified Zoom layouts
        self._ecb_streams = 0
        self.rtcp_packets: dict[tuple[int, int], int] = {}  # (flow, direction) -> count
        self.srtcp_packets: dict[tuple[int, int], int] = {}
        self._rtcp_sampled: dict[int, int] = {}
        self._rtcp_whole: set[int] = set()  # flows with a sampled datagram of exact RTCP
        self._stun_flows: set[int] = set()  # flows read for TURN: STUN seen, or a TURN port
        self.unconfirmed = Unconfirmed()
        self._flow_streams: dict[int, int] = {}  # flow index -> streams made
        self._valid_flows: set[int] = set()  # flows with a valid stream (`_probation`)
        self._untracked: dict[int, int] = {}  # flow index -> RTP-like packets only counted
        # flow index -> {stream key: sequence number of its last packet} of the latest SSRCs not
        # tracked (at most PROBATION_STREAMS_PER_FLOW): one that goes on in sequence is valid
        self._untracked_last: dict[int, dict[int, int]] = {}
        self._seeds: dict[int, int] = {}  # stream key -> the sequence number before its first
        self._stream_keys: dict[int, StreamState] = {}  # _stream_key -> stream
        self._flow_ports: list[_FlowPorts | None] = []  # by flow index, once seen
        self._modes = np.zeros(0, np.int8)  # by flow index: the mode last decided
        self._batch: _BatchModes | None = None  # set by `begin`, used by `select`
        self._present = np.zeros(0, bool)  # by flow index: scratch, all False between batches
        self._scratch = speedups.MediaScratch()  # find_media's outputs, reused batch to batch
        self._merged: _MergedResults | None = None  # set by `absorb`

    # ------------------------------------------------------------------ per batch

    def process(self, batch: PacketBatch, cols: PacketColumns, assign: FlowAssignment) -> None:
        self.scan(batch.buffer, self.select(batch.buffer, cols, assign))

    def begin(self, assign: FlowAssignment, cols: PacketColumns) -> None:
        """Before the slow path reads a batch: each flow's mode as the batch starts. The slow
        path then reports what it learns (`mode_inputs_changed`), so that every packet is read
        with what was known when it arrived, whatever the batch size."""
        self._batch = self._modes_now(assign, cols)

    def _modes_now(self, assign: FlowAssignment, cols: PacketColumns) -> _BatchModes:
        fi = assign.flow_index
        rows = np.flatnonzero((cols.ip_proto == PROTO_UDP) & (fi >= 0) & (cols.payload_len >= 8))
        modes, present = self._flow_modes(fi[rows])
        return _BatchModes(rows, modes, present, len(self.capture.zoom_stun_clients))

    def mode_inputs_changed(self, row: int, flow_index: int) -> None:
        """The slow path learned something at batch row `row` that may change the mode of flow
        `flow_index` (-1: of any flow, when the capture's Zoom STUN clients grew): the
        batch's later packets of a flow whose mode did change are read in the new one."""
        batch = self._batch
        if batch is None:
            return
        if flow_index >= 0:  # (the usual case, one flow: without arrays)
            before = int(self._modes[flow_index])
            mode = self._modes[flow_index] = self._mode(flow_index,
                                                        self.capture.zoom_stun_clients)
            if mode != before:
                batch.events.append((flow_index, row, mode))
            return
        clients = list(self.capture.zoom_stun_clients)
        flows = batch.flows_with(clients[batch.clients_seen :], self._flow)
        batch.clients_seen = len(clients)
        if flows.size == 0:
            return
        before = self._modes[flows].copy()
        after = self._modes_of(flows)
        for flow, mode in zip(flows[after != before].tolist(), after[after != before].tolist(),
                              strict=True):
            batch.events.append((flow, row, mode))

    def select(self, buffer: np.ndarray, cols: PacketColumns, assign: FlowAssignment
               ) -> MediaWork:
        """The UDP payloads of a batch that may carry media, with their flows' modes: all that
        `scan` needs besides the batch's bytes (so another process can scan them)."""
        batch = self._batch or self._modes_now(assign, cols)  # (no `begin`: as they are now)
        self._batch = None
        rows, fi = batch.rows, assign.flow_index
        flows = fi[rows]
        return MediaWork(offset=cols.payload_offset[rows], length=cols.payload_len[rows],
                         flow=flows, direction=assign.direction[rows],
                         mode=batch.modes_by_row(flows), frame=cols.frame[rows],
                         ts_ns=cols.ts_ns[rows],
                         uncaptured=uncaptured_udp_bytes(buffer, cols, rows))

    def scan(self, buffer: np.ndarray, work: MediaWork) -> None:
        """Find and account the RTP and RTCP in `work`'s payloads (offsets into `buffer`)."""
        g = Gather(buffer)
        scan = find_media(g, work.offset, work.length, work.mode, work.flow, work.direction,
                          self._scratch)
        self._note_zoom_layouts(work.flow, scan.zoom_layout, scan.zoom_valid)
        stun = (work.mode & 4) != 0
        if stun.any():
            self._stun_flows.update(pd.unique(work.flow[stun]).tolist())
        if scan.rtcp.row.size:
            self._rtcp(buffer, scan.rtcp, work)
        if scan.rtp.row.size:
            self._rtp(g, work, scan.rtp)

    def _flow_modes(self, flow_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per packet: 0 plain, 1 Zoom server flow, 2 Zoom P2P flow, 3 no media; +4 with TURN;
        and the distinct flows.

        Decided afresh each batch for each flow present (its facts may have grown since), from
        the flow's cached ports and endpoint names and its current facts.
        """
        count = len(self.flows.flows)
        if self._modes.size < count:
            capacity = max(count, 2 * self._modes.size, 1024)
            grown = np.zeros(capacity, np.int8)
            grown[: self._modes.size] = self._modes
            self._modes = grown
            self._present = np.zeros(capacity, bool)
        self._present[flow_index] = True
        present = np.flatnonzero(self._present)
        self._present[present] = False
        self._modes_of(present)
        return self._modes[flow_index], present

    def _modes_of(self, flows: np.ndarray) -> np.ndarray:
        """Decide the modes of `flows` (distinct flow indices) from their facts now, and keep
        them in `_modes`."""
        clients = self.capture.zoom_stun_clients
        decided = np.array([self._mode(index, clients) for index in flows.tolist()], np.int8)
        self._modes[flows] = decided
        return decided

    def _mode(self, index: int, clients: dict[tuple[str, int], float]) -> int:
        """The mode of flow `index` from its facts now (see `_flow_modes`)."""
        ports, facts = self._flow(index), self.facts[index]
        if ports.no_media or not facts.protocols.isdisjoint(NOT_MEDIA):
            return 3  # no RTP: neither plain (mode & 3 != 0) nor Zoom (3 is unused)
        mode = 0
        if ports.zoom_server:
            mode = 1
        elif facts.zoom_p2p or (clients and ports.zoom_stun_client(clients)):
            mode = 2
        return mode + 4 if facts.stun is not None or ports.turn else mode

    def _flow(self, index: int) -> _FlowPorts:
        """The cached ports and endpoints of a flow."""
        ports = self._flow_ports
        ports.extend([None] * (index + 1 - len(ports)))
        flow = ports[index]
        if flow is None:
            flow = ports[index] = _FlowPorts.of(self.flows.flows[index])
        return flow

    def _note_zoom_layouts(self, flow_index: np.ndarray, layout: np.ndarray,
                           valid: np.ndarray) -> None:
        """Which Zoom layouts (sfu, p2p, legacy) each flow's packets verified as."""
        found = np.flatnonzero(valid)  # (indices: much faster than a boolean mask here)
        if found.size == 0:
            return
        keys = np.sort(pd.unique(flow_index[found] * 8 + layout[found]))
        for key in keys.tolist():
            self.zoom_layouts.setdefault(key // 8, set()).add(str(zoom.LAYOUT_CODES[key % 8]))

    # ------------------------------------------------------------------ RTCP (sampled)

    def _rtcp(self, buffer: np.ndarray, found: RtcpCandidates, work: MediaWork) -> None:
        """Count RTCP per flow direction; parse the first MAX_RTCP_SAMPLES_PER_FLOW of a flow."""
        fi = work.flow[found.row]
        codes, keys = pd.factorize(fi * 2 + work.direction[found.row])
        for key, count in zip(keys.tolist(), np.bincount(codes).tolist(), strict=True):
            pair = (key >> 1, key & 1)
            self.rtcp_packets[pair] = self.rtcp_packets.get(pair, 0) + count
        for i in self._rtcp_to_sample(fi).tolist():
            flow = int(fi[i])
            self._rtcp_sampled[flow] = self._rtcp_sampled.get(flow, 0) + 1
            start = int(found.offset[i])
            data = buffer[start : start + int(found.length[i])].tobytes()
            self._rtcp_sample(flow, (flow, int(work.direction[found.row[i]])), data)

    def _rtcp_to_sample(self, fi: np.ndarray) -> np.ndarray:
        """Which of these RTCP packets (of flows `fi`, in capture order) are still sampled."""
        codes, flows = pd.factorize(fi)
        room = np.array([MAX_RTCP_SAMPLES_PER_FLOW - self._rtcp_sampled.get(f, 0)
                         for f in flows.tolist()])
        if room.max() <= 0:
            return np.zeros(0, np.int64)
        order = np.argsort(codes, kind="stable")
        group_start = np.searchsorted(codes[order], codes[order])
        rank = np.empty(fi.size, np.int64)
        rank[order] = np.arange(fi.size) - group_start
        return np.flatnonzero(rank < room[codes])

    def _rtcp_sample(self, fi: int, key: tuple[int, int], data: bytes) -> None:
        if not rtcp.may_carry_srtcp_trailer(data):
            self._rtcp_whole.add(fi)  # well-formed RTCP packets fill it: RTCP, not chance
            return  # the parse would find no trailer: skip decoding the reports
        try:
            compound = rtcp.parse_rtcp_compound(data)
        except Exception:
            return
        if compound.srtcp_trailer is not None:
            self.srtcp_packets[key] = self.srtcp_packets.get(key, 0) + 1

    # ------------------------------------------------------------------ RTP streams

    def _rtp(self, g: Gather, cols: MediaWork, packets: RtpPackets) -> None:
        """The RTP packets to their streams' statistics."""
        codes, keys = pd.factorize(packets.stream_key)
        found = list(map(self._stream_keys.get, keys.tolist()))
        if not all(found):  # (not `None in found`: that calls StreamState.__eq__ on each)
            tracked = self._admit(codes, keys, found, packets)
            if tracked is not None:
                packets = packets.take(tracked)
                codes, keys = pd.factorize(packets.stream_key)
                found = list(map(self._stream_keys.get, keys.tolist()))
        states = self._streams_of(keys, codes, packets.encap, found)
        serials = _per_stream(states, "serial")
        self._describe(serials, codes, packets)
        set_ids = _per_stream(states, "set_id")[codes]
        started = np.flatnonzero(set_ids >= 0)
        size = _rtp_bytes(cols, packets)
        if started.size == codes.size:
            self.stream_set.update(set_ids, **_stream_columns(cols, packets, size, None))
        elif started.size:
            self.stream_set.update(set_ids[started],
                                   **_stream_columns(cols, packets, size, started))
        if started.size < codes.size:
            waiting = np.flatnonzero(set_ids < 0)
            self._hold(serials[codes[waiting]], _stream_columns(cols, packets, size, waiting))
        self._sample_for_ecb(g, cols, packets, size,
                             self._probation(states, codes, packets, cols.frame))

    def _admit(self, codes: np.ndarray, keys: np.ndarray, found: list[StreamState | None],
               packets: RtpPackets) -> np.ndarray | None:
        """The packets to keep (None: all) when new SSRCs would take a flow with no valid
        stream past PROBATION_STREAMS_PER_FLOW: those flows' packets are read one by one."""
        new_per_flow: dict[int, int] = {}
        for code, state in enumerate(found):
            if state is None:
                flow = int(keys[code]) >> 34
                new_per_flow[flow] = new_per_flow.get(flow, 0) + 1
        crowded = [flow for flow, new in new_per_flow.items() if flow not in self._valid_flows
                   and self._flow_streams.get(flow, 0) + new > PROBATION_STREAMS_PER_FLOW]
        if not crowded:
            return None
        keep = np.ones(codes.size, bool)
        flow_of_packet = packets.stream_key >> 34
        for flow in crowded:
            rows = np.flatnonzero(flow_of_packet == flow)
            keep[rows] = self._admit_in_order(flow, rows, codes, found, packets)
        return np.flatnonzero(keep)

    def _admit_in_order(self, flow: int, rows: np.ndarray, codes: np.ndarray,
                        found: list[StreamState | None], packets: RtpPackets) -> np.ndarray:
        """Which of a crowded flow's packets (`rows`, in order) are kept: `_probation`'s rule
        run packet by packet. A packet of an SSRC not tracked is kept while the flow has room
        for a stream on probation, once it has a valid one, inside TURN framing, or when it
        follows that SSRC's last packet in sequence (the stream is then valid from it)."""
        streams, valid = self._flow_streams.get(flow, 0), False
        last: dict[int, int] = {}  # stream code -> sequence number of its last packet
        untracked = self._untracked_last.setdefault(flow, {})
        kept = np.ones(rows.size, bool)
        for i, (code, sequence, encap) in enumerate(zip(
                codes[rows].tolist(), packets.sequence_number[rows].tolist(),
                packets.encap[rows].tolist(), strict=True)):
            state = found[code]
            if state is None and code not in last:  # an SSRC not tracked
                key = int(packets.stream_key[rows[i]])
                before = untracked.pop(key, -1)
                if valid or streams < PROBATION_STREAMS_PER_FLOW or encap != ENCAP_PLAIN:
                    previous = -1  # (framed RTP is valid from its first packet)
                elif before >= 0 and (sequence - before) & 0xFFFF == 1:
                    previous = self._seeds[key] = before
                else:
                    kept[i] = False
                    untracked[key] = sequence
                    if len(untracked) > PROBATION_STREAMS_PER_FLOW:
                        del untracked[next(iter(untracked))]  # (the oldest)
                    continue
                streams += 1
            else:
                previous = last.get(code, state.last_sequence if state is not None else -1)
            valid |= encap != ENCAP_PLAIN or (previous >= 0 and (sequence - previous) & 0xFFFF == 1)
            last[code] = sequence
        self._untracked[flow] = self._untracked.get(flow, 0) + int(np.count_nonzero(~kept))
        return kept

    def _streams_of(self, keys: np.ndarray, codes: np.ndarray, encap: np.ndarray,
                    found: list[StreamState | None]) -> list[StreamState]:
        """The stream of each distinct key (`found`: those known, filled in here; new ones
        made in order of their first packet)."""
        if not all(found):
            seen = np.maximum.accumulate(codes)  # codes number keys in order of appearance
            first = np.flatnonzero(np.diff(seen, prepend=-1))
            for code, state in enumerate(found):
                if state is None:
                    found[code] = self._new_stream(int(keys[code]), int(encap[first[code]]))
        return found  # type: ignore[return-value]

    def _new_stream(self, key: int, encap: int) -> StreamState:
        fi, d, fec, ssrc = key >> 34, (key >> 33) & 1, bool((key >> 32) & 1), key & 0xFFFFFFFF
        stream = self.streams[(fi, d, ssrc, fec)] = StreamState(fi, d, ssrc, encap, fec)
        stream.serial = self._held.new_stream()
        self._by_serial.append(stream)
        self._stream_keys[key] = stream
        self._flow_streams[fi] = self._flow_streams.get(fi, 0) + 1
        if self._seeds:
            stream.last_sequence = self._seeds.pop(key, -1)
        return stream

    def _probation(self, states: list[StreamState], codes: np.ndarray, packets: RtpPackets,
                   frames: np.ndarray) -> _Probation:
        """Confirm the streams that become valid RTP with these packets, and give the first
        ECB_MAX_STREAMS valid ones (not Zoom FEC) an ECB slot.

        A plain stream is valid from the packet that follows its previous one in sequence
        (RFC 3550 A.1's probation, MIN_SEQUENTIAL = 2): random bytes that start like RTP do
        so by chance once, not twice in a row with one SSRC. Inside Zoom's or TURN's framing,
        from its first packet.
        """
        waiting = np.fromiter((s.confirmed_frame < 0 for s in states), bool, len(states))
        if not waiting.any():
            return _Probation(_NO_ROWS, _per_stream(states, "ecb_id")[codes], [])
        rows = np.flatnonzero(waiting[codes])  # the packets of streams still on probation
        rows = rows[np.argsort(codes[rows], kind="stable")]  # by stream, in order
        stream_of, sequence = codes[rows], packets.sequence_number[rows].astype(np.int64)
        first = np.ones(rows.size, bool)
        first[1:] = stream_of[1:] != stream_of[:-1]
        previous = np.empty_like(sequence)
        previous[1:] = sequence[:-1]
        previous[first] = [states[c].last_sequence for c in stream_of[first].tolist()]
        valid = (packets.encap[rows] != ENCAP_PLAIN) | (
            (previous >= 0) & ((sequence - previous) & 0xFFFF == 1))
        group = np.cumsum(first) - 1
        hit = np.flatnonzero(valid)
        groups, at = np.unique(group[hit], return_index=True)
        confirmed = np.sort(rows[hit[at]])  # the packet that made each valid, in packet order
        # per stream, the packet from which it is valid: 0 if it was already, past the batch
        # if it is not yet
        confirmed_at = np.where(waiting, codes.size, 0)
        confirmed_at[codes[confirmed]] = confirmed
        # the packets before: held for the ECB test while a slot may still come to them
        before = (rows[rows < confirmed_at[stream_of]] if self._ecb_streams < ECB_MAX_STREAMS
                  else _NO_ROWS)
        sampled = []
        for code, row in zip(codes[confirmed].tolist(), confirmed.tolist(), strict=True):
            stream = states[code]
            stream.confirmed_frame = int(frames[packets.row[row]])
            self._valid_flows.add(stream.flow_index)
            if self._ecb_streams < ECB_MAX_STREAMS and not stream.fec:
                stream.ecb_id, self._ecb_streams = self._ecb_streams, self._ecb_streams + 1
                sampled.append(stream)
        last = np.append(np.flatnonzero(first)[1:], rows.size) - 1
        for g in np.setdiff1d(np.arange(last.size), groups, assume_unique=True).tolist():
            states[int(stream_of[last[g]])].last_sequence = int(sequence[last[g]])
        ecb_ids = _per_stream(states, "ecb_id")[codes]
        ecb_ids[np.arange(codes.size) < confirmed_at[codes]] = -1
        return _Probation(np.sort(before), ecb_ids, sampled)

    def _sample_for_ecb(self, g: Gather, cols: MediaWork, packets: RtpPackets,
                        rtp_bytes: np.ndarray, probation: _Probation) -> None:
        """Hand the payloads (after every cleartext header) of sampled streams to the ECB test:
        of a stream that became valid RTP now, first the packets held while on probation."""
        if probation.held.size:
            self._hold_for_ecb(g, cols, packets, rtp_bytes, probation.held)
        for stream in probation.sampled:
            held, stream.probation_samples = stream.probation_samples, None
            if held:
                self._replay_for_ecb(stream.ecb_id, held)
        take = np.flatnonzero(probation.ecb_ids >= 0)
        if take.size:
            start, wire, header_hash, captured = _ecb_payloads(g, packets, rtp_bytes, take)
            self.ecb.add(probation.ecb_ids[take], cols.frame[packets.row[take]], g.buffer,
                         start, wire, header_hash, captured)

    def _hold_for_ecb(self, g: Gather, cols: MediaWork, packets: RtpPackets,
                      rtp_bytes: np.ndarray, rows: np.ndarray) -> None:
        """Copy the first PROBATION_SAMPLES payloads of streams on probation (`rows`)."""
        start, wire, header_hash, captured = _ecb_payloads(g, packets, rtp_bytes, rows)
        kept = np.minimum(np.minimum(wire, captured), ECB_BYTES_PER_PACKET)
        frames = cols.frame[packets.row[rows]]
        for i, key in enumerate(packets.stream_key[rows].tolist()):
            stream = self._stream_keys[key]
            if stream.probation_samples is None:
                stream.probation_samples = []
            if len(stream.probation_samples) < PROBATION_SAMPLES:
                begin = int(start[i])
                stream.probation_samples.append((
                    int(frames[i]), g.buffer[begin : begin + max(int(kept[i]), 0)].tobytes(),
                    int(wire[i]), int(header_hash[i])))

    def _replay_for_ecb(self, ecb_id: int, held: list[tuple[int, bytes, int, int]]) -> None:
        frames, payloads, wire, hashes = zip(*held, strict=True)
        sizes = np.array([len(p) for p in payloads], np.int64)
        self.ecb.add(np.full(len(held), ecb_id), np.array(frames, np.int64),
                     np.frombuffer(b"".join(payloads), np.uint8), np.cumsum(sizes) - sizes,
                     np.array(wire, np.int64), np.array(hashes, np.uint64), sizes)

    def ecb_result(self, stream: StreamState) -> EcbResult | None:
        if stream.ecb_id < 0:
            return None
        if self._merged is not None:
            return self._merged.ecb.get(_key_of(stream))
        return self.ecb.result(stream.ecb_id)

    def _describe(self, serials: np.ndarray, codes: np.ndarray, packets: RtpPackets) -> None:
        """Count the payload types, Zoom media kinds and layouts of each stream (`serials`:
        of the streams `codes` numbers; written into the streams by `finish`)."""
        zoom_rows = np.flatnonzero(packets.encap == ENCAP_ZOOM)
        self._counts.add(serials, codes, packets.payload_type, zoom_rows,
                         packets.zoom_kind[zoom_rows], packets.zoom_layout[zoom_rows])

    def _hold(self, serial: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        """Hold the packets (`columns`) of new streams (`serial` of each) until their clock
        rate can be decided; start the streams whose window they complete."""
        closings = self._held.hold(serial, columns)
        self._start([(self._by_serial[c.serial], c.rows, c.closing_row) for c in closings],
                    columns)

    def _start(self, ready: list[tuple[StreamState, np.ndarray, int]],
               columns: dict[str, np.ndarray]) -> None:
        """Decide each stream's clock rate (SDP, static table, or inferred) and replay its
        packets: those held, then its part of this batch's `columns` (one update for all the
        streams: each keeps its packets' order). Each entry names the row of `columns` that
        closed the stream's clock-rate window (-1: none, the window is what was held).

        The statistics get the SDP's rtpmap rates per payload type, and the inferred rate only
        when nothing else is known, so that jitter matches Wireshark's wherever it knows.
        """
        if not ready:
            return
        for stream, part, closing in ready:
            ends = _first_and_last(self._held, stream, part, closing, columns)
            stream.first_frame = int(ends["frame"][0])
            sdp = self.sdp_for(stream)
            stream.clock_rate, stream.clock_rate_source = self._clock_rate(sdp, ends)
            inferred = stream.clock_rate if stream.clock_rate_source == INFERRED else None
            stream.set_id = self.stream_set.add_stream(inferred, sdp_clock_rates(sdp))
        set_ids = np.array([stream.set_id for stream, _, _ in ready], np.int64)
        owner, held = self._held.take(np.array([stream.serial for stream, _, _ in ready],
                                               np.int64))
        parts, ids = ([held], [set_ids[owner]]) if owner.size else ([], [])
        fresh = np.concatenate([part for _, part, _ in ready])
        if fresh.size:
            parts.append({name: col[fresh] for name, col in columns.items()})
            ids.extend(np.full(part.size, stream.set_id) for stream, part, _ in ready)
        if parts:
            self.stream_set.update(np.concatenate(ids), **{
                name: np.concatenate([part[name] for part in parts]) for name in parts[0]})

    def finish(self) -> None:
        """After the last batch: give the streams their counts, drop what nothing confirmed as
        media, start the streams still held."""
        self._counts.apply(self._by_serial)
        self._drop_unconfirmed()
        for stream in self.streams.values():
            stream.probation_samples = None
        held = [(s, _NO_ROWS, -1) for s in self.streams.values()
                if s.set_id < 0 and self._held.count[s.serial] > 0]
        self._start(held, {})

    def _drop_unconfirmed(self) -> None:
        """Forget the RTP and RTCP of flows where nothing confirmed media: no stream of the
        flow passed probation (`_probation`), no sampled RTCP datagram was exactly well-formed
        RTCP, the flow carried neither STUN (ICE checks, TURN; or it uses a TURN port) nor
        Zoom's framing, and no SDP announced either end. Counted in `unconfirmed`. Random
        datagrams (encrypted P2P protocols) start like RTP by chance."""
        media = {s.flow_index for s in self.streams.values()}
        media.update(flow for flow, _ in self.rtcp_packets)
        vouched = {s.flow_index for s in self.streams.values() if s.confirmed_frame >= 0}
        vouched.update(self._rtcp_whole, self._stun_flows, self.zoom_layouts)
        drop = {f for f in media - vouched if not self._announced(f)}
        self.unconfirmed.flows += len(drop | self._untracked.keys())
        rtp = sum(sum(s.payload_types.values()) for s in self.streams.values()
                  if s.flow_index in drop)
        rtcp = sum(n for (flow, _), n in self.rtcp_packets.items() if flow in drop)
        self.unconfirmed.packets += sum(self._untracked.values()) + rtp + rtcp
        if not drop:
            return
        self.streams = {k: s for k, s in self.streams.items() if s.flow_index not in drop}
        self._stream_keys = {k: s for k, s in self._stream_keys.items()
                             if s.flow_index not in drop}
        self.rtcp_packets = {k: n for k, n in self.rtcp_packets.items() if k[0] not in drop}
        self.srtcp_packets = {k: n for k, n in self.srtcp_packets.items() if k[0] not in drop}
        for flow in drop:
            self.zoom_layouts.pop(flow, None)

    def _announced(self, flow: int) -> bool:
        """Some SDP m= line named an end of this flow (its RTP or its RTCP port)."""
        return any(endpoint in self.capture.sdp_media
                   for endpoint in self._flow(flow).named_endpoints())

    def statistics(self, stream: StreamState) -> StreamStatistics:
        if self._merged is not None:
            return self._merged.statistics[_key_of(stream)]
        return self.stream_set.result(stream.set_id)

    # ------------------------------------------------------------------ media workers

    def part(self) -> MediaPart:
        """What this extractor found, with each stream's results (call after `finish`): a
        media worker's answer, for `absorb`."""
        streams = list(self.streams.values())
        return MediaPart(
            streams=streams,
            statistics=[self.statistics(s) for s in streams],
            ecb=[self.ecb_result(s) for s in streams],
            zoom_layouts=self.zoom_layouts, rtcp_packets=self.rtcp_packets,
            srtcp_packets=self.srtcp_packets, unconfirmed=self.unconfirmed,
        )

    def absorb(self, parts: list[MediaPart]) -> None:
        """Take over the media workers' findings (each worker had its own flows) as if this
        extractor had scanned every batch: streams in order of their first packet, and the
        ECB test kept for the first ECB_MAX_STREAMS of them to become valid RTP, as one process
        samples them (each worker sampled its own first ones: a superset)."""
        found = [(s.first_frame, w, i) for w, part in enumerate(parts)
                 for i, s in enumerate(part.streams)]
        sampled = sorted((s.confirmed_frame, w, i) for w, part in enumerate(parts)
                         for i, s in enumerate(part.streams) if s.ecb_id >= 0)
        merged = _MergedResults()
        self.streams, self._ecb_streams = {}, 0
        for _, w, i in sorted(found):
            stream = parts[w].streams[i]
            stream.ecb_id = -1
            self.streams[_key_of(stream)] = stream
            merged.statistics[_key_of(stream)] = parts[w].statistics[i]
        for _, w, i in sampled[:ECB_MAX_STREAMS]:
            stream = parts[w].streams[i]
            stream.ecb_id, self._ecb_streams = self._ecb_streams, self._ecb_streams + 1
            merged.ecb[_key_of(stream)] = parts[w].ecb[i]
        for part in parts:
            self.unconfirmed.add(part.unconfirmed)
            self.zoom_layouts.update(part.zoom_layouts)
            self.rtcp_packets.update(part.rtcp_packets)
            self.srtcp_packets.update(part.srtcp_packets)
        self._merged = merged

    @staticmethod
    def _clock_rate(sdp: SdpMedia | None, packets: dict[str, np.ndarray]
                    ) -> tuple[int | None, str]:
        """From the stream's SDP (`sdp_for`), the static table, or inferred from `packets`."""
        pt = int(packets["payload_type"][0])
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
        endpoints = self._flow(stream.flow_index).named_endpoints()
        for side in (1 - stream.direction, stream.direction):
            entry = self.capture.sdp_before(endpoints[side], stream.first_frame)
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


def find_media(g: Gather, start: np.ndarray, size: np.ndarray, mode: np.ndarray,
               flow: np.ndarray, direction: np.ndarray,
               scratch: speedups.MediaScratch | None = None) -> MediaScan:
    """The RTP packets and RTCP candidates in the UDP payloads at `start` (`size` bytes each;
    their flows' `mode`s, see `MediaExtractor._flow_modes`, `flow` indices and `direction`s).

    Candidates, in payload order: the plain or TURN one first, then up to two inside Zoom (where
    a payload has two, the first ends where the second starts); each decoded as RTP from its
    first HEAD_COLUMNS bytes. Also, per payload, whether Zoom's classifier took it and as which
    layout. With the C extension one pass over the payloads (``speedups.find_media``, whose
    results are views of `scratch`'s arrays when given); the numpy code here is the reference
    and the fallback.
    """
    if speedups.enabled():
        columns, heads, zoom_valid, zoom_layout = speedups.find_media(
            g.buffer, start, size, mode, flow, direction, scratch
        )
        return MediaScan(RtpPackets(row=columns.pop("index"), **columns),
                         RtcpCandidates(heads["index"], heads["offset"], heads["length"]),
                         zoom_valid, zoom_layout)
    demux = classify_many(g.u8(start))
    zoom_slots, zoom_valid, zoom_layout = _zoom_slots(g, start, size, mode)
    cand = _merge(start.size, [_plain_or_turn(g, start, size, mode, demux), *zoom_slots])
    head = g.rows(cand.offset, cand.length, HEAD_COLUMNS)
    rtp = rtp_header_columns(head, cand.length)
    is_rtcp = ((head[:, 0] >> 6) == 2) & (head[:, 1] >= 192) & (head[:, 1] <= 223)
    found = np.flatnonzero(is_rtcp)
    rtcp = RtcpCandidates(cand.row[found], cand.offset[found], cand.length[found])
    ok = np.flatnonzero(rtp.valid & ~is_rtcp)
    row, encap, pt = cand.row[ok], cand.encap[ok], rtp.payload_type[ok]
    fec = (encap == ENCAP_ZOOM) & (pt == ZOOM_FEC_PT)
    packets = RtpPackets(
        row=row, offset=cand.offset[ok], length=cand.length[ok], encap=encap,
        zoom_kind=cand.zoom_kind[ok], zoom_layout=cand.zoom_layout[ok], payload_type=pt,
        marker=rtp.marker[ok], sequence_number=rtp.sequence_number[ok],
        timestamp=rtp.timestamp[ok], ssrc=rtp.ssrc[ok],
        header_length_min=rtp.header_length_min[ok], extension=rtp.extension[ok],
        stream_key=_stream_key(flow[row], direction[row], fec, rtp.ssrc[ok]),
    )
    return MediaScan(packets, rtcp, zoom_valid, zoom_layout)


def _plain_or_turn(g: Gather, start: np.ndarray, size: np.ndarray, mode: np.ndarray,
                   demux: np.ndarray) -> _Slots:
    """Plain RTP, TURN ChannelData (RTP 4 bytes in) and MS-TURN 0xFF10 (12 bytes in): at most
    one per payload, as the first byte tells them apart."""
    turn = (mode & 4) != 0
    plain = ((mode & 3) == 0) & (demux == Demux.RTP)
    channel = turn & (demux == Demux.TURN_CHANNEL) & (size >= 16)
    ms = turn & (demux == Demux.QUIC_LONG) & (size >= 24)
    ms_rows = np.flatnonzero(ms)
    ms[ms_rows] = g.u16(start[ms_rows]) == 0xFF10
    take = np.flatnonzero(plain | channel | ms)
    skip = np.where(channel[take], 4, np.where(ms[take], 12, 0))
    encap = np.where(channel[take], ENCAP_TURN, np.where(ms[take], ENCAP_MS_TURN, ENCAP_PLAIN))
    length = size[take] - skip
    inner = np.flatnonzero(channel[take])  # the ChannelData length field bounds the RTP
    length[inner] = np.minimum(g.u16(start[take[inner]] + 2).astype(np.int64), length[inner])
    return _Slots(take, start[take] + skip, length, encap.astype(np.int8))


def _zoom_slots(g: Gather, start: np.ndarray, size: np.ndarray, mode: np.ndarray
                ) -> tuple[list[_Slots], np.ndarray, np.ndarray]:
    """The first and the second RTP packet inside Zoom's encapsulations, and per payload the
    classifier's verdict (valid, layout)."""
    sel = np.flatnonzero(((mode & 3) == 1) | ((mode & 3) == 2))
    head = g.rows(start[sel], size[sel], zoom.HEAD_BYTES)
    zc = zoom.zoom_columns(head, size[sel], (mode[sel] & 3) == 1)
    valid, layout = np.zeros(start.size, bool), np.zeros(start.size, np.int8)
    valid[sel], layout[sel] = zc.valid, zc.layout
    slots = []
    first = zc.valid & (zc.rtp_offset >= 0)
    for ok, rel in ((first, zc.rtp_offset),
                    (first & (zc.second_rtp_offset >= 0), zc.second_rtp_offset)):
        found = np.flatnonzero(ok)
        take, skip = sel[found], rel[found]
        slots.append(_Slots(take, start[take] + skip, size[take] - skip, ENCAP_ZOOM,
                            zc.media_kind[found], zc.layout[found]))
    return slots, valid, layout


def _merge(payloads: int, slots: list[_Slots]) -> Candidates:
    """The candidates of `slots` in payload order, a payload's in slot order; where a payload
    has two, the first ends where the second starts."""
    count = np.zeros(payloads, np.int64)
    for slot in slots:
        count[slot.take] += 1
    end = np.cumsum(count)
    total = int(end[-1]) if end.size else 0
    before = end - count  # candidates of the payloads before
    fields = {name: np.empty(total, dtype) for name, dtype in (
        ("row", np.int64), ("offset", np.int64), ("length", np.int64), ("encap", np.int8),
        ("zoom_kind", np.int8), ("zoom_layout", np.int8))}
    for slot in slots:
        at = before[slot.take]
        before[slot.take] += 1
        fields["row"][at] = slot.take
        for name in ("offset", "length", "encap", "zoom_kind", "zoom_layout"):
            fields[name][at] = getattr(slot, name)
    cand = Candidates(**fields)
    if total > np.count_nonzero(count):
        same = np.flatnonzero(cand.row[1:] == cand.row[:-1])
        cand.length[same] = cand.offset[same + 1] - cand.offset[same]
    return cand


def _stream_key(flow_index: np.ndarray, direction: np.ndarray, fec: np.ndarray,
                ssrc: np.ndarray) -> np.ndarray:
    """One int64 per packet naming its stream: flow, direction, Zoom FEC apart, SSRC."""
    key = flow_index << 34
    key |= direction.astype(np.int64) << 33
    key |= fec.astype(np.int64) << 32
    key |= ssrc
    return key


_UPDATE_FIELDS = {"sequence_number": "sequence_number", "timestamp": "timestamp",
                  "payload_type": "payload_type", "marker": "marker"}


def _ecb_payloads(g: Gather, packets: RtpPackets, rtp_bytes: np.ndarray, take: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Of the packets `take`: where the payload after every cleartext header starts, its
    length on the wire, a hash of the header fields, and how many of its bytes are held."""
    start = packets.offset[take]
    header = packets.header_length_min[take]
    words = g.u16(start + header + 2).astype(np.int64)
    header = header + np.where(packets.extension[take], 4 + 4 * words, 0)
    held = packets.length[take] - header
    seq = packets.sequence_number[take].astype(np.uint64)
    stamp = packets.timestamp[take].astype(np.uint64)
    ident = packets.ssrc[take].astype(np.uint64)
    header_hash = (ident << np.uint64(32)) ^ (seq << np.uint64(16)) ^ stamp
    return (start + header, np.maximum(rtp_bytes[take] - header, 0), header_hash,
            np.maximum(held, 0))


def _rtp_bytes(cols: MediaWork, packets: RtpPackets) -> np.ndarray:
    """Each RTP packet's length as its headers declare it: what the frame holds, plus, for
    the last packet of a payload, the payload's bytes the frame does not hold."""
    if not cols.uncaptured.any():
        return packets.length
    last = np.ones(packets.row.size, bool)
    last[:-1] = packets.row[1:] != packets.row[:-1]  # (a payload's packets are adjacent)
    return packets.length + np.where(last, cols.uncaptured[packets.row], 0)


def _stream_columns(cols: MediaWork, packets: RtpPackets, rtp_bytes: np.ndarray,
                    at: np.ndarray | None) -> dict[str, np.ndarray]:
    """What `StreamSet.update` takes of the packets `at` (None: all of them, not copied)."""
    def pick(column: np.ndarray) -> np.ndarray:
        return column if at is None else column[at]

    row = pick(packets.row)
    return {"frame": cols.frame[row], "arrival_s": cols.ts_ns[row] / 1e9,
            "rtp_bytes": pick(rtp_bytes),
            **{name: pick(getattr(packets, f)) for name, f in _UPDATE_FIELDS.items()}}


_NO_ROWS = np.zeros(0, np.int64)
def _first_and_last(held: HeldPackets, stream: StreamState, part: np.ndarray, closing: int,
                    columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The first packet of a stream's clock-rate window and its last (when another): the row
    `closing` of `columns`, which completed the window, else the last one held."""
    count = int(held.count[stream.serial])
    total = count + part.size
    ends = {}
    for name in PROBE_COLUMNS:
        first = held.first[name][stream.serial] if count else columns[name][part[0]]
        last = columns[name][closing] if closing >= 0 else held.last[name][stream.serial]
        ends[name] = np.array([first, last] if total > 1 else [first])
    return ends


def _per_stream(states: list[StreamState], name: str) -> np.ndarray:
    """One int attribute of each stream, as an int64 array."""
    return np.fromiter(map(attrgetter(name), states), np.int64, len(states))


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
    if span < CLOCK_PROBE_SECONDS or ticks == 0 or ticks >= 1 << 31:
        return None
    rate = ticks / span
    nearest = int(COMMON_CLOCK_RATES[np.argmin(np.abs(np.log(COMMON_CLOCK_RATES / rate)))])
    return nearest if abs(nearest / rate - 1) <= 0.2 else None
