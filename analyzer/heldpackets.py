"""Packets of new RTP streams, held until each stream's clock-rate window is complete.

A new stream's clock rate is decided from its first packets (`analyzer.media`: at least
`min_packets` of them spanning `min_seconds`, or `max_packets`); its statistics start from its
first packet once the rate is known, so its packets wait here until then. A busy capture holds
thousands of streams at once (calls start all the time on a signalling server), each with a
few packets in every batch. So the held packets are kept in one part per batch, grouped by
stream, and each batch's streams are handled together, not one by one: on a capture of 14,583
streams, holding them stream by stream took 3.8 s of a 9 s run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analyzer.arrays import grown, new_rows, ragged_arange

PROBE_COLUMNS = ("frame", "payload_type", "arrival_s", "timestamp")  # kept per stream
MAX_PARTS = 16  # more, and they are merged into one


@dataclass(slots=True)
class Closing:
    """A stream whose window a batch's packets complete."""

    serial: int
    rows: np.ndarray  # its packets in the batch (indices into the batch's columns), in order
    closing_row: int  # the one that completed the window


@dataclass(slots=True)
class _Part:
    """One batch's held packets, grouped by stream (packet order within a stream)."""

    serial: np.ndarray  # int64, ascending
    columns: dict[str, np.ndarray]
    alive: int  # rows of streams still held


class HeldPackets:
    """The held packets of every stream not started yet; streams are numbered by `new_stream`.

    Per stream: how many packets are held, and the `PROBE_COLUMNS` of its first and last held
    packet (what the clock rate is decided from).
    """

    def __init__(self, min_packets: int, min_seconds: float, max_packets: int) -> None:
        self.min_packets, self.min_seconds, self.max_packets = min_packets, min_seconds, max_packets
        self.count = np.zeros(0, np.int64)  # by serial
        self.first: dict[str, np.ndarray] = {}  # column -> by serial
        self.last: dict[str, np.ndarray] = {}
        self._streams = 0
        self._parts: list[_Part] = []

    def new_stream(self) -> int:
        serial = self._streams
        self._streams += 1
        if serial >= self.count.size:
            capacity = max(2 * self.count.size, 1024)
            self.count = grown(self.count, capacity)
            for ends in (self.first, self.last):
                for name, values in ends.items():
                    ends[name] = grown(values, capacity)
        return serial

    def hold(self, serial: np.ndarray, columns: dict[str, np.ndarray]) -> list[Closing]:
        """Take a batch's packets of streams not started (`serial` of each, `columns` parallel,
        in packet order). The streams whose window these packets complete are returned, in
        the order of their first packet here, and their packets of this batch are not held;
        the others' are."""
        order = np.argsort(serial, kind="stable")
        starts = np.flatnonzero(new_rows(serial[order]))
        sizes = np.diff(starts, append=order.size)
        streams = serial[order][starts]
        at = self._closing_positions(streams, starts, sizes, columns["arrival_s"][order])
        done = np.flatnonzero(at >= 0)
        closings = [Closing(int(streams[g]), order[starts[g] : starts[g] + sizes[g]],
                            int(order[starts[g] + at[g]])) for g in done.tolist()]
        closings.sort(key=lambda c: int(c.rows[0]))
        waiting = np.flatnonzero(at < 0)
        if waiting.size:
            self._keep(streams[waiting], starts[waiting], sizes[waiting], order, columns)
        return closings

    def take(self, serials: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The held packets of these streams, which start now and are held no longer: for
        each packet, which of `serials` it belongs to (an index into it), and their columns;
        each stream's packets in the order they came."""
        owner, pieces = [], []
        for part in self._parts:
            low = np.searchsorted(part.serial, serials, "left")
            found = np.searchsorted(part.serial, serials, "right") - low
            if not found.any():
                continue
            rows = _ranges(low, found)
            owner.append(np.repeat(np.arange(serials.size), found))
            pieces.append({name: column[rows] for name, column in part.columns.items()})
            part.alive -= rows.size
        self.count[serials] = 0
        self._prune()
        if not pieces:
            return np.zeros(0, np.int64), {}
        return np.concatenate(owner), {name: np.concatenate([piece[name] for piece in pieces])
                                       for name in pieces[0]}

    # ------------------------------------------------------------------ internals

    def _closing_positions(self, streams: np.ndarray, starts: np.ndarray, sizes: np.ndarray,
                           arrival: np.ndarray) -> np.ndarray:
        """Per stream group: the position in the group of the packet that completes the
        window, else -1."""
        group = np.repeat(np.arange(starts.size), sizes)
        before = self.count[streams]
        count = before[group] + np.arange(arrival.size) - starts[group] + 1
        held_start = self.first["arrival_s"][streams] if self.first else arrival[starts]
        start = np.where(before > 0, held_start, arrival[starts])
        done = (count >= self.min_packets) & ((arrival - start[group] >= self.min_seconds)
                                              | (count >= self.max_packets))
        hit = np.flatnonzero(done)
        first_hit = hit[new_rows(group[hit])]
        at = np.full(starts.size, -1, np.int64)
        at[group[first_hit]] = first_hit - starts[group[first_hit]]
        return at

    def _keep(self, streams: np.ndarray, starts: np.ndarray, sizes: np.ndarray,
              order: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        rows = order[_ranges(starts, sizes)]  # grouped by stream, ascending serial
        if not self.first:
            for ends in (self.first, self.last):
                for name in PROBE_COLUMNS:
                    ends[name] = np.zeros(self.count.size, columns[name].dtype)
        new = self.count[streams] == 0
        for name in PROBE_COLUMNS:
            column = columns[name]
            self.first[name][streams[new]] = column[order[starts[new]]]
            self.last[name][streams] = column[order[starts + sizes - 1]]
        self.count[streams] += sizes
        self._parts.append(_Part(np.repeat(streams, sizes),
                                 {name: column[rows] for name, column in columns.items()},
                                 int(rows.size)))

    def _prune(self) -> None:
        """Drop the parts with nothing held. When the others hold more rows of started
        streams than of held ones, or are many, merge them into one of the held rows alone:
        memory stays within twice the packets held, and `take` looks in few parts."""
        self._parts = [part for part in self._parts if part.alive]
        rows = sum(part.serial.size for part in self._parts)
        alive = sum(part.alive for part in self._parts)
        if rows > 2 * alive or len(self._parts) > MAX_PARTS:
            self._parts = [self._merged()]

    def _merged(self) -> _Part:
        """One part of all the held rows, each stream's in the order they came."""
        serial = np.concatenate([part.serial for part in self._parts])
        live = np.flatnonzero(self.count[serial] > 0)
        live = live[np.argsort(serial[live], kind="stable")]
        columns = {name: np.concatenate([part.columns[name] for part in self._parts])[live]
                   for name in self._parts[0].columns}
        return _Part(serial[live], columns, int(live.size))


def _ranges(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """starts[i], starts[i] + 1, ..., starts[i] + sizes[i] - 1 for each i, back to back."""
    return np.repeat(starts, sizes) + ragged_arange(sizes)
