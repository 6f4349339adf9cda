"""IP reassembly: fragmented datagrams put back together for the slow path.

Wireshark reassembles IPv4 and IPv6 fragments by default and dissects the datagram in the frame
that completed it. So does confscope, so that a SIP INVITE whose SDP spills into a second
fragment is read whole (its `a=crypto` keys included) and reported at Wireshark's frame number.

Fragments are rare, so they are parsed one at a time. Memory and time are bounded: at most
MAX_PENDING datagrams are in progress (the oldest is dropped first), a datagram may not grow
past MAX_DATAGRAM bytes or MAX_FRAGMENTS pieces (64 KiB in 576-byte packets takes 114), and one
not completed within FRAGMENT_TIMEOUT_S of capture time (Linux's ipfrag_time) is dropped. A
fragment repeated at the same offset keeps its first copy; where fragments overlap, the one at
the lower offset wins.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from analyzer.packets import (
    IPV4_MF,
    IPV4_MIN,
    IPV4_OFFSET_MASK,
    IPV6_AH,
    IPV6_EXTENSIONS,
    IPV6_FRAGMENT,
    IPV6_HEADER,
)

MAX_PENDING = 1024
MAX_DATAGRAM = 65_535
MAX_FRAGMENTS = 256
FRAGMENT_TIMEOUT_S = 30.0
# version and IHL, total length, identification, flags and offset, protocol
_IPV4 = struct.Struct("!BxHHHxB")
_IPV6_FRAGMENT = struct.Struct("!BxHI")  # next header, offset/flags, identification

Key = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Fragment:
    """One fragment: which datagram, where its bytes go, whether more follow."""

    ident: int
    protocol: int  # of the datagram's payload
    offset: int  # in bytes
    more: bool
    data: bytes


@dataclass(frozen=True, slots=True)
class Datagram:
    """A reassembled IP payload (transport header included), with the flow and direction of its
    first fragment and the frame and time of the fragment that completed it."""

    flow_index: int
    direction: int
    protocol: int
    frame: int
    ts: float
    payload: bytes


@dataclass(slots=True)
class _Pending:
    first_ts: float
    protocol: int
    parts: dict[int, bytes] = field(default_factory=dict)  # offset -> bytes
    total: int | None = None  # known once the last fragment (no M flag) arrived
    flow: tuple[int, int] | None = None  # (flow index, direction) of the first fragment


def parse_fragment(packet: bytes, ip_version: int) -> Fragment | None:
    """The fragment fields of an IP packet (`packet` starts at its IP header), None when the
    header is cut or it is no fragment."""
    if ip_version == 4:
        return _ipv4_fragment(packet)
    if ip_version == 6:
        return _ipv6_fragment(packet)
    return None


def _ipv4_fragment(packet: bytes) -> Fragment | None:
    if len(packet) < IPV4_MIN:
        return None
    first, total, ident, flags, protocol = _IPV4.unpack_from(packet)
    ihl = (first & 0x0F) * 4
    end = min(len(packet), total) if total else len(packet)
    if ihl < IPV4_MIN or end < ihl:
        return None
    return Fragment(ident, protocol, (flags & IPV4_OFFSET_MASK) * 8, bool(flags & IPV4_MF),
                    packet[ihl:end])


def _ipv6_fragment(packet: bytes) -> Fragment | None:
    """The first Fragment header in the extension chain (RFC 8200 §4.5)."""
    if len(packet) < IPV6_HEADER:
        return None
    length = int.from_bytes(packet[4:6], "big")
    end = min(len(packet), IPV6_HEADER + length) if length else len(packet)
    next_header, pos = packet[6], IPV6_HEADER
    while pos + 8 <= end:
        if next_header == IPV6_FRAGMENT:
            protocol, flags, ident = _IPV6_FRAGMENT.unpack_from(packet, pos)
            return Fragment(ident, protocol, flags & 0xFFF8, bool(flags & 1),
                            packet[pos + 8 : end])
        if next_header in IPV6_EXTENSIONS:
            step = (packet[pos + 1] + 1) * 8
        elif next_header == IPV6_AH:
            step = (packet[pos + 1] + 2) * 4
        else:
            return None
        next_header, pos = packet[pos], pos + step
    return None


class Defragmenter:
    """Collects fragments (in capture order) and returns each datagram once it is whole."""

    def __init__(self) -> None:
        self._pending: dict[Key, _Pending] = {}
        self.reassembled = 0
        self.dropped = 0  # datagrams given up: timed out, too many in progress, or too large

    def add(self, source: Key, fragment: Fragment, frame: int, ts: float,
            flow: tuple[int, int] | None) -> Datagram | None:
        """Add one fragment of the datagram from `source` (addresses); `flow` is the (flow
        index, direction) of a first fragment. Returns the datagram this fragment completed."""
        self._expire(ts)
        key = (*source, fragment.protocol, fragment.ident)
        pending = self._pending.get(key)
        if pending is None:
            if len(self._pending) >= MAX_PENDING:
                self._drop(next(iter(self._pending)))
            pending = self._pending[key] = _Pending(ts, fragment.protocol)
        if fragment.offset == 0 and flow is not None:
            pending.flow = flow
        pending.parts.setdefault(fragment.offset, fragment.data)
        if not fragment.more:
            pending.total = fragment.offset + len(fragment.data)
        too_big = max(fragment.offset + len(fragment.data), pending.total or 0) > MAX_DATAGRAM
        if too_big or len(pending.parts) > MAX_FRAGMENTS:
            self._drop(key)
            return None
        payload = _joined(pending)
        if payload is None:
            return None
        del self._pending[key]
        self.reassembled += 1
        if pending.flow is None:  # the first fragment carried no transport header we know
            return None
        return Datagram(*pending.flow, pending.protocol, frame, ts, payload)

    def finish(self) -> None:
        """The capture ended: whatever is still in progress will never be whole."""
        self.dropped += len(self._pending)
        self._pending.clear()

    def _expire(self, now: float) -> None:
        while self._pending:
            key, oldest = next(iter(self._pending.items()))
            if now - oldest.first_ts <= FRAGMENT_TIMEOUT_S:
                return
            self._drop(key)

    def _drop(self, key: Key) -> None:
        del self._pending[key]
        self.dropped += 1


def _joined(pending: _Pending) -> bytes | None:
    """The whole datagram when its fragments cover it from 0 to its end, else None."""
    if pending.total is None or sum(map(len, pending.parts.values())) < pending.total:
        return None
    out, covered = bytearray(pending.total), 0
    for offset in sorted(pending.parts):
        if offset > covered:
            return None
        data = pending.parts[offset]
        end = min(offset + len(data), pending.total)
        if end > covered:
            out[covered:end] = data[covered - offset : end - offset]
            covered = end
    return bytes(out) if covered >= pending.total else None
