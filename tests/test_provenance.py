"""The capture hashes of summary.json: right digests, errors passed on, low priority, and
collected only once the tables are written."""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import threading
import time
from pathlib import Path

import pytest

from analyzer import provenance
from analyzer.pipeline import Settings, analyze
from analyzer.provenance import CaptureHashes, file_sha256
from analyzer.tables import write_outputs

SAMPLE = Path(__file__).resolve().parents[1] / "captures" / "sip_rtp.pcap"


def _write(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


@pytest.mark.parametrize("size", [0, 1, provenance.READ_BYTES - 1, provenance.READ_BYTES,
                                  3 * provenance.READ_BYTES + 17])
def test_file_sha256_matches_hashlib(tmp_path: Path, size: int) -> None:
    data = _write(tmp_path / "c.pcap", size)
    assert file_sha256(tmp_path / "c.pcap") == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("windows", [1, 2, 3])
@pytest.mark.parametrize("extra", [0, 1, 4095])
def test_mapped_windows_hash_the_whole_file_without_reading_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, windows: int, extra: int) -> None:
    window = mmap.ALLOCATIONGRANULARITY
    data = _write(tmp_path / "c.pcap", (windows - 1) * window + max(extra, 1))

    def no_reading(*_: object) -> None:
        raise AssertionError("a regular file is mapped, not read")

    monkeypatch.setattr(provenance, "_hash_read", no_reading)
    assert file_sha256(tmp_path / "c.pcap", window) == hashlib.sha256(data).hexdigest()


def test_what_cannot_be_mapped_is_read(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    data = os.urandom(3 * provenance.READ_BYTES + 5)
    writer = threading.Thread(target=fifo.write_bytes, args=(data,))
    writer.start()
    try:
        assert file_sha256(fifo) == hashlib.sha256(data).hexdigest()
    finally:
        writer.join()


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


def test_hashes_started_by_the_caller_are_collected_by_the_caller() -> None:
    """`analyze` does not wait for hashes it did not start (the CLI collects them while it
    writes the tables); one it starts itself it waits for."""
    expected = hashlib.sha256(SAMPLE.read_bytes()).hexdigest()
    hashes = CaptureHashes([SAMPLE])
    try:
        analysis = analyze([SAMPLE], Settings(jobs=1), hashes=hashes)
        captures = analysis.summary["captures"]
        assert isinstance(captures, list) and captures[0]["sha256"] is None
        analysis.collect_hashes(hashes)
        assert captures[0]["sha256"] == expected
    finally:
        hashes.close()
    own = analyze([SAMPLE], Settings(jobs=1)).summary["captures"]
    assert isinstance(own, list) and own[0]["sha256"] == expected
    unhashed = analyze([SAMPLE], Settings(jobs=1, hash_captures=False)).summary["captures"]
    assert isinstance(unhashed, list) and unhashed[0]["sha256"] == ""


def test_summary_hook_runs_once_the_tables_are_staged(tmp_path: Path) -> None:
    analysis = analyze([SAMPLE], Settings(jobs=1, hash_captures=False))
    staged: list[str] = []

    def hook() -> None:
        (staging,) = [p for p in tmp_path.iterdir() if p.name.startswith(".confscope-")]
        staged.extend(sorted(p.name for p in staging.iterdir()))
        analysis.summary["captures"][0]["sha256"] = "collected"  # type: ignore[index]

    write_outputs(analysis.tables, analysis.summary, tmp_path, analysis.findings, hook)
    assert staged == sorted(f"{name}.{kind}" for name in analysis.tables
                            for kind in ("csv", "parquet"))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["captures"][0]["sha256"] == "collected"


def test_a_hash_that_fails_leaves_no_outputs(tmp_path: Path) -> None:
    analysis = analyze([SAMPLE], Settings(jobs=1, hash_captures=False))

    def hook() -> None:
        raise OSError("capture.pcap: cannot hash (Input/output error)")

    with pytest.raises(OSError, match="cannot hash"):
        write_outputs(analysis.tables, analysis.summary, tmp_path, analysis.findings, hook)
    assert list(tmp_path.iterdir()) == []


def test_cli_reports_a_failed_hash_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The hash is collected after the tables are written: a failure there is still one line
    and exit status 2, and no output appears."""
    from analyzer import cli

    def failing(self: CaptureHashes, path: Path) -> str:
        raise OSError(f"{path}: cannot hash (Input/output error)")

    monkeypatch.setattr(CaptureHashes, "digest", failing)
    out = tmp_path / "out"
    assert cli.main(["analyze", str(SAMPLE), "-o", str(out), "--no-report", "-q"]) == 2
    error = capsys.readouterr().err
    assert error == f"confscope: error: {SAMPLE}: cannot hash (Input/output error)\n"
    assert not out.exists() or list(out.iterdir()) == []


def test_collector_is_back_on_after_the_imports(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI turns garbage collection off for its heavy imports (their objects live until
    exit); it must be on again, with the pipeline's threshold, for the analysis."""
    import argparse
    import gc

    from analyzer import cli

    seen: list[tuple[bool, int]] = []
    original = cli._settings

    def settings_spy(args: argparse.Namespace) -> Settings:
        seen.append((gc.isenabled(), gc.get_threshold()[0]))
        return original(args)

    monkeypatch.setattr(cli, "_settings", settings_spy)
    threshold = gc.get_threshold()
    try:
        out = tmp_path / "out"
        assert cli.main(["analyze", str(SAMPLE), "-o", str(out), "--no-report", "-q"]) == 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
    assert seen == [(True, cli.GC_YOUNG_THRESHOLD)]
    assert gc.isenabled()
