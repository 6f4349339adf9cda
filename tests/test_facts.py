"""Facts: a flow's names kept once per source, in the order first seen, however many; the SDP
announcement of an endpoint as of a frame."""

from __future__ import annotations

import random

from analyzer.facts import FEW_NAMES, CaptureFacts, FlowFacts, SdpMedia


def test_names_once_per_source_in_order_of_first_sight() -> None:
    rng = random.Random(2)
    facts, expected = FlowFacts(), {}
    for frame in range(1, 5_000):
        name = rng.choice(["", f"h{rng.randrange(800)}.zoom.us", "zoom.us"])
        source = rng.choice(["dns-query", "tls-sni"])
        facts.add_name(name, source, frame)
        if name:
            expected.setdefault((name, source), frame)
    assert len(expected) > 10 * FEW_NAMES
    assert list(facts.names) == [(n, s, f) for (n, s), f in expected.items()]


def test_a_few_names_stay_a_tuple() -> None:
    facts = FlowFacts()
    for i in range(FEW_NAMES):
        facts.add_name(f"n{i}", "dns", i)
        facts.add_name(f"n{i}", "dns", i + 100)
    assert isinstance(facts.names, tuple) and len(facts.names) == FEW_NAMES
    facts.add_name("one.more", "dns", 9)
    assert isinstance(facts.names, list) and facts.names[-1] == ("one.more", "dns", 9)


def _sdp(call: int, frame: int) -> SdpMedia:
    return SdpMedia(f"call{call}", "audio", "RTP/AVP", {0: 8000}, {0: "PCMU"}, (), "", "",
                    frame)


def test_sdp_before_is_the_last_announcement_at_or_before_a_frame() -> None:
    rng = random.Random(8)
    capture, endpoint, added = CaptureFacts(), ("10.0.0.2", 20000), []
    for call in range(3_000):  # one media port reused call after call, a few out of order
        frame = call * 10 + rng.choice([0, 0, 0, -25, 3])
        capture.add_sdp(endpoint, entry := _sdp(call, frame))
        added.append(entry)
    for frame in [-1, 0, 5, *rng.sample(range(30_000), 500), 40_000]:
        earlier = [e for e in added if e.frame <= frame]
        best = max((e.frame for e in earlier), default=None)
        expected = [e for e in earlier if e.frame == best][-1] if earlier else None
        assert capture.sdp_before(endpoint, frame) is expected, frame
    assert capture.sdp_before(("10.0.0.3", 1), 10**6) is None
