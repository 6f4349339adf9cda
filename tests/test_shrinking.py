"""A capture file that shrinks while it is analyzed (a rotated ring of capture files, a copy
made over it): the mapped reader must not die of SIGBUS, must drop what the file no longer has
and must report it as damage; the hashing child's death says what happened."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analyzer import speedups
from analyzer.capture.reader import CaptureReader
from analyzer.pipeline import Settings, analyze_capture
from analyzer.provenance import CaptureHashes
from tests.test_reader import Read, Record, big_capture

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "captures" / "zoom_meeting.pcap"
PAGE = os.sysconf("SC_PAGE_SIZE")
CHUNK = 16_384

needs_guard = pytest.mark.skipif(not speedups.HAVE_SPEEDUPS,
                                 reason="mappings are guarded by the C extension (else read)")

# A child process maps a file, maybe guards the mapping, truncates the file, then reads all of
# the mapping (or of a second, unguarded one) and prints what it read.
CHILD = r"""
import hashlib, mmap, os, sys
from analyzer import speedups
path, mode, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(path, "rb") as handle:
    mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
slot = speedups.guard_mapping(mapped) if mode in ("guard", "other") else None
target = mapped
if mode == "other":  # a second file, mapped but not guarded
    with open(path + ".other", "rb") as handle:
        target = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    os.truncate(path + ".other", size)
