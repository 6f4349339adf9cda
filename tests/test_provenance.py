"""The capture hashes of summary.json: right digests, errors passed on, low priority."""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from pathlib import Path

import pytest

from analyzer import provenance
from analyzer.provenance import CaptureHashes, file_sha256


def _write(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


@pytest.mark.parametrize("size", [0, 1, provenance.READ_BYTES - 1, provenance.READ_BYTES,
                                  3 * provenance.READ_BYTES + 17])
def test_file_sha256_matches_hashlib(tmp_path: Path, size: int) -> None:
    data = _write(tmp_path / "c.pcap", size)
    assert file_sha256(tmp_path / "c.pcap") == hashlib.sha256(data).hexdigest()


def test_hashes_of_several_captures_in_any_order(tmp_path: Path) -> None:
    paths = [tmp_path / f"c{i}.pcap" for i in range(3)]
    expected = {p: hashlib.sha256(_write(p, 1000 * (i + 1))).hexdigest()
                for i, p in enumerate(paths)}
    hashes = CaptureHashes(paths)
    for path in reversed(paths):
        assert hashes.digest(path) == expected[path]


def test_read_error_is_raised_by_digest(tmp_path: Path) -> None:
    hashes = CaptureHashes([tmp_path / "gone.pcap"])
    with pytest.raises(OSError):
        hashes.digest(tmp_path / "gone.pcap")


def test_unknown_path_is_refused_instead_of_waiting(tmp_path: Path) -> None:
    hashes = CaptureHashes([])
    with pytest.raises(KeyError):
        hashes.digest(tmp_path / "other.pcap")


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice is Linux-only")
def test_only_the_hashing_thread_is_lowered() -> None:
    seen: list[int] = []

    def probe() -> None:
        provenance._lower_this_thread()
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    before = os.getpriority(os.PRIO_PROCESS, 0)
    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    assert seen == [provenance.LOWEST_PRIORITY]
    assert os.getpriority(os.PRIO_PROCESS, 0) == before
