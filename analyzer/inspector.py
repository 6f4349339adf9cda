"""The slow path: per-packet decoding of the few packets that carry handshakes and signalling.

`Inspector.process` picks those packets out of a batch with vectorized masks (STUN, DTLS
handshake records, ZRTP, QUIC long headers, SIP, DNS, TCP SYNs and the first bytes of each TCP
direction) and hands each to its protocol decoder. What it learns goes into `FlowFacts` (per
flow) and `CaptureFacts` (links between flows: DNS names, SDP media endpoints, learned peers).
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable

import numpy as np

from analyzer.capture.batch import PacketBatch
from analyzer.decode import dtls, quic, sip, stun, tls, zrtp
from analyzer.decode.demux import Demux, classify_many
from analyzer.defrag import Defragmenter, parse_fragment
from analyzer.errors import DecodeError
from analyzer.facts import SIGNATURE, CaptureFacts, FlowFacts, HandshakeFacts, StunFacts
from analyzer.flows import FlowAssignment, FlowTable
from analyzer.packets import PROTO_TCP, PROTO_UDP, UDP_HEADER, Gather, PacketColumns
from analyzer.sessions import SessionRecorder

DNS_PORTS = (53, 5353, 5355)
SIP_PORTS = (5060, 5061, 5080)
ZOOM_PORTS = range(8801, 8811)
MAX_STUN_PER_FLOW = 1000
MAX_QUIC_INITIALS_PER_FLOW = 8
QUIC_MIN_INITIAL = 1000  # RFC 9000 says 1200; be lenient with odd senders
TURN_METHODS = frozenset({3, 4, 6, 7, 8, 9, 10, 11, 12})
ROWS_AT_A_TIME = 8192  # slow-path rows turned into Python values together
# The first four bytes of every SIP request method and of "SIP/2.0" (RFC 3261 and extensions)
SIP_PREFIXES = np.array([int.from_bytes(w, "big") for w in (
    b"INVI", b"ACK ", b"BYE ", b"CANC", b"OPTI", b"REGI", b"PRAC", b"SUBS", b"NOTI", b"PUBL",
    b"INFO", b"REFE", b"MESS", b"UPDA", b"SIP/")], dtype=np.uint32)
TCP_SYN, TCP_ACK = 0x02, 0x10
# The slow path's handler of a packet (0: none)
KIND_STUN, KIND_DTLS, KIND_ZRTP, KIND_QUIC, KIND_SIP, KIND_DNS, KIND_TCP = range(1, 8)
KIND_UDP_FRAGMENT = 8
UDP_PORTS_LENGTH = struct.Struct("!HHH")  # source port, destination port, length (then checksum)

ModeHook = Callable[[int, int], None]  # (batch row, flow index or -1 for any flow)


class Inspector:
    def __init__(self, flows: FlowTable, capture: CaptureFacts) -> None:
        self.flows = flows
        self.capture = capture
        self.facts: list[FlowFacts] = []
        self.sessions = SessionRecorder(self)
        self._tcp_done = np.zeros(1024, dtype=bool)  # per flow * 2 + direction (non-TCP: 0)
        self._quic_seen: dict[int, int] = {}
        self._quic = quic.QuicInitialAssembler()
        self.defrag = Defragmenter()
        # told when a packet may have changed how the media path reads a flow (its protocols,
        # STUN, Zoom P2P facts, or the capture's Zoom STUN clients)
        self.on_mode_inputs: ModeHook | None = None

    def finish(self) -> None:
        """The capture is read: count the datagrams never completed, and drop the state kept
        for packets to come (TCP streams, pending handshakes and requests: tens of megabytes
        on a capture of many flows, which the tables can use instead). `facts` stay."""
        self.defrag.finish()
        self.sessions = SessionRecorder(self)
        self._quic_seen.clear()
        self._quic = quic.QuicInitialAssembler()

    # ------------------------------------------------------------------ selection (vectorized)

    def process(self, batch: PacketBatch, cols: PacketColumns, assign: FlowAssignment,
                udp_kind: np.ndarray) -> None:
        """The batch's packets that the slow path reads, one by one. `udp_kind`: the batch's
        `udp_kinds_of` (made by the read-ahead stage)."""
        self.grow()
        rows, kinds = self._select(cols, assign, udp_kind)
        for at in range(0, rows.size, ROWS_AT_A_TIME):
            self._process_rows(batch, cols, assign, rows[at : at + ROWS_AT_A_TIME],
                               kinds[at : at + ROWS_AT_A_TIME])

    def _process_rows(self, batch: PacketBatch, cols: PacketColumns, assign: FlowAssignment,
                      rows: np.ndarray, kinds: np.ndarray) -> None:
        # the rows' fields as Python values, read once (not a numpy scalar at a time), a slice
        # of rows at a time: the values of a batch's 200,000 rows at once took 150 MB, whose
        # freed memory the objects made meanwhile kept from going back
        fields = zip(rows.tolist(), kinds.tolist(), assign.flow_index[rows].tolist(),
                     assign.direction[rows].tolist(), cols.frame[rows].tolist(),
                     cols.ts_ns[rows].tolist(), cols.payload_offset[rows].tolist(),
                     cols.payload_len[rows].tolist(), cols.tcp_flags[rows].tolist(),
                     cols.tcp_seq[rows].tolist(), strict=True)
        buffer, facts, clients = batch.buffer, self.facts, self.capture.zoom_stun_clients
        for row, kind, fi, d, frame, ts_ns, start, length, flags, seq in fields:
            if kind == KIND_UDP_FRAGMENT:
                fi = self._fragment_row(batch, cols, assign, row)
                if fi >= 0 and self.on_mode_inputs is not None:
                    self.on_mode_inputs(row, fi)
                continue
            known = facts[fi]  # what the media path's mode of the flow is decided from, before
            before = (known.stun is not None, known.zoom_p2p, len(known.protocols), len(clients))
            data = buffer[start : start + length].tobytes()
            if kind == KIND_TCP:
                self._tcp_segment(fi, d, frame, ts_ns / 1e9, data, flags, seq)
            else:
                UDP_HANDLERS[kind](self, fi, d, frame, ts_ns / 1e9, data)
            after = (known.stun is not None, known.zoom_p2p, len(known.protocols), len(clients))
            if self.on_mode_inputs is not None and after != before:
                if after[-1] != before[-1]:  # a new Zoom STUN client: any flow may be its
                    self.on_mode_inputs(row, -1)
                if kind != KIND_TCP:  # (the media path reads UDP flows only)
                    self.on_mode_inputs(row, fi)

    def _fragment_row(self, batch: PacketBatch, cols: PacketColumns, assign: FlowAssignment,
                      row: int) -> int:
        """Reassembly of a UDP fragment; the flow of the datagram it completed, else -1."""
        fi, d = int(assign.flow_index[row]), int(assign.direction[row])
        end = int(batch.data_offset[row] + batch.caplen[row])
        packet = batch.buffer[int(cols.l3_offset[row]) : end].tobytes()
        return self._udp_fragment(row, cols, packet, (fi, d) if fi >= 0 else None,
                                  int(cols.frame[row]), int(cols.ts_ns[row]) / 1e9)

    def grow(self) -> None:
        """Facts for the flows the flow table gained."""
        missing = len(self.flows.flows) - len(self.facts)
        self.facts.extend(FlowFacts() for _ in range(missing))
        if self._tcp_done.size < 2 * len(self.flows.flows):
            grown = np.zeros(max(4 * len(self.flows.flows), 1024), dtype=bool)
            grown[: self._tcp_done.size] = self._tcp_done
            self._tcp_done = grown

    def _select(self, cols: PacketColumns, assign: FlowAssignment, udp_kind: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        fi, plen = assign.flow_index, cols.payload_len
        is_udp = cols.ip_proto == PROTO_UDP
        kind = udp_kind.copy()
        tcp = (cols.ip_proto == PROTO_TCP) & (fi >= 0)
        slot = np.where(tcp, fi * 2 + assign.direction, 0)
        wanted = tcp & ((plen > 0) | ((cols.tcp_flags & TCP_SYN) != 0))
        kind[wanted & ~self._tcp_done[slot]] = KIND_TCP
        kind[is_udp & cols.fragment] = KIND_UDP_FRAGMENT  # read once reassembled
        rows = np.flatnonzero(kind)
        return rows, kind[rows]

    # ------------------------------------------------------------------ helpers

    def endpoint(self, fi: int, side: int) -> tuple[str, int]:
        flow = self.flows.flows[fi]
        return flow.address(side), flow.port(side)

    def _stun_facts(self, fi: int) -> StunFacts:
        facts = self.facts[fi]
        if facts.stun is None:
            facts.stun = StunFacts()
        return facts.stun

    # ------------------------------------------------------------------ UDP handlers

    def _udp_fragment(self, row: int, cols: PacketColumns, packet: bytes,
                      flow: tuple[int, int] | None, frame: int, ts: float) -> int:
        """A fragment of a UDP datagram (`packet`: from its IP header): the datagram goes to its
        handler in the frame that completes it, as Wireshark dissects it. Returns the flow it
        went to, else -1."""
        fragment = parse_fragment(packet, int(cols.ip_version[row]))
        if fragment is None:
            return -1
        source = (int(cols.ip_version[row]), int(cols.src_hi[row]), int(cols.src_lo[row]),
                  int(cols.dst_hi[row]), int(cols.dst_lo[row]))
        datagram = self.defrag.add(source, fragment, frame, ts, flow)
        if datagram is None or datagram.protocol != PROTO_UDP:
            return -1
        if len(datagram.payload) < UDP_HEADER:
            return -1
        sport, dport, length = UDP_PORTS_LENGTH.unpack_from(datagram.payload)
        data = datagram.payload[UDP_HEADER : max(length, UDP_HEADER)]
        kind = int(_udp_kinds(Gather(np.frombuffer(data, np.uint8)), np.zeros(1, np.int64),
                              np.array([len(data)]), np.array([sport]), np.array([dport]))[0])
        if not (kind and data):
            return -1
        UDP_HANDLERS[kind](self, datagram.flow_index, datagram.direction, frame, ts, data)
        return datagram.flow_index

    def _udp_stun(self, fi: int, d: int, frame: int, ts: float, data: bytes) -> None:
        # the flow's StunFacts come with its first message that parses: random bytes starting
        # with 0-3 are not STUN (and would turn on TURN framing for the flow)
        stun_facts = self.facts[fi].stun
        if stun_facts is not None and stun_facts.messages >= MAX_STUN_PER_FLOW:
            return
        try:
            msg = stun.parse_stun(data, strict=False)
        except DecodeError:
            self.sessions.zoom_handshake(fi, d, frame, ts, data)
            self.sessions.discord_ip_discovery(fi, frame, data)
            return
        self.stun_message(fi, d, frame, ts, msg)

    def stun_message(self, fi: int, d: int, frame: int, ts: float, msg: stun.StunMessage) -> None:
        facts, stun_facts = self.facts[fi], self._stun_facts(fi)
        stun_facts.messages += 1
        stun_facts.classic |= msg.classic
        is_turn = msg.method in TURN_METHODS
        stun_facts.turn |= is_turn
        if msg.method == 1 and msg.msg_class == "request":
            stun_facts.request_directions.add(d)
        facts.add_protocol("stun")  # TURN is a usage of STUN: a TURN flow shows both
        if is_turn:
            facts.add_protocol("turn")
        for value, bucket in ((msg.software, stun_facts.software), (msg.realm, stun_facts.realm)):
            if value:
                bucket.add(value)
        hint = stun.service_hint(msg)
        if hint is not None:
            facts.add_evidence(SIGNATURE, hint.service, hint.evidence, frame)
        self._stun_addresses(fi, d, frame, ts, msg, hint)
        self.sessions.stun_transaction(fi, d, frame, ts, msg)

    def _stun_addresses(
        self, fi: int, d: int, frame: int, ts: float, msg: stun.StunMessage,
        hint: stun.ServiceHint | None,
    ) -> None:
        stun_facts = self._stun_facts(fi)
        learned = self.capture.learned
        for address, bucket, why in (
            (msg.xor_mapped_address or msg.mapped_address, stun_facts.mapped,
             "STUN mapped address"),
            (msg.xor_relayed_address, stun_facts.relayed, "TURN relayed address"),
            (msg.xor_peer_address, stun_facts.peers, "TURN peer address"),
        ):
            if address is not None:
                endpoint = (str(address[0]), int(address[1]))
                bucket.add(endpoint)
                learned.setdefault(endpoint, (fi, f"{why} in frame {frame}", frame))
        if msg.channel_number is not None:
            stun_facts.channels.add(msg.channel_number)
        if hint is not None and hint.service == "zoom" and msg.msg_class == "request":
            self.capture.zoom_stun_clients.setdefault(self.endpoint(fi, d), ts)

    def _udp_dtls(self, fi: int, d: int, frame: int, ts: float, data: bytes) -> None:
        if data[0] == tls.CONTENT_APPLICATION_DATA:
            self._dtls_application_data(fi, data)
            return
        try:
            records = dtls.parse_dtls_records(data)
        except DecodeError:
            self.sessions.zoom_p2p_setup(fi, d, frame, ts, data)
            return
        self.facts[fi].add_protocol("dtls")
        assembler = self.sessions.dtls_assembler(fi, d)
        for record in records:
            if record.content_type == tls.CONTENT_HANDSHAKE and record.epoch == 0:
                try:
                    messages = assembler.feed(record)
                except DecodeError as exc:
                    self.facts[fi].note_damage(f"frame {frame}: {exc}")
                    continue
                for message in messages:
                    self.sessions.handshake_message(fi, d, frame, ts, message, "dtls")

    def _dtls_application_data(self, fi: int, data: bytes) -> None:
        """Encrypted DTLS records: proof of DTLS even when the handshake was not captured."""
        facts = self.facts[fi]
        if facts.dtls is not None and facts.dtls.encrypted_seen:
            return  # one record is enough; later ones cost nothing more
        if dtls.looks_like_dtls(data):
            facts.add_protocol("dtls")
            if facts.dtls is None:
                facts.dtls = HandshakeFacts(protocol="dtls")
            facts.dtls.encrypted_seen = True

    def _udp_zrtp(self, fi: int, d: int, frame: int, ts: float, data: bytes) -> None:
        try:
            packet = zrtp.parse_zrtp(data)
        except DecodeError:
            self.sessions.discord_ip_discovery(fi, frame, data)
            return
        facts = self.facts[fi]
        facts.add_protocol("zrtp")
        facts.zrtp_messages |= {packet.message_type}
        facts.zrtp_directions |= {d}
        facts.add_evidence(SIGNATURE, "sip", "ZRTP key agreement in the media path (RFC 6189, "
                           "standards VoIP)", frame)

    def _udp_quic(self, fi: int, d: int, frame: int, ts: float, data: bytes) -> None:
        seen = self._quic_seen.get(fi, 0)
        if seen >= MAX_QUIC_INITIALS_PER_FLOW or not quic.looks_like_quic_long_header(data):
            return
        self._quic_seen[fi] = seen + 1
        facts = self.facts[fi]
        facts.add_protocol("quic")
        if not facts.quic_version:
            with contextlib.suppress(DecodeError):  # version-independent header only
                facts.quic_version = quic.parse_long_header(data).version
        initial = self._quic.feed(data)
        if initial is not None and initial.client_hello is not None:
            self.sessions.client_hello(fi, frame, ts, initial.client_hello, "quic")

    def _udp_sip(self, fi: int, d: int, frame: int, ts: float, data: bytes) -> None:
        if sip.looks_like_sip(data):
            self.sessions.sip_message(fi, d, frame, ts, data, over_tls=False)

    def _udp_dns(self, fi: int, d: int, frame: int, ts: float, data: bytes) -> None:
        self.sessions.dns_message(fi, frame, data)

    # ------------------------------------------------------------------ TCP

    def _tcp_segment(
        self, fi: int, d: int, frame: int, ts: float, data: bytes, flags: int, seq: int
    ) -> None:
        stream = self.sessions.tcp_direction(fi, d)
        if flags & TCP_SYN:
            stream.reassembler.syn(seq)
            self.sessions.tcp_syn(fi, d, frame, ts, bool(flags & TCP_ACK))
        new = stream.reassembler.feed(seq, data)
        if new:
            self.sessions.tcp_data(fi, d, frame, ts, new)
        if stream.finished or stream.reassembler.full:
            self._tcp_done[fi * 2 + d] = True


# The slow path's handler of each kind of UDP payload: (inspector, flow index, direction, frame,
# time, payload). Functions, not the inspector's bound methods: those would make it a reference
# cycle, which only the cycle collector frees (a capture's whole state, after the analysis).
UDP_HANDLERS: dict[int, Callable[[Inspector, int, int, int, float, bytes], None]] = {
    KIND_STUN: Inspector._udp_stun, KIND_DTLS: Inspector._udp_dtls,
    KIND_ZRTP: Inspector._udp_zrtp, KIND_QUIC: Inspector._udp_quic,
    KIND_SIP: Inspector._udp_sip, KIND_DNS: Inspector._udp_dns,
}


def udp_kinds_of(batch: PacketBatch, cols: PacketColumns, assign: FlowAssignment
                 ) -> np.ndarray:
    """The slow-path kind of each packet of the batch that is a UDP payload of a flow (0: none
    or not such a packet). It depends on the batch alone, so the read-ahead thread makes it."""
    plen = cols.payload_len
    udp = np.flatnonzero((cols.ip_proto == PROTO_UDP) & (assign.flow_index >= 0) & (plen > 0))
    kind = np.zeros(len(plen), dtype=np.int8)
    kind[udp] = _udp_kinds(Gather(batch.buffer), cols.payload_offset[udp], plen[udp],
                           cols.sport[udp], cols.dport[udp])
    return kind


def _udp_kinds(g: Gather, at: np.ndarray, plen: np.ndarray, sport: np.ndarray,
               dport: np.ndarray) -> np.ndarray:
    """The slow-path kind of each UDP payload (at `at`, `plen` bytes long; 0: none). The first
    match wins: ports that name a protocol, then first bytes; later assignments below take
    precedence."""
    ports = (sport, dport)
    first = g.u8(at)
    demux = classify_many(first)
    sip_like = _sip_like(g, at, plen, first)
    kind = np.zeros(plen.size, dtype=np.int8)
    kind[sip_like] = KIND_SIP
    kind[(first >= 0xC0) & (plen >= QUIC_MIN_INITIAL)] = KIND_QUIC
    kind[(demux == Demux.ZRTP) & (plen >= 8)] = KIND_ZRTP
    dtls_record = ((first >= 20) & (first <= 23)) | (first == 0x1F)
    kind[(demux == Demux.DTLS) & dtls_record & (plen >= 13)] = KIND_DTLS
    kind[(demux == Demux.STUN) & (plen >= 8)] = KIND_STUN
    kind[sip_like & _on_ports(ports, SIP_PORTS)] = KIND_SIP
    kind[_on_ports(ports, DNS_PORTS)] = KIND_DNS
    return kind


def _sip_like(g: Gather, at: np.ndarray, plen: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Payloads of 12+ bytes starting with a SIP method or "SIP/" (all begin with 'A'..'U')."""
    maybe = np.flatnonzero((first >= ord("A")) & (first <= ord("U")) & (plen >= 12))
    sip_like = np.zeros(plen.size, dtype=bool)
    sip_like[maybe] = np.isin(g.u32(at[maybe]).astype(np.uint32), SIP_PREFIXES)
    return sip_like


def _on_ports(ports: tuple[np.ndarray, np.ndarray], wanted: tuple[int, ...]) -> np.ndarray:
    hit = np.zeros(ports[0].size, dtype=bool)
    for port in wanted:
        hit |= (ports[0] == port) | (ports[1] == port)
    return hit