os.truncate(path, size)
digest = hashlib.sha256(target).hexdigest()
pages, first = speedups.guarded_faults(slot) if slot is not None else (-1, -1)
print(digest, pages, first)
"""


def _run_child(path: Path, mode: str, size: int, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *flags, "-c", CHILD, str(path), mode, str(size)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


@needs_guard
def test_guarded_mapping_reads_lost_pages_as_zeros(tmp_path: Path) -> None:
    data = bytes(range(256)) * (4 * PAGE // 256)
    path = tmp_path / "four-pages.bin"
    path.write_bytes(data)
    cut = PAGE + 904  # inside the second page: the rest of it reads as zeros without a fault
    done = _run_child(path, "guard", cut)
    assert done.returncode == 0, done.stderr
    expected = hashlib.sha256(data[:cut] + bytes(len(data) - cut)).hexdigest()
    # the third and fourth pages were replaced
    assert done.stdout.split() == [expected, "2", str(2 * PAGE)]


@needs_guard
@pytest.mark.parametrize("flags", [(), ("-X", "faulthandler")], ids=["default", "faulthandler"])
def test_faults_outside_guarded_mappings_still_end_the_process(tmp_path: Path,
                                                               flags: tuple[str, ...]) -> None:
    """Without a guard the read is fatal, as it was (so the first test can fail); a guard on
    another mapping hands the fault to the handler that was there before (the default action,
    or faulthandler's report)."""
    path = tmp_path / "file.bin"
    path.write_bytes(bytes(4 * PAGE))
    shutil.copy(path, str(path) + ".other")
    assert _run_child(path, "none", PAGE, *flags).returncode == -signal.SIGBUS
    done = _run_child(path, "other", PAGE, *flags)
    assert done.returncode == -signal.SIGBUS
    assert ("Bus error" in done.stderr) == bool(flags)


def _copy(tmp_path: Path, source: Path, name: str = "shrinking.pcap") -> Path:
    target = tmp_path / name
    shutil.copy(source, target)
    return target


def _records(batch_list: list[tuple[list[Record], list[int]]]) -> tuple[list[Record], list[int]]:
    records = [r for part, _ in batch_list for r in part]
    frames = [f for _, part in batch_list for f in part]
    return records, frames


def _batch_records(batch: object) -> tuple[list[Record], list[int]]:
    from analyzer.capture.batch import PacketBatch

    assert isinstance(batch, PacketBatch)
    return ([Record(batch.packet_bytes(i), int(batch.ts_ns[i]), int(batch.wirelen[i]),
                    int(batch.linktype[i])) for i in range(len(batch))],
            [int(f) for f in batch.frame])


def _read_at_rest(path: Path, size: int) -> Read:
    """The oracle: the same reader on a copy cut to `size` before reading."""
    cut = path.with_suffix(".cut.pcap")
    cut.write_bytes(path.read_bytes()[:size])
    reader = CaptureReader(cut, chunk_bytes=CHUNK)
    parts = [_batch_records(b) for b in reader.batches()]
    records, frames = _records(parts)
    return Read(records, frames, reader.info)


@needs_guard
def test_shrink_ahead_of_the_reader_gives_the_packets_before_it(tmp_path: Path) -> None:
    pcap, _, _ = big_capture(tmp_path)
    path = _copy(tmp_path, pcap)
    cut = path.stat().st_size * 3 // 5 + 7  # (inside a record)
    reader = CaptureReader(path, chunk_bytes=CHUNK)
    batches = reader.batches()
    parts = [_batch_records(next(batches))]
    os.truncate(path, cut)
    parts += [_batch_records(b) for b in batches]
    records, frames = _records(parts)
    oracle = _read_at_rest(path, cut)
    assert records == oracle.records and frames == oracle.frames
    damage, expected = reader.info.damage, oracle.info.damage
    assert damage is not None and expected is not None
    assert damage.frame == expected.frame == len(frames) + 1
    assert (damage.file_offset, damage.reason) == (
        cut, f"the file shrank to {cut:,} bytes while it was being read")
    assert reader.info.packets == len(frames) and reader.mapped_size == pcap.stat().st_size


@needs_guard
def test_damage_before_the_shrink_is_the_damage_reported(tmp_path: Path) -> None:
    """A record the walk cannot read stops it before the bytes the file lost: that record is
    the damage, as it is without the shrink."""
    pcap, _, _ = big_capture(tmp_path)
    data = bytearray(pcap.read_bytes())
    oracle_reader = CaptureReader(pcap, chunk_bytes=CHUNK)
    ends = np.concatenate([b.file_offset + b.data_offset + b.caplen
                           for b in oracle_reader.batches()])
    bad = int(ends[len(ends) * 2 // 5])  # a record header after 40 % of the records
    data[bad + 8 : bad + 12] = (0xFFFFFFF0).to_bytes(4, "little")  # its captured length
    path = tmp_path / "damaged.pcap"
    path.write_bytes(bytes(data))
    at_rest = CaptureReader(path, chunk_bytes=CHUNK)
    expected = [_batch_records(b) for b in at_rest.batches()]
    assert at_rest.info.damage is not None and "captured bytes" in at_rest.info.damage.reason
    reader = CaptureReader(path, chunk_bytes=CHUNK)
    batches = reader.batches()
    parts = [_batch_records(next(batches))]
    os.truncate(path, bad + 100)  # just past the bad record (its chunk), ahead of the reader
    parts += [_batch_records(b) for b in batches]
    assert parts == expected and reader.info.damage == at_rest.info.damage


@needs_guard
def test_shrink_behind_the_reader_reads_zeros_and_names_the_first_frame(tmp_path: Path) -> None:
    pcap, _, _ = big_capture(tmp_path)
    path = _copy(tmp_path, pcap)
    reader = CaptureReader(path, chunk_bytes=CHUNK)
    batches = reader.batches()
    held = [next(batches) for _ in range(3)]
    second = held[1]
    ends = second.file_offset + second.data_offset + second.caplen
    cut = int(ends[len(ends) // 2]) - 5  # inside a record of the second batch
    os.truncate(path, cut)
    lost = np.flatnonzero(ends > cut)
    first_lost = int(lost[0])
    start = int(second.data_offset[first_lost])
    kept = cut - second.file_offset - start  # bytes of that record the file still has
    packet = second.packet_bytes(first_lost)  # (no SIGBUS: what the file lost reads as zeros)
    assert packet[:kept] == pcap.read_bytes()[cut - kept:cut]
    assert packet[kept:] == bytes(len(packet) - kept) and len(packet) > kept
    assert [_batch_records(b) for b in batches] == []  # the next chunk's check stops there
    damage = reader.info.damage
    frame = int(second.frame[first_lost])
    assert damage is not None and (damage.frame, damage.file_offset) == (frame, cut)
    assert damage.reason == (f"the file shrank to {cut:,} bytes while it was being read; "
                             f"frames from {frame:,} on may have been read in part as zeros")
    assert reader.info.packets == int(held[-1].frame[-1])


@needs_guard
def test_pages_lost_without_a_shrink_are_damage_too(tmp_path: Path) -> None:
    """A file cut and grown again to its size (or a page whose read fails: the same SIGBUS)
    keeps its size: the pages that read as zeros tell."""
    pcap, _, _ = big_capture(tmp_path)
    path = _copy(tmp_path, pcap)
    size = path.stat().st_size
    reader = CaptureReader(path, chunk_bytes=CHUNK)
    batches = reader.batches()
    held = []
    for batch in batches:  # up to the batch after one with a record that spans pages
        held.append(batch)
        if len(held) >= 2 and held[-2].caplen.max() > 2 * PAGE:
            break
    second = held[-2]
    big = int(np.argmax(second.caplen))
    start = int(second.file_offset + second.data_offset[big])
    cut = start + 10
    os.truncate(path, cut)
    packet = second.packet_bytes(big)  # the pages past the cut fault and read as zeros
    os.truncate(path, size)  # grown again: the size says nothing
    assert packet[10:] == bytes(len(packet) - 10)
    assert [_batch_records(b) for b in batches] == []
    first = -(-cut // PAGE) * PAGE  # the first page that faulted
    ends = second.file_offset + second.data_offset + second.caplen
    frame = int(second.frame[int(np.argmax(ends > first))])
    damage = reader.info.damage
    assert damage is not None and (damage.frame, damage.file_offset) == (frame, first)
    assert damage.reason == (
        f"bytes from {first:,} on could not be read from the file (a read error, or it was cut "
        f"and grew again); frames from {frame:,} on may have been read in part as zeros")


@needs_guard
@pytest.mark.parametrize("change", ["shrink", "none", "grow"])
def test_check_after_the_analysis(tmp_path: Path, change: str) -> None:
    """A shrink after the last chunk was walked is found by `check_unchanged`; a file that did
    not change, or grew (a capture still being written), is no damage."""
    pcap, _, _ = big_capture(tmp_path)
    path = _copy(tmp_path, pcap)
    reader = CaptureReader(path, chunk_bytes=CHUNK)
    batches = list(reader.batches())
    last = batches[-1]
    cut = int(last.file_offset + last.data_offset[3] + 2)
    if change == "shrink":
        os.truncate(path, cut)
    elif change == "grow":
        with path.open("ab") as handle:
            handle.write(bytes(1000))
    assert reader.info.damage is None
    reader.check_unchanged()
    damage = reader.info.damage
    if change != "shrink":
        assert damage is None
        return
    frame = int(last.frame[3])
    assert damage is not None and (damage.frame, damage.file_offset) == (frame, cut)
    assert f"frames from {frame:,} on may have been read in part as zeros" in damage.reason


@needs_guard
def test_pipeline_on_a_shrinking_capture_reports_the_damage(tmp_path: Path) -> None:
    """The whole analysis of a capture cut while it is read (after the first batch): the
    tables are those of the same capture cut before reading, and the damage is reported."""
    path = _copy(tmp_path, SAMPLE)
    cut = path.stat().st_size // 2 + 3
    settings = Settings(chunk_bytes=CHUNK, jobs=1, hash_captures=False)

    def truncate_once(_: int) -> None:
        if path.stat().st_size > cut:
            os.truncate(path, cut)

    shrunk = analyze_capture(path, settings, truncate_once)
    at_rest = path.with_suffix(".cut.pcap")
    at_rest.write_bytes(SAMPLE.read_bytes()[:cut])
    oracle = analyze_capture(at_rest, settings)
    for name in ("flows", "streams", "servers", "timeline"):
        pd.testing.assert_frame_equal(shrunk.tables[name].drop(columns="capture"),
                                      oracle.tables[name].drop(columns="capture"))
    damage, expected = shrunk.info.damage, oracle.info.damage
    assert damage is not None and expected is not None and damage.frame == expected.frame
    assert damage.reason.startswith(f"the file shrank to {cut:,} bytes")
    assert shrunk.size == SAMPLE.stat().st_size  # the size analyzed, not the size left


@pytest.mark.skipif(not hasattr(signal, "SIGBUS"), reason="needs SIGBUS")
def test_hashing_child_killed_by_sigbus_says_the_file_lost_bytes(tmp_path: Path) -> None:
    fifo = tmp_path / "capture.pcap"
    os.mkfifo(fifo)  # the child blocks opening it until the signal comes
    later = tmp_path / "later.pcap"
    later.write_bytes(b"x")
    hashes = CaptureHashes([fifo, later])
    assert hashes._child is not None
    os.kill(hashes._child.pid, signal.SIGBUS)  # what reading a lost mapped page does to it
    with pytest.raises(OSError, match=r"capture\.pcap: cannot hash \(the file lost bytes while "
                                      r"it was being hashed: it shrank, or a read failed; "
                                      r"analyze a copy that nothing writes to\)"):
        hashes.digest(fifo)
    with pytest.raises(OSError, match=r"later\.pcap: cannot hash \(the hashing process stopped "
                                      r"early\)"):
        hashes.digest(later)


@needs_guard
def test_guards_end_with_their_mappings() -> None:
    """A process that reads many captures in turn (the tests, a loop over files) keeps mapping
    them: each guard's slot is given back when its mapping is freed (64 slots)."""
    for _ in range(80):
        reader = CaptureReader(SAMPLE, chunk_bytes=CHUNK)
        assert sum(len(b) for b in reader.batches()) > 0
        reader.check_unchanged()
        assert reader.mapped_size == SAMPLE.stat().st_size  # (0: it was read, not mapped)
