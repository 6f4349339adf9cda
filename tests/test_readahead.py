"""The read-ahead thread keeps order, passes errors on, and stops when the consumer stops."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from analyzer.readahead import ReadAhead


def test_items_arrive_in_order() -> None:
    assert list(ReadAhead(lambda: iter(range(1000)))) == list(range(1000))


def test_producer_errors_reach_the_consumer_after_earlier_items() -> None:
    def produce() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("damaged")

    seen = []
    with pytest.raises(ValueError, match="damaged"):
        for item in ReadAhead(produce):
            seen.append(item)
    assert seen == [1, 2]


def test_stopping_early_ends_the_thread() -> None:
    produced = []

    def produce() -> Iterator[int]:
        for i in range(10**9):
            produced.append(i)
            yield i

    before = threading.active_count()
    for item in ReadAhead(produce):
        if item == 3:
            break
    assert threading.active_count() == before
    assert len(produced) < 10
