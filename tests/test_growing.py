"""A capture file that grows while it is analyzed (tcpdump -w still writing it): the SHA-256 and
the analysis cover the same bytes, the file's size when its hashing started."""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import pandas as pd
import pytest

from analyzer import provenance, speedups
from analyzer.pipeline import CaptureResult, Settings, analyze_capture
from analyzer.provenance import CaptureHashes, file_sha256

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "captures" / "sip_rtp.pcap"  # what the file holds when hashing starts
LATER = ROOT / "captures" / "zoom_meeting.pcap"  # records a writer appends meanwhile
PCAP_HEADER = 24


def _appended_records() -> bytes:
    return LATER.read_bytes()[PCAP_HEADER:]  # (same link type and byte order as SAMPLE)


def _analyzed_while_growing(path: Path, settings: Settings, more: bytes
                            ) -> tuple[CaptureResult, str | None]:
    """Analyze `path` with its hashing started before `more` bytes are appended to it (as the
    CLI starts it before its imports); the result and the SHA-256."""
    hashes = CaptureHashes([path]) if settings.hash_captures else None
    try:
        with path.open("ab") as out:
            out.write(more)
        result = analyze_capture(path, settings, hashes=hashes)
        return result, hashes.digest(path) if hashes is not None else result.sha256
    finally:
        if hashes is not None:
            hashes.close()


def _at_rest(original: bytes, folder: Path, name: str, settings: Settings) -> CaptureResult:
    """The same bytes analyzed from a file nothing writes to (same name: same capture column)."""
    folder.mkdir()
    (folder / name).write_bytes(original)
    return analyze_capture(folder / name, settings)


def _assert_same_tables(got: CaptureResult, expected: CaptureResult) -> None:
    assert got.tables.keys() == expected.tables.keys()
    for name, table in expected.tables.items():
        pd.testing.assert_frame_equal(got.tables[name], table, obj=name)


@pytest.mark.parametrize("path_kind", ["mapped", "read"])
def test_bytes_appended_after_hashing_started_are_neither_hashed_nor_analyzed(
        tmp_path: Path, path_kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if path_kind == "read":
        monkeypatch.setattr(speedups, "native", None)  # (without the C extension: read, not mapped)
    elif not speedups.HAVE_SPEEDUPS:
        pytest.skip("files are mapped with the C extension only")
    original = SAMPLE.read_bytes()
    growing = tmp_path / "live" / SAMPLE.name
    growing.parent.mkdir()
    growing.write_bytes(original)
    settings = Settings(jobs=2)
    result, digest = _analyzed_while_growing(growing, settings, _appended_records())
    assert growing.stat().st_size > len(original)
    assert digest == hashlib.sha256(original).hexdigest()
    assert result.size == len(original)
    expected = _at_rest(original, tmp_path / "rest", SAMPLE.name, Settings(jobs=2,
                                                                          hash_captures=False))
    assert result.info.packets == expected.info.packets and result.info.damage is None
    _assert_same_tables(result, expected)


def test_a_growing_gzip_file_is_decompressed_up_to_the_hashed_bytes(tmp_path: Path) -> None:
    """The decompressing child stops at the hashed size too: a second gzip member appended
    meanwhile (as `gzip -c >>` writes) is not read."""
    original = gzip.compress(SAMPLE.read_bytes())
    growing = tmp_path / "live" / (SAMPLE.name + ".gz")
    growing.parent.mkdir()
    growing.write_bytes(original)
    result, digest = _analyzed_while_growing(growing, Settings(jobs=2),
                                             gzip.compress(_appended_records()))
    assert digest == hashlib.sha256(original).hexdigest() and result.size == len(original)
    expected = _at_rest(original, tmp_path / "rest", growing.name, Settings(hash_captures=False))
    assert result.info.packets == expected.info.packets and result.info.damage is None
    _assert_same_tables(result, expected)


def test_without_hashing_the_whole_file_is_analyzed(tmp_path: Path) -> None:
    """--no-hash: no snapshot to keep to; the file is read as it is when the reader opens it."""
    growing = tmp_path / SAMPLE.name
    shutil.copyfile(SAMPLE, growing)
    result, digest = _analyzed_while_growing(growing, Settings(hash_captures=False),
                                             _appended_records())
    assert not digest and result.size == growing.stat().st_size
    counted = {p.name: analyze_capture(p, Settings(hash_captures=False)).info.packets
               for p in (SAMPLE, LATER)}
    assert result.info.packets == counted[SAMPLE.name] + counted[LATER.name]


@pytest.mark.parametrize("window", [4096, provenance.MAP_BYTES])
def test_hashing_keeps_to_the_snapshot_size(tmp_path: Path, window: int) -> None:
    data = bytes(range(256)) * 100
    path = tmp_path / "c.pcap"
    path.write_bytes(data)
    for size in (0, 1, 4096, 5000, len(data)):
        assert file_sha256(path, window, size) == hashlib.sha256(data[:size]).hexdigest()
    with pytest.raises(OSError, match="shrank from 25,601 to 25,600 bytes"):
        file_sha256(path, window, len(data) + 1)


def test_hashing_a_read_file_keeps_to_the_snapshot_size(tmp_path: Path) -> None:
    """The read path (a file the system does not map) stops at the size too, and says when
    the file has fewer bytes than that."""
    data = bytes(range(256)) * 5000
    path = tmp_path / "c.pcap"
    path.write_bytes(data)
    for size in (None, 0, 1, provenance.READ_BYTES, provenance.READ_BYTES + 7):
        digest = hashlib.sha256()
        with path.open("rb", buffering=0) as handle:
            provenance._hash_read(handle, digest, size)
        assert digest.hexdigest() == hashlib.sha256(data[:size]).hexdigest()
    with path.open("rb", buffering=0) as handle, pytest.raises(OSError, match="shrank below"):
        provenance._hash_read(handle, hashlib.sha256(), len(data) + 1)


def test_the_hashing_child_reports_a_file_shorter_than_its_snapshot(tmp_path: Path) -> None:
    """Cut below the snapshot before the child hashes it: a one-line error, no digest."""
    path = tmp_path / "c.pcap"
    path.write_bytes(SAMPLE.read_bytes())
    hashes = CaptureHashes([path])
    assert hashes.size(path) == SAMPLE.stat().st_size and hashes.size(tmp_path / "x") is None
    try:
        path.write_bytes(b"")  # (before or while the child hashes: either way it cannot)
        with pytest.raises(OSError, match=r"cannot hash .*(shrank|lost bytes)"):
            hashes.digest(path)
    finally:
        hashes.close()
