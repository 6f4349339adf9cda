"""In-order reassembly of the first bytes of one TCP direction (sans-IO).

Only what handshake and signalling parsers need: segments are delivered in sequence order,
retransmitted bytes are dropped, out-of-order segments wait (bounded), and delivery stops after
`limit` bytes.
"""

from __future__ import annotations

MAX_PENDING_SEGMENTS = 64
SEQ_MOD = 1 << 32


class TcpReassembler:
    # (a capture may hold one per TCP direction for hundreds of thousands of flows: slots, and
    # the dict of waiting segments made only when a segment comes out of order)
    __slots__ = ("_pending", "delivered", "gaps", "limit", "next_seq")

    def __init__(self, limit: int = 256 * 1024) -> None:
        self.limit = limit
        self.next_seq: int | None = None
        self.delivered = 0
        self.gaps = 0  # times a hole had to be skipped (lost segment)
        self._pending: dict[int, bytes] | None = None

    @property
    def full(self) -> bool:
        return self.delivered >= self.limit

    def syn(self, seq: int) -> None:
        """A SYN fixes the initial sequence number: data starts at seq + 1."""
        if self.next_seq is None:
            self.next_seq = (seq + 1) % SEQ_MOD

    def feed(self, seq: int, data: bytes) -> bytes:
        """Bytes that became contiguous thanks to this segment (possibly empty)."""
        if not data or self.full:
            return b""
        if self.next_seq is None:
            self.next_seq = seq  # joined mid-connection: start where we came in
        offset = (seq - self.next_seq) % SEQ_MOD
        if offset >= SEQ_MOD // 2:  # starts before next_seq: trim what we already have
            overlap = SEQ_MOD - offset
            if overlap >= len(data):
                return b""
            seq, data = self.next_seq, data[overlap:]
        if seq == self.next_seq and not self._pending:  # in order, nothing waiting
            self.next_seq = (seq + len(data)) % SEQ_MOD
            return self._delivered(data)
        pending = self._pending
        if pending is None:
            pending = self._pending = {}
        pending.setdefault(seq, data)
        if len(pending) > MAX_PENDING_SEGMENTS:
            self._skip_gap(pending)
        return self._drain(pending)

    def _drain(self, pending: dict[int, bytes]) -> bytes:
        out = []
        assert self.next_seq is not None
        while self.next_seq in pending:
            chunk = pending.pop(self.next_seq)
            out.append(chunk)
            self.next_seq = (self.next_seq + len(chunk)) % SEQ_MOD
        return self._delivered(b"".join(out))

    def _delivered(self, data: bytes) -> bytes:
        """What of `data` (next in sequence) is delivered: up to the limit."""
        data = data[: max(self.limit - self.delivered, 0)]
        self.delivered += len(data)
        return data

    def _skip_gap(self, pending: dict[int, bytes]) -> None:
        """Give up on a lost segment: continue from the earliest pending one."""
        assert self.next_seq is not None
        base = self.next_seq
        self.next_seq = min(pending, key=lambda s: (s - base) % SEQ_MOD)
        self.gaps += 1
