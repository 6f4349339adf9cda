"""The timeline equals a plain pandas group-by, batch by batch or all at once: per second, or
for a long capture in the narrowest bins that keep it under its row limit."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer import timeline as timeline_module
from analyzer.flows import FlowAssignment
from analyzer.timeline import NS, Timeline


class _Columns:
    """The PacketColumns fields the timeline reads."""

    def __init__(self, ts_ns: np.ndarray, wirelen: np.ndarray,
                 later_fragment: np.ndarray | None = None) -> None:
        self.ts_ns, self.wirelen = ts_ns, wirelen
        self.later_fragment = (np.zeros(ts_ns.size, bool) if later_fragment is None
                               else later_fragment)


def _reference(flow: np.ndarray, ts_ns: np.ndarray, wire: np.ndarray,
               later: np.ndarray | None = None, width: int = 1) -> pd.DataFrame:
    """A later IP fragment is bytes of its flow, not a packet."""
    packets = 1 if later is None else (~later).astype(np.int64)
    frame = pd.DataFrame({"flow": flow, "second": ts_ns // NS // width * width,
                          "packets": packets, "bytes": wire})
    frame = frame[frame["flow"] >= 0]
    folded = frame.groupby(["flow", "second"], sort=True).sum().reset_index()
    return pd.DataFrame({
        "capture": "c.pcap", "flow_id": folded["flow"].astype(np.int64) + 1,
        "second": pd.to_datetime(folded["second"].astype(np.int64), unit="s", utc=True),
        "bin_seconds": np.full(len(folded), width, np.int64),
        "packets": folded["packets"].astype(np.int64), "bytes": folded["bytes"].astype(np.int64),
    })


@settings(max_examples=60, deadline=None)
@given(
    packets=st.integers(0, 400), flows=st.integers(1, 50_000), seconds=st.integers(1, 200_000),
    batches=st.integers(1, 5), seed=st.integers(0, 2**32 - 1),
    fragments=st.sampled_from([0.0, 0.1, 1.0]),
)
def test_timeline_equals_group_by(packets: int, flows: int, seconds: int, batches: int,
                                  seed: int, fragments: float) -> None:
    rng = np.random.default_rng(seed)
    flow = rng.integers(-1, flows, packets).astype(np.int64)
    ts_ns = np.sort(rng.integers(0, seconds * NS, packets)).astype(np.int64)
    wire = rng.integers(42, 1515, packets).astype(np.int64)
    later = rng.random(packets) < fragments
    timeline = Timeline()
    for part in np.array_split(np.arange(packets), batches):
        timeline.add(_Columns(ts_ns[part], wire[part], later[part]),  # type: ignore[arg-type]
                     FlowAssignment(flow[part], np.zeros(part.size, dtype=np.int8)))
    pd.testing.assert_frame_equal(timeline.table("c.pcap"),
                                  _reference(flow, ts_ns, wire, later))


@pytest.mark.parametrize("top_flow", [2**28 - 1, 2**40])
def test_far_apart_bins_of_far_apart_flows(top_flow: int) -> None:
    """A batch's (flow, bin) pairs as one int64 key while their grid fits in 2**62 cells,
    else as pairs: both as the group-by gives them (bins 2**62 ns apart: 146 years)."""
    flow = np.array([top_flow, 0, top_flow, 5, 0], np.int64)
    ts_ns = np.array([0, 0, 2**62, 2**62, 2**62 - NS], np.int64)
    wire = np.array([60, 70, 80, 90, 100], np.int64)
    timeline = Timeline()
    timeline.add(_Columns(ts_ns, wire),  # type: ignore[arg-type]
                 FlowAssignment(flow, np.zeros(flow.size, dtype=np.int8)))
    pd.testing.assert_frame_equal(timeline.table("c.pcap"), _reference(flow, ts_ns, wire))


def test_folding_keeps_the_sums(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timeline_module, "FOLD_ROWS", 10)
    rng = np.random.default_rng(7)
    flow = rng.integers(0, 30, 5000).astype(np.int64)
    ts_ns = np.sort(rng.integers(0, 100 * NS, 5000)).astype(np.int64)
    wire = rng.integers(42, 1515, 5000).astype(np.int64)
    timeline = Timeline()
    for part in np.array_split(np.arange(5000), 50):
        timeline.add(_Columns(ts_ns[part], wire[part]),  # type: ignore[arg-type]
                     FlowAssignment(flow[part], np.zeros(part.size, dtype=np.int8)))
    pd.testing.assert_frame_equal(timeline.table("c.pcap"), _reference(flow, ts_ns, wire))


@settings(max_examples=40, deadline=None)
@given(packets=st.integers(1, 3000), flows=st.integers(1, 40), hours=st.integers(1, 72),
       max_rows=st.integers(1, 400), batches=st.integers(1, 8), seed=st.integers(0, 2**32 - 1))
def test_long_captures_get_the_narrowest_bins_that_fit(packets: int, flows: int, hours: int,
                                                       max_rows: int, batches: int,
                                                       seed: int) -> None:
    """Whatever the batches and the folds along the way: the bins of the narrowest width that
    keeps the whole capture under max_rows rows (or the widest)."""
    rng = np.random.default_rng(seed)
    flow = rng.integers(0, flows, packets).astype(np.int64)
    ts_ns = np.sort(rng.integers(0, hours * 3600 * NS, packets)).astype(np.int64)
    wire = rng.integers(42, 1515, packets).astype(np.int64)
    fits = [w for w in timeline_module.WIDTHS
            if len(_reference(flow, ts_ns, wire, width=w)) <= max_rows]
    expected = _reference(flow, ts_ns, wire, width=fits[0] if fits else 86400)
    timeline = Timeline(max_rows=max_rows)
    for part in np.array_split(np.arange(packets), batches):
        timeline.add(_Columns(ts_ns[part], wire[part]),  # type: ignore[arg-type]
                     FlowAssignment(flow[part], np.zeros(part.size, dtype=np.int8)))
        if rng.random() < 0.5:
            timeline._fold()  # (as when FOLD_ROWS is passed)
    pd.testing.assert_frame_equal(timeline.table("c.pcap"), expected)


def test_each_width_divides_the_next() -> None:
    widths = timeline_module.WIDTHS
    assert all(b % a == 0 for a, b in itertools.pairwise(widths))
