"""TCP reassembly delivers a direction's bytes in order, once, up to its limit, whatever the
order, duplication and overlap of the segments that carry them."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.tcpstream import MAX_PENDING_SEGMENTS, SEQ_MOD, TcpReassembler


@st.composite
def segmented_streams(draw: st.DrawFn) -> tuple[bytes, int, list[tuple[int, bytes]], int]:
    """(stream, initial sequence number, segments as sent, limit)."""
    stream = draw(st.binary(min_size=1, max_size=400))
    cuts = sorted(draw(st.sets(st.integers(1, len(stream) - 1), max_size=30))
                  ) if len(stream) > 1 else []
    bounds = [0, *cuts, len(stream)]
    pieces = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    isn = draw(st.integers(0, SEQ_MOD - 1))  # (near the end too: sequence numbers wrap)
    segments = []
    for start, end in pieces:
        segments.append((start, end))
        if draw(st.booleans()):  # a retransmission, possibly overlapping what came before
            back = draw(st.integers(0, start))
            segments.append((start - back, end))
    order = draw(st.permutations(range(len(segments))))
    sent = [((isn + segments[i][0]) % SEQ_MOD, stream[segments[i][0]:segments[i][1]])
            for i in order]
    limit = draw(st.sampled_from([len(stream), len(stream) // 2 + 1, 10 * len(stream)]))
    return stream, isn, sent, limit


@settings(max_examples=400, deadline=None)
@given(segmented_streams(), st.booleans())
def test_bytes_come_out_in_order_once_up_to_the_limit(
        case: tuple[bytes, int, list[tuple[int, bytes]], int], syn_seen: bool) -> None:
    stream, isn, sent, limit = case
    reassembler = TcpReassembler(limit)
    if syn_seen:
        reassembler.syn((isn - 1) % SEQ_MOD)
    else:  # joined mid-connection: the first segment seen fixes where the stream starts
        first_seq = sent[0][0]
        stream = stream[(first_seq - isn) % SEQ_MOD:]
    delivered = b"".join(reassembler.feed(seq, data) for seq, data in sent)
    assert len(sent) <= MAX_PENDING_SEGMENTS  # (so no gap is ever skipped)
    assert delivered == stream[:limit]
    assert reassembler.gaps == 0
    assert reassembler.full == (len(stream) >= limit)


def test_a_lost_segment_is_skipped_once_too_many_wait() -> None:
    reassembler = TcpReassembler()
    reassembler.syn(999)
    assert reassembler.feed(1000, b"ab") == b"ab"
    # 1002..1003 is lost; the segments after it wait until there are too many of them
    waiting = [reassembler.feed(1004 + i, bytes([i])) for i in range(MAX_PENDING_SEGMENTS)]
    assert waiting == [b""] * MAX_PENDING_SEGMENTS
    assert reassembler.feed(1004 + MAX_PENDING_SEGMENTS, b"!") == \
        bytes(range(MAX_PENDING_SEGMENTS)) + b"!"
    assert reassembler.gaps == 1
