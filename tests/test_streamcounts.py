"""StreamCounts against counting batch by batch into each stream's dictionary and sets."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer import streamcounts
from analyzer.decode import zoom
from analyzer.streamcounts import StreamCounts


@dataclass
class Stream:
    payload_types: dict[int, int] = field(default_factory=dict)
    zoom_kinds: set[str] = field(default_factory=set)
    zoom_layouts: set[str] = field(default_factory=set)


def _count_directly(streams: list[Stream], serial: np.ndarray, codes: np.ndarray,
                    payload_type: np.ndarray, zoom_rows: np.ndarray, kind: np.ndarray,
                    layout: np.ndarray) -> None:
    """What `MediaExtractor._describe` did before StreamCounts."""
    for code, pt in sorted(set(zip(codes.tolist(), payload_type.tolist(), strict=True))):
        types = streams[int(serial[code])].payload_types
        types[pt] = types.get(pt, 0) + int(np.count_nonzero((codes == code)
                                                            & (payload_type == pt)))
    for row, k, lay in zip(zoom_rows.tolist(), kind.tolist(), layout.tolist(), strict=True):
        stream = streams[int(serial[codes[row]])]
        if k >= 0:
            stream.zoom_kinds.add(zoom.MEDIA_KINDS[k])
        if lay:
            stream.zoom_layouts.add(str(zoom.LAYOUT_CODES[lay]))


@pytest.mark.parametrize("merge_rows", [3, streamcounts.MERGE_ROWS])
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), batches=st.integers(1, 8), size=st.integers(0, 80))
def test_same_counts_in_the_same_order_as_batch_by_batch(
        merge_rows: int, seed: int, batches: int, size: int) -> None:
    rng = np.random.default_rng(seed)
    streams = 12
    expected = [Stream() for _ in range(streams)]
    got = [Stream() for _ in range(streams)]
    counts = StreamCounts()
    saved, streamcounts.MERGE_ROWS = streamcounts.MERGE_ROWS, merge_rows
    try:
        for _ in range(batches):
            present = rng.permutation(streams)[: rng.integers(1, streams + 1)]
            codes = rng.integers(0, present.size, size)
            payload_type = rng.choice([0, 8, 96, 101, 111, 127], size).astype(np.uint8)
            zoom_rows = np.flatnonzero(rng.random(size) < 0.5)
            kind = rng.integers(-1, len(zoom.MEDIA_KINDS), zoom_rows.size).astype(np.int8)
            layout = rng.integers(0, len(zoom.LAYOUT_CODES), zoom_rows.size).astype(np.int8)
            _count_directly(expected, present, codes, payload_type, zoom_rows, kind, layout)
            counts.add(present.astype(np.int64), codes, payload_type, zoom_rows, kind, layout)
        counts.apply(got)
    finally:
        streamcounts.MERGE_ROWS = saved
    for mine, theirs in zip(got, expected, strict=True):
        assert list(mine.payload_types.items()) == list(theirs.payload_types.items())
        assert (mine.zoom_kinds, mine.zoom_layouts) == (theirs.zoom_kinds, theirs.zoom_layouts)
