"""The per-second timeline equals a plain pandas group-by, batch by batch or all at once."""

from __future__ import annotations

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
               later: np.ndarray | None = None) -> pd.DataFrame:
    """A later IP fragment is bytes of its flow, not a packet."""
    packets = 1 if later is None else (~later).astype(np.int64)
    frame = pd.DataFrame({"flow": flow, "second": ts_ns // NS, "packets": packets,
                          "bytes": wire})
    frame = frame[frame["flow"] >= 0]
    folded = frame.groupby(["flow", "second"], sort=True).sum().reset_index()
    return pd.DataFrame({
        "capture": "c.pcap", "flow_id": folded["flow"].astype(np.int64) + 1,
        "second": pd.to_datetime(folded["second"].astype(np.int64), unit="s", utc=True),
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
