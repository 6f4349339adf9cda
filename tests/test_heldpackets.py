"""HeldPackets against the obvious model: each stream's packets in a list of its own."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer import heldpackets
from analyzer.heldpackets import PROBE_COLUMNS, HeldPackets

MIN_PACKETS, MIN_SECONDS, MAX_PACKETS = 5, 0.2, 12


class Model:
    """Stream by stream, as `MediaExtractor` held packets before `HeldPackets`."""

    def __init__(self) -> None:
        self.held: dict[int, list[dict[str, object]]] = {}

    def hold(self, serial: list[int], rows: list[dict[str, object]]
             ) -> list[tuple[int, list[int], int]]:
        closings, waiting = [], {}
        for stream in dict.fromkeys(serial):  # in order of first packet
            mine = [i for i, s in enumerate(serial) if s == stream]
            held = self.held.get(stream, [])
            start = held[0]["arrival_s"] if held else rows[mine[0]]["arrival_s"]
            closing = next((i for n, i in enumerate(mine, len(held) + 1)
                            if n >= MIN_PACKETS and (rows[i]["arrival_s"] - start >= MIN_SECONDS
                                                     or n >= MAX_PACKETS)), None)
            if closing is None:
                waiting[stream] = [rows[i] for i in mine]
            else:
                closings.append((stream, mine, closing))
        for stream, kept in waiting.items():
            self.held.setdefault(stream, []).extend(kept)
        return closings

    def take(self, serials: list[int]) -> dict[int, list[dict[str, object]]]:
        return {s: self.held.pop(s, []) for s in serials}


def _batch(rng: np.random.Generator, streams: int, size: int, clock: float
           ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    serial = rng.integers(0, streams, size).astype(np.int64)
    arrival = clock + np.sort(rng.random(size)) * 0.15
    columns = {"frame": np.arange(size, dtype=np.int64) + int(clock * 1000),
               "payload_type": rng.integers(0, 128, size).astype(np.uint8),
               "arrival_s": arrival,
               "timestamp": rng.integers(0, 2**32, size).astype(np.uint32),
               "marker": rng.random(size) < 0.1}
    return serial, columns


def _rows(columns: dict[str, np.ndarray]) -> list[dict[str, object]]:
    size = len(columns["frame"])
    return [{name: column[i].item() for name, column in columns.items()} for i in range(size)]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), streams=st.integers(1, 40),
       batches=st.integers(1, 12), size=st.integers(0, 60))
def test_same_closings_ends_and_packets_as_stream_by_stream(seed: int, streams: int,
                                                            batches: int, size: int) -> None:
    rng = np.random.default_rng(seed)
    held, model = HeldPackets(MIN_PACKETS, MIN_SECONDS, MAX_PACKETS), Model()
    started: set[int] = set()
    for _ in range(streams):
        held.new_stream()
    for b in range(batches):
        serial, columns = _batch(rng, streams, size, clock=0.1 * b)
        keep = np.flatnonzero(~np.isin(serial, list(started)))  # started streams go elsewhere
        serial, columns = serial[keep], {n: c[keep] for n, c in columns.items()}
        rows = _rows(columns)
        expected = model.hold(serial.tolist(), rows)
        found = held.hold(serial, columns)
        assert [(c.serial, c.rows.tolist(), c.closing_row) for c in found] == expected
        # what the clock rate is decided from, read before the held packets are taken
        for stream, _, _ in expected:
            kept = model.held.get(stream, [])
            assert held.count[stream] == len(kept)
            for name in PROBE_COLUMNS if kept else ():
                assert held.first[name][stream].item() == kept[0][name]
                assert held.last[name][stream].item() == kept[-1][name]
        _check_taken(held, model, [c.serial for c in found])
        started.update(c.serial for c in found)
    for stream in range(streams):  # what is left, as at the end of a capture
        assert held.count[stream] == len(model.held.get(stream, []))
    _check_taken(held, model, sorted(model.held))


def _check_taken(held: HeldPackets, model: Model, serials: list[int]) -> None:
    owner, columns = held.take(np.array(serials, np.int64))
    expected = model.take(serials)
    for index, stream in enumerate(serials):
        mine = np.flatnonzero(owner == index)
        got = _rows({name: column[mine] for name, column in columns.items()}) if mine.size else []
        assert got == expected[stream]
    assert all(held.count[s] == 0 for s in serials)


def test_memory_is_that_of_the_packets_still_held() -> None:
    """Parts of started streams are dropped or compacted, whatever the number of batches: a
    stream that never completes its window keeps packets in every part."""
    rng = np.random.default_rng(7)
    held = HeldPackets(MIN_PACKETS, MIN_SECONDS, max_packets=10**9)
    lingering = held.new_stream()
    waiting: list[int] = []
    for b in range(300):
        waiting += [held.new_stream() for _ in range(20)]
        serial = np.array([lingering] + [s for s in waiting for _ in range(3)], np.int64)
        columns = _batch(rng, 1, serial.size, clock=0.1 * b)[1]
        columns["arrival_s"][serial == lingering] = 0.0  # (its window never spans 0.2 s)
        done = [c.serial for c in held.hold(serial, columns)]
        held.take(np.array(done, np.int64))
        waiting = [s for s in waiting if s not in set(done)]
        still = int(held.count.sum())
        assert sum(p.serial.size for p in held._parts) <= 2 * still + serial.size
        assert len(held._parts) <= heldpackets.MAX_PARTS


def test_a_window_spanning_exactly_the_minimum_closes() -> None:
    held = HeldPackets(MIN_PACKETS, MIN_SECONDS, MAX_PACKETS)
    stream = held.new_stream()
    arrival = np.array([0.0, 0.05, 0.1, 0.15, 0.2, 0.25])  # the fifth packet spans 0.2 s
    columns = _batch(np.random.default_rng(1), 1, arrival.size, 0.0)[1] | {"arrival_s": arrival}
    held.hold(np.full(2, stream, np.int64), {n: c[:2] for n, c in columns.items()})
    found = held.hold(np.full(4, stream, np.int64), {n: c[2:] for n, c in columns.items()})
    assert [(c.serial, c.rows.tolist(), c.closing_row) for c in found] == [(0, [0, 1, 2, 3], 2)]
