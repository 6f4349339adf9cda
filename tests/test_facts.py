"""Per-flow facts: names are kept once per source, in the order first seen, however many."""

from __future__ import annotations

import random

from analyzer.facts import FEW_NAMES, FlowFacts


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
