"""Media workers: a failing or vanished worker ends the analysis with one clear error."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from analyzer.errors import ConfscopeError
from analyzer.media import MediaExtractor
from analyzer.pipeline import Settings, analyze_capture

SAMPLE = Path(__file__).resolve().parents[1] / "captures" / "zoom_meeting.pcap"
ONE = Settings(jobs=1, hash_captures=False, chunk_bytes=4096)


def test_an_exception_in_a_worker_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: MediaExtractor, *_: object) -> None:
        raise ValueError("scan exploded")

    monkeypatch.setattr(MediaExtractor, "scan", broken)  # the forked workers inherit it
    with pytest.raises(ConfscopeError, match="a media worker failed: ValueError: scan exploded"):
        analyze_capture(SAMPLE, ONE, media_workers=2)
    assert multiprocessing.active_children() == []


def test_a_worker_that_dies_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    def dies(self: MediaExtractor, *_: object) -> None:
        os._exit(3)

    monkeypatch.setattr(MediaExtractor, "scan", dies)
    with pytest.raises(ConfscopeError, match=r"stopped unexpectedly \(exit code 3\)"):
        analyze_capture(SAMPLE, ONE, media_workers=1)
    assert multiprocessing.active_children() == []


def test_workers_end_with_the_analysis() -> None:
    result = analyze_capture(SAMPLE, ONE, media_workers=2)
    assert len(result.tables["streams"]) > 0
    assert multiprocessing.active_children() == []


def test_gzip_input_stays_in_one_process(tmp_path: Path) -> None:
    """A compressed capture cannot be mapped by the workers: the parent scans its media."""
    import gzip

    packed = tmp_path / "zoom.pcap.gz"
    packed.write_bytes(gzip.compress(SAMPLE.read_bytes()))
    plain = analyze_capture(SAMPLE, ONE)
    assert analyze_capture(packed, ONE, media_workers=2).tables["streams"].equals(
        plain.tables["streams"].assign(capture=packed.name))


def test_workers_are_stopped_at_once_when_the_parent_fails(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An error in the parent (here in the slow path) ends the workers, which were waiting for
    batches that will not come."""
    from analyzer.inspector import Inspector

    def broken(self: Inspector, *_: object) -> None:
        raise RuntimeError("slow path exploded")

    monkeypatch.setattr(Inspector, "process", broken)
    with pytest.raises(RuntimeError, match="slow path exploded"):
        analyze_capture(SAMPLE, ONE, media_workers=2)
    assert multiprocessing.active_children() == []
