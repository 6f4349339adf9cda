"""Bidirectional TCP/UDP flows, built batch by batch from `PacketColumns`.

Each flow is kept in a canonical orientation (endpoint A sorts before endpoint B) while packets
arrive; which side is the client is decided once the capture has been read (`orient`).
Per-packet work is vectorized: packets are hashed to a 64-bit flow key, factorized, and the
counters of the few flows present in a batch are updated with `bincount`.

IP fragments after the first carry no ports: each is given the flow of its datagram's first
fragment when that came earlier in the capture (matched by addresses, protocol and IP
identification), so that the flow's bytes and timeline count every frame on the wire. Its
packets count datagrams, as tshark's conversations do. Bytes of fragments that come before
their first fragment are added to the flow's total when it arrives.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analyzer import speedups
from analyzer.arrays import grown
from analyzer.capture.batch import PacketBatch
from analyzer.defrag import parse_fragment
from analyzer.packets import PROTO_TCP, PROTO_UDP, PacketColumns

TCP_SYN, TCP_ACK = 0x02, 0x10
MAX_FRAGMENTED_DATAGRAMS = 4096  # first fragments remembered for the later ones (oldest go)
FRAGMENT_HEADER_BYTES = 256  # enough for the IP header and its extension chain
FragmentKey = tuple[int, int, int, int, int, int]  # (src hi, lo, dst hi, lo, protocol, id)
Endpoint = tuple[int, int, int]  # (address high 64 bits, low 64 bits, port)
FlowKey = tuple[int, int, int, int, int, int, int]  # (protocol, *endpoint A, *endpoint B)


def address_text(hi: int, lo: int) -> str:
    """Text form of an address stored as two 64-bit halves (IPv4 as ::ffff:a.b.c.d)."""
    if hi == 0 and (lo >> 32) == 0xFFFF:  # (ipaddress's own text, ten times faster)
        return f"{(lo >> 24) & 255}.{(lo >> 16) & 255}.{(lo >> 8) & 255}.{lo & 255}"
    return _ipv6_text(hi, lo)


def ipv4_values(endpoints: list[Endpoint]) -> tuple[np.ndarray, np.ndarray]:
    """Of many endpoints: which addresses are IPv4 (::ffff:a.b.c.d), and their 32-bit values
    (uint64; meaningless where not IPv4)."""
    hi = np.fromiter((e[0] for e in endpoints), np.uint64, len(endpoints))
    lo = np.fromiter((e[1] for e in endpoints), np.uint64, len(endpoints))
    return (hi == 0) & ((lo >> np.uint64(32)) == 0xFFFF), lo & np.uint64(0xFFFFFFFF)


def address_texts(endpoints: list[Endpoint]) -> list[str]:
    """`address_text` of many endpoints' addresses at once (IPv4 by Arrow, not one by one).
    Equal addresses share one text (a client's address may be on a million flows)."""
    is_v4, value = ipv4_values(endpoints)
    v4 = np.flatnonzero(is_v4)
    octets = [pc.cast(pa.array((value[v4] >> np.uint64(shift)) & np.uint64(255)), pa.string())
              for shift in (24, 16, 8, 0)]
    joined = pc.binary_join_element_wise(*octets, ".").dictionary_encode()
    distinct = np.array([*joined.dictionary.to_pylist(), ""], dtype=object)
    codes = np.full(len(endpoints), len(distinct) - 1)  # ("": not IPv4, filled in below)
    codes[v4] = joined.indices.to_numpy()
    texts: list[str] = distinct[codes].tolist()
    if v4.size < len(endpoints):
        for i in np.setdiff1d(np.arange(len(endpoints)), v4).tolist():
            texts[i] = _ipv6_text(endpoints[i][0], endpoints[i][1])
    return texts


@lru_cache(maxsize=1 << 16)  # flows share few addresses; the tables ask for each many times
def _ipv6_text(hi: int, lo: int) -> str:
    return str(ipaddress.IPv6Address((hi << 64) | lo))


def address_value(hi: int, lo: int) -> tuple[int, int]:
    """(IP version, address as an integer) of an address stored as two 64-bit halves."""
    if hi == 0 and (lo >> 32) == 0xFFFF:
        return 4, lo & 0xFFFFFFFF
    return 6, (hi << 64) | lo


@dataclass(slots=True)
class Flow:
    """One bidirectional transport conversation; direction 0 is A -> B, 1 is B -> A."""

    flow_id: int
    transport: str  # 'udp' | 'tcp'
    a: Endpoint
    b: Endpoint
    first_ts_ns: int
    last_ts_ns: int
    first_frame: int
    first_sender: int  # 0 when A sent the first packet, 1 when B did
    syn_sender: int = -1  # TCP: who sent the SYN (without ACK); -1 if not seen
    _texts: tuple[str, str] | None = field(default=None, repr=False, compare=False)

    def address(self, side: int) -> str:
        texts = self._texts
        if texts is None:  # (asked for about twenty times per flow while the tables are built)
            texts = self._texts = (address_text(self.a[0], self.a[1]),
                                   address_text(self.b[0], self.b[1]))
        return texts[side]

    def address_value(self, side: int) -> tuple[int, int]:
        """(IP version, integer) of the side's address."""
        ep = self.b if side else self.a
        return address_value(ep[0], ep[1])

    def port(self, side: int) -> int:
        return (self.b if side else self.a)[2]


@dataclass(slots=True)
class FlowAssignment:
    """Per packet of a batch: index of its flow in `FlowTable.flows` (-1: none), direction."""

    flow_index: np.ndarray  # int64
    direction: np.ndarray  # int8: 0 A->B, 1 B->A


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: a well-spread 64-bit hash of each element."""
    x = x.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _less(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> np.ndarray:
    """Lexicographic a <= b over parallel columns."""
    result = np.ones(a[0].size, dtype=bool)
    for col_a, col_b in reversed(list(zip(a, b, strict=True))):
        result = (col_a < col_b) | ((col_a == col_b) & result)
    return result


def flow_keys(cols: PacketColumns, sel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per selected packet: a 64-bit key of its flow (protocol and both endpoints, in canonical
    order) and whether its source is endpoint A (the one that sorts first)."""
    if speedups.enabled():
        return speedups.flow_keys(sel, cols.src_hi, cols.src_lo, cols.sport, cols.dst_hi,
                                  cols.dst_lo, cols.dport, cols.ip_proto)
    return flow_keys_numpy(cols, sel)


def flow_keys_numpy(cols: PacketColumns, sel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    src = (cols.src_hi[sel], cols.src_lo[sel], cols.sport[sel].astype(np.uint64))
    dst = (cols.dst_hi[sel], cols.dst_lo[sel], cols.dport[sel].astype(np.uint64))
    src_is_a = _less(src, dst)
    a = tuple(np.where(src_is_a, s, d) for s, d in zip(src, dst, strict=True))
    b = tuple(np.where(src_is_a, d, s) for s, d in zip(src, dst, strict=True))
    key = _mix(cols.ip_proto[sel].astype(np.uint64))
    for column in (*a, *b):
        key = _mix(key ^ column)
    return key, src_is_a


class FlowTable:
    """All flows of one capture.

    Packet, byte and time counters are kept in arrays while batches arrive (one vectorized
    update per batch). Packets and bytes stay there (`counters`); the last times and SYN
    senders are copied into the `Flow` objects by `settle`, once the capture is read.
    """

    def __init__(self) -> None:
        self.flows: list[Flow] = []
        self._by_key: dict[FlowKey, int] = {}
        self._packets = np.zeros(0, dtype=np.int64)  # per flow * 2 + direction
        self._bytes = np.zeros(0, dtype=np.int64)
        self._last_ts = np.zeros(0, dtype=np.int64)  # per flow
        self._syn_sender = np.zeros(0, dtype=np.int8)
        self._datagram_slot: dict[FragmentKey, int] = {}  # flow * 2 + direction of its first
        self._early_bytes: dict[FragmentKey, int] = {}  # fragments before their first

    def settle(self) -> None:
        """Copy the last times and SYN senders into the flows (call when every batch has been
        through `update`), and give each flow its addresses' text (the tables read them, all at
        once here). Packets and bytes stay in arrays: `counters`."""
        last_ts, syn = self._last_ts.tolist(), self._syn_sender.tolist()
        unnamed = [flow for flow in self.flows if flow._texts is None]
        texts = address_texts([f.a for f in unnamed] + [f.b for f in unnamed])
        for flow, a, b in zip(unnamed, texts[: len(unnamed)], texts[len(unnamed) :], strict=True):
            flow._texts = (a, b)
        for i, flow in enumerate(self.flows):
            flow.last_ts_ns = max(flow.last_ts_ns, last_ts[i])
            flow.syn_sender = syn[i]

    def counters(self) -> tuple[np.ndarray, np.ndarray]:
        """Packets and frame bytes of each flow (rows) in each direction (columns: A -> B,
        B -> A)."""
        n = len(self.flows)
        self._grow(n)
        return self._packets[: 2 * n].reshape(n, 2), self._bytes[: 2 * n].reshape(n, 2)

    def update(self, cols: PacketColumns, batch: PacketBatch | None = None) -> FlowAssignment:
        """The flows of a batch's packets; with `batch` (its bytes), IP fragments after the
        first are given their datagram's flow too (see the module doc)."""
        n = len(cols)
        flow_index = np.full(n, -1, dtype=np.int64)
        direction = np.zeros(n, dtype=np.int8)
        sel = np.flatnonzero(
            (cols.sport >= 0) & ((cols.ip_proto == PROTO_UDP) | (cols.ip_proto == PROTO_TCP))
        )
        if sel.size:
            flow_index[sel], direction[sel] = self._assign(cols, sel)
            self._count(cols, sel, flow_index[sel], direction[sel])
        if batch is not None and cols.fragment.any():
            later = self._follow_fragments(cols, batch, flow_index, direction)
            self._count_bytes(cols, later, flow_index[later], direction[later])
        return FlowAssignment(flow_index, direction)

    def _follow_fragments(self, cols: PacketColumns, batch: PacketBatch,
                          flow_index: np.ndarray, direction: np.ndarray) -> np.ndarray:
        """Fill in the flow of fragments after the first, in capture order; their rows."""
        self._grow(len(self.flows))
        found = []
        rows = np.flatnonzero(cols.fragment & ((cols.ip_proto == PROTO_UDP)
                                               | (cols.ip_proto == PROTO_TCP)))
        for row in rows.tolist():
            key = self._fragment_key(cols, batch, row)
            if key is None:
                continue
            if not cols.later_fragment[row]:
                if flow_index[row] >= 0:
                    self._first_fragment(key, int(flow_index[row]) * 2 + int(direction[row]))
                continue
            slot = self._datagram_slot.get(key)
            if slot is None:
                self._early_bytes[key] = self._early_bytes.get(key, 0) + int(cols.wirelen[row])
                _forget_oldest(self._early_bytes)
            else:
                flow_index[row], direction[row] = slot >> 1, slot & 1
                found.append(row)
        return np.array(found, dtype=np.int64)

    def _first_fragment(self, key: FragmentKey, slot: int) -> None:
        self._datagram_slot[key] = slot
        _forget_oldest(self._datagram_slot)
        self._bytes[slot] += self._early_bytes.pop(key, 0)

    @staticmethod
    def _fragment_key(cols: PacketColumns, batch: PacketBatch, row: int) -> FragmentKey | None:
        start = int(cols.l3_offset[row])
        end = min(int(batch.data_offset[row] + batch.caplen[row]), start + FRAGMENT_HEADER_BYTES)
        fragment = parse_fragment(batch.buffer[start:end].tobytes(), int(cols.ip_version[row]))
        if fragment is None:
            return None
        return (int(cols.src_hi[row]), int(cols.src_lo[row]), int(cols.dst_hi[row]),
                int(cols.dst_lo[row]), int(cols.ip_proto[row]), fragment.ident)

    def _assign(self, cols: PacketColumns, sel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        key, src_is_a = flow_keys(cols, sel)
        codes, uniques = pd.factorize(key)
        first = np.full(uniques.size, sel.size, dtype=np.int64)
        np.minimum.at(first, codes, np.arange(sel.size))
        rows = sel[first]  # each distinct flow's first packet in the batch, its fields as lists
        fields = zip(*(column[rows].tolist() for column in (
            cols.ip_proto, cols.src_hi, cols.src_lo, cols.sport, cols.dst_hi, cols.dst_lo,
            cols.dport, cols.ts_ns, cols.frame)), src_is_a[first].tolist(), strict=True)
        by_key, local_to_flow = self._by_key, []
        for proto, s_hi, s_lo, sport, d_hi, d_lo, dport, ts_ns, frame, src_is_a_ in fields:
            ends: FlowKey = ((proto, s_hi, s_lo, sport, d_hi, d_lo, dport) if src_is_a_
                             else (proto, d_hi, d_lo, dport, s_hi, s_lo, sport))
            index = by_key.get(ends)
            local_to_flow.append(self._new_flow(ends, ts_ns, frame, src_is_a_) if index is None
                                 else index)
        return np.array(local_to_flow, np.int64)[codes], (~src_is_a).astype(np.int8)

    def _new_flow(self, key: FlowKey, ts_ns: int, frame: int, src_is_a: bool) -> int:
        """A flow for `key`: (protocol, endpoint A's address halves and port, endpoint B's)."""
        index = self._by_key[key] = len(self.flows)
        self.flows.append(Flow(
            flow_id=index + 1, transport="tcp" if key[0] == PROTO_TCP else "udp",
            a=key[1:4], b=key[4:7], first_ts_ns=ts_ns, last_ts_ns=ts_ns, first_frame=frame,
            first_sender=0 if src_is_a else 1,
        ))
        return index

    def _count(
        self, cols: PacketColumns, sel: np.ndarray, flow_index: np.ndarray, direction: np.ndarray
    ) -> None:
        self._grow(len(self.flows))
        size = 2 * len(self.flows)
        slot = flow_index * 2 + direction
        self._packets[:size] += np.bincount(slot, minlength=size)
        wire = np.bincount(slot, weights=cols.wirelen[sel], minlength=size)
        self._bytes[:size] += np.rint(wire).astype(np.int64)  # exact: sums stay below 2**53
        np.maximum.at(self._last_ts, flow_index, cols.ts_ns[sel])
        syn = (cols.tcp_flags[sel] & (TCP_SYN | TCP_ACK)) == TCP_SYN
        if syn.any():  # the flow's first SYN decides, whichever batch holds the next ones
            batch_syn = np.full(len(self.flows), -1, dtype=np.int8)
            batch_syn[flow_index[syn][::-1]] = direction[syn][::-1]  # (the last write wins)
            unset = (self._syn_sender[: len(self.flows)] < 0) & (batch_syn >= 0)
            self._syn_sender[: len(self.flows)][unset] = batch_syn[unset]

    def _count_bytes(self, cols: PacketColumns, rows: np.ndarray, flow_index: np.ndarray,
                     direction: np.ndarray) -> None:
        """Frames that belong to a flow without being one of its packets (later fragments)."""
        if rows.size == 0:
            return
        slot = flow_index * 2 + direction
        np.add.at(self._bytes, slot, cols.wirelen[rows])
        np.maximum.at(self._last_ts, flow_index, cols.ts_ns[rows])

    def _grow(self, flows: int) -> None:
        if self._last_ts.size >= flows:
            return
        capacity = max(2 * flows, 1024)
        self._packets = grown(self._packets, 2 * capacity, 0)
        self._bytes = grown(self._bytes, 2 * capacity, 0)
        self._last_ts = grown(self._last_ts, capacity, np.iinfo(np.int64).min)
        self._syn_sender = grown(self._syn_sender, capacity, -1)


def _forget_oldest(entries: dict[FragmentKey, int]) -> None:
    if len(entries) > MAX_FRAGMENTED_DATAGRAMS:
        del entries[next(iter(entries))]

