"""The capture hashes of summary.json: right digests, errors passed on, low priority."""

from __future__ import annotations

import hashlib
import os
import time
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
    paths = [tmp_path / f"c {i}\n.pcap" for i in range(3)]  # odd names travel safely
    expected = {p: hashlib.sha256(_write(p, 1000 * (i + 1))).hexdigest()
                for i, p in enumerate(paths)}
    hashes = CaptureHashes(paths)
    for path in reversed(paths):
        assert hashes.digest(path) == expected[path]


def test_read_error_is_raised_by_digest_and_others_still_hashed(tmp_path: Path) -> None:
    good = tmp_path / "good.pcap"
    data = _write(good, 100)
    hashes = CaptureHashes([tmp_path / "gone.pcap", good])
    with pytest.raises(OSError, match=r"gone\.pcap: cannot hash"):
        hashes.digest(tmp_path / "gone.pcap")
    assert hashes.digest(good) == hashlib.sha256(data).hexdigest()


def test_unknown_path_is_refused_instead_of_waiting(tmp_path: Path) -> None:
    hashes = CaptureHashes([])
    with pytest.raises(KeyError):
        hashes.digest(tmp_path / "other.pcap")


def _nice_of(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[16])  # field 19 of proc(5), counted after the command name


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_child_runs_at_the_lowest_priority(tmp_path: Path) -> None:
    fifo = tmp_path / "slow.pcap"
    os.mkfifo(fifo)  # the child blocks opening it, so it can be looked at meanwhile
    hashes = CaptureHashes([fifo])
    assert hashes._child is not None
    try:
        wanted = (min(_nice_of(os.getpid()) + provenance.LOWEST_PRIORITY, 19), os.SCHED_IDLE)
        pid = hashes._child.pid
        deadline = time.monotonic() + 10
        while (_nice_of(pid), os.sched_getscheduler(pid)) != wanted and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (_nice_of(pid), os.sched_getscheduler(pid)) == wanted
    finally:
        with open(fifo, "wb") as writer:
            writer.write(b"x")
    assert hashes.digest(fifo) == hashlib.sha256(b"x").hexdigest()


def test_close_stops_a_child_still_hashing(tmp_path: Path) -> None:
    fifo = tmp_path / "never.pcap"
    os.mkfifo(fifo)  # nobody writes: the child would wait forever
    hashes = CaptureHashes([fifo])
    assert hashes._child is not None
    hashes.close()
    assert hashes._child.poll() is not None
