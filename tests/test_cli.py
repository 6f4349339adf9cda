"""The command line as a user meets it: bad input, outputs, atomic writing, hostile text."""

from __future__ import annotations

import gzip
import hashlib
import html
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from analyzer.tables import neutralize_formulas

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "analyzer.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


def rtp_packets(count: int = 50) -> list[Ether]:
    packets = []
    for seq in range(count):
        rtp = struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0x1234ABCD) + bytes(160)
        pkt = (Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
               / IP(src="192.0.2.10", dst="198.51.100.20") / UDP(sport=40000, dport=20000))
        pkt = pkt / rtp
        pkt.time = 1_700_000_000 + seq * 0.02
        packets.append(pkt)
    return packets


@pytest.fixture
def capture(tmp_path: Path) -> Path:
    path = tmp_path / "call.pcap"
    wrpcap(str(path), rtp_packets())
    return path


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("confscope: error:")
    for word in words:
        assert word in lines[0]


def test_missing_file(tmp_path: Path) -> None:
    assert_one_line_error(run("analyze", tmp_path / "nope.pcap", "-o", tmp_path / "out"),
                          "nope.pcap", "no such file")


def test_directory(tmp_path: Path) -> None:
    assert_one_line_error(run("analyze", tmp_path, "-o", tmp_path / "out"), "directory")


def test_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    assert_one_line_error(run("analyze", empty, "-o", tmp_path / "out"), "empty")


def test_not_a_capture(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a capture\n")
    assert_one_line_error(run("analyze", text, "-o", tmp_path / "out"), "not a pcap")


def test_garbage_after_header_is_reported_as_damage(tmp_path: Path, capture: Path) -> None:
    damaged = tmp_path / "damaged.pcap"
    damaged.write_bytes(capture.read_bytes() + struct.pack("<IIII", 0, 0, 0xFFFFFFF0, 60))
    result = run("analyze", damaged, "-o", tmp_path / "out", "-q")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    damage = summary["captures"][0]["damage"]
    assert damage["first_unreadable_frame"] == 51
    assert "captured bytes" in damage["reason"]
    assert summary["captures"][0]["packets"] == 50
    # the report says it in words, not as JSON
    report = (tmp_path / "out" / "report.html").read_text()
    words = (f"damaged at byte {damage['file_offset']:,}: {damage['reason']} "
             "(read up to frame 50)")
    assert html.escape(words, quote=False) in report or html.escape(words) in report
    assert '"first_unreadable_frame"' not in report


def test_truncated_capture_is_analyzed_up_to_the_damage(tmp_path: Path, capture: Path) -> None:
    cut = tmp_path / "cut.pcap.gz"
    cut.write_bytes(gzip.compress(capture.read_bytes()[:-100]))
    result = run("analyze", cut, "-o", tmp_path / "out", "-q")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["captures"][0]["compression"] == "gzip"
    assert summary["captures"][0]["packets"] == 49
    assert "ends inside a record" in summary["captures"][0]["damage"]["reason"]
    streams = pd.read_csv(tmp_path / "out" / "streams.csv")
    assert streams["packets"].tolist() == [49]


def test_outputs_and_summary(tmp_path: Path, capture: Path) -> None:
    out = tmp_path / "out"
    result = run("analyze", capture, "-o", out)
    assert result.returncode == 0, result.stderr
    assert "RTP streams" in result.stdout
    for table in ("flows", "streams", "servers", "signalling"):
        csv_frame = pd.read_csv(out / f"{table}.csv")
        parquet_frame = pd.read_parquet(out / f"{table}.parquet")
        assert list(csv_frame.columns) == list(parquet_frame.columns)
        assert len(csv_frame) == len(parquet_frame)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["format_version"] == 1
    assert summary["captures"][0]["sha256"] == hashlib.sha256(capture.read_bytes()).hexdigest()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging left


def test_the_summary_ends_with_where_the_results_are(tmp_path: Path, capture: Path) -> None:
    """It is printed last, after the report is written, and names the report only when this
    run wrote one (not an older report left in the folder)."""
    out = tmp_path / "out"
    result = run("analyze", capture, "-o", out, "--no-hash")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == f"report: {out / 'report.html'}"
    assert (out / "report.html").stat().st_size > 0
    result = run("analyze", capture, "-o", out, "--no-hash", "--no-report")
    assert result.returncode == 0, result.stderr
    assert (out / "report.html").exists()  # (the earlier run's)
    assert result.stdout.splitlines()[-1] == f"tables written to {out}/"


@pytest.mark.parametrize("kind", ["arp", "icmp"])
def test_a_capture_without_tcp_or_udp_gives_empty_tables(tmp_path: Path, kind: str) -> None:
    """No flow at all (a first batch of ARP or ICMP only) is a result, not a crash."""
    from scapy.layers.inet import ICMP
    from scapy.layers.l2 import ARP

    base = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    layer = ARP() if kind == "arp" else IP(src="192.0.2.10", dst="198.51.100.20") / ICMP()
    path = tmp_path / f"{kind}.pcap"
    wrpcap(str(path), [base / layer for _ in range(3)])
    out = tmp_path / "out"
    result = run("analyze", path, "-o", out)
    assert result.returncode == 0, result.stderr
    assert "3 packets, 0 flows, 0 RTP streams" in result.stdout
    assert pd.read_parquet(out / "flows.parquet").empty
    assert (out / "report.html").is_file()


def test_packets_of_a_link_type_not_decoded_are_reported(tmp_path: Path) -> None:
    """IEEE 802.11 (105) is not decoded: the run says so rather than finding no flows."""
    frame = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP() / UDP()
    records = b"".join(struct.pack("<IIII", 1_700_000_000 + i, 0, len(bytes(frame)),
                                   len(bytes(frame))) + bytes(frame) for i in range(4))
    path = tmp_path / "wifi.pcap"
    path.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 105) + records)
    out = tmp_path / "out"
    result = run("analyze", path, "-o", out)
    assert result.returncode == 0, result.stderr
    assert "not decoded: wifi.pcap: 4 packets" in " ".join(result.stdout.split())
    capture = json.loads((out / "summary.json").read_text())["captures"][0]
    assert (capture["link_types"], capture["packets_of_undecoded_link_types"]) == ([105], 4)
    assert "4 packets of a link type confscope does not decode" in (
        out / "report.html").read_text()


def run_fed(stdin: bytes | Path, *args: str | Path) -> subprocess.CompletedProcess[bytes]:
    """The command with `stdin` piped in (bytes) or redirected from a file (Path)."""
    command = [sys.executable, "-m", "analyzer.cli", *map(str, args)]
    if isinstance(stdin, Path):
        with stdin.open("rb") as handle:
            return subprocess.run(command, stdin=handle, capture_output=True, timeout=120)
    return subprocess.run(command, input=stdin, capture_output=True, timeout=120)


def tables_without_capture(out: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(out / f"{name}.parquet").drop(columns="capture")
            for name in ("flows", "streams", "signalling")}


@pytest.mark.parametrize("how", ["pipe", "redirect"])
def test_a_capture_on_standard_input(tmp_path: Path, capture: Path, how: str) -> None:
    """`-` reads standard input, piped or redirected: the tables of the file, and the
    SHA-256 and size of the bytes that came in."""
    assert run("analyze", capture, "-o", tmp_path / "file").returncode == 0
    fed = capture.read_bytes() if how == "pipe" else capture
    result = run_fed(fed, "analyze", "-", "-o", tmp_path / "stdin", "--jobs", "2")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "stdin" / "summary.json").read_text())["captures"][0]
    assert (summary["name"], summary["size_bytes"], summary["sha256"]) == (
        "stdin", capture.stat().st_size, hashlib.sha256(capture.read_bytes()).hexdigest())
    for name, table in tables_without_capture(tmp_path / "file").items():
        pd.testing.assert_frame_equal(tables_without_capture(tmp_path / "stdin")[name], table)


def test_standard_input_beside_files_in_worker_processes(tmp_path: Path, capture: Path) -> None:
    other = tmp_path / "other.pcap"
    wrpcap(str(other), rtp_packets(20))
    result = run_fed(capture.read_bytes(), "analyze", other, "-", "-o", tmp_path / "out",
                     "--jobs", "2", "--no-report")
    assert result.returncode == 0, result.stderr
    captures = json.loads((tmp_path / "out" / "summary.json").read_text())["captures"]
    assert [(c["name"], c["packets"], c["sha256"]) for c in captures] == [
        ("other.pcap", 20, hashlib.sha256(other.read_bytes()).hexdigest()),
        ("stdin", 50, hashlib.sha256(capture.read_bytes()).hexdigest())]


def test_a_named_pipe_is_read_once(tmp_path: Path, capture: Path) -> None:
    """A FIFO used to hang: the hashing process and the reader both opened it."""
    fifo = tmp_path / "live.pcap"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", f"cat '{capture}' > '{fifo}'"])
    result = run("analyze", fifo, "-o", tmp_path / "out", "--jobs", "4", "--no-report")
    writer.wait(timeout=60)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())["captures"][0]
    assert (summary["packets"], summary["sha256"]) == (
        50, hashlib.sha256(capture.read_bytes()).hexdigest())


def test_standard_input_errors(tmp_path: Path, capture: Path) -> None:
    gz = gzip.compress(capture.read_bytes())
    result = run_fed(gz, "analyze", "-", "-o", tmp_path / "out")
    assert_one_line_error(subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode()),
        "gzip data through a pipe", "zcat")
    assert_one_line_error(run("analyze", "-", "-", "-o", tmp_path / "out"), "only once")


def test_failed_run_keeps_earlier_outputs(tmp_path: Path, capture: Path) -> None:
    out = tmp_path / "out"
    assert run("analyze", capture, "-o", out, "-q").returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert run("analyze", tmp_path / "missing.pcap", "-o", out, "-q").returncode == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_output_path_that_is_a_file(tmp_path: Path, capture: Path) -> None:
    blocker = tmp_path / "out"
    blocker.write_text("x")
    assert_one_line_error(run("analyze", capture, "-o", blocker), "not a folder")


def test_csv_formulas_are_neutralized() -> None:
    frame = pd.DataFrame({"name": ["=cmd|' /C calc'!A0", "+1", "-2", "@SUM(A1)", "zoom.us"],
                          "count": [1, 2, 3, 4, 5]})
    cleaned = neutralize_formulas(frame)
    assert cleaned["name"].tolist() == ["'=cmd|' /C calc'!A0", "'+1", "'-2", "'@SUM(A1)",
                                        "zoom.us"]
    assert cleaned["count"].tolist() == [1, 2, 3, 4, 5]
    assert frame["name"].tolist()[:2] == ["=cmd|' /C calc'!A0", "+1"]  # the table is kept


def test_unreadable_file(tmp_path: Path, capture: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root can read anything")
    capture.chmod(0)
    assert_one_line_error(run("analyze", capture, "-o", tmp_path / "out"), "not readable")


def run_into_closed_pipe(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The command with stdout a pipe whose reader has already gone (as `| head` leaves it)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, "-m", "analyzer.cli", *map(str, args)],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)


def test_a_closed_stdout_ends_quietly_as_sigpipe_would(tmp_path: Path, capture: Path) -> None:
    """`confscope analyze ... | head`: the tables are written, no message, and the status a
    shell shows for a tool ended by SIGPIPE (not 1, which `check` uses for a broken claim)."""
    result = run_into_closed_pipe("analyze", capture, "-o", tmp_path / "out", "--no-report")
    assert (result.returncode, result.stderr) == (141, "")
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["counts"]["streams"] == 1


def test_check_keeps_its_verdict_status_when_stdout_is_closed() -> None:
    sample = Path(__file__).resolve().parents[1] / "captures" / "citizenlab_ecb.pcap"
    broken = run_into_closed_pipe("check", sample, "--allow-country", "US,CA")
    holds = run_into_closed_pipe("check", sample, "--allow-country", "US,CA,CN")
    assert (broken.returncode, broken.stderr) == (1, "")
    assert (holds.returncode, holds.stderr) == (0, "")


@pytest.mark.parametrize("was_on", [True, False])
def test_an_analysis_gives_the_cycle_collector_back_as_it_found_it(capture: Path,
                                                                   was_on: bool) -> None:
    """The steps after the batch loop pause the collector (`collector_paused`): a library
    caller gets it back on, or still off, also when a step fails."""
    import gc

    from analyzer.pipeline import analyze, collector_paused

    (gc.enable if was_on else gc.disable)()
    try:
        analysis = analyze([capture])
        assert gc.isenabled() is was_on
        with pytest.raises(ZeroDivisionError), collector_paused():
            assert not gc.isenabled()
            _ = 1 / 0
        assert gc.isenabled() is was_on
    finally:
        gc.enable()
    assert len(analysis.streams) == 1


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_captures_state_is_freed_when_its_analysis_ends(jobs: int) -> None:
    """No reference cycle keeps the pipeline's state (flows, slow path, media path) once its
    tables are made: only the cycle collector would free it, and the steps after (the other
    captures, geolocation, writing, the report) run with the collector paused. On a capture
    of 200,000 flows that was 300 MB held to the end."""
    import gc

    from analyzer.facts import FlowFacts
    from analyzer.flows import Flow, FlowTable
    from analyzer.inspector import Inspector
    from analyzer.media import MediaExtractor
    from analyzer.pipeline import Settings, analyze_capture
    from analyzer.sessions import SessionRecorder

    kinds = (Flow, FlowFacts, FlowTable, Inspector, MediaExtractor, SessionRecorder)
    gc.collect()
    gc.disable()
    try:
        for name in ("webrtc_call.pcapng", "zoom_meeting.pcap", "sip_rtp.pcap"):
            result = analyze_capture(ROOT / "captures" / name, Settings(jobs=jobs,
                                                                       hash_captures=False))
            assert len(result.tables["flows"]) > 0
            alive = [type(o).__name__ for o in gc.get_objects() if isinstance(o, kinds)]
            assert alive == [], name
    finally:
        gc.enable()


def test_the_batch_loop_makes_no_reference_cycles(tmp_path: Path) -> None:
    """The batch loop runs with the cycle collector paused (`collector_paused`), which is
    sound only while it makes no reference cycles per packet or per flow: the garbage only
    the collector can free stays a few dozen objects (functions and the like made once per
    run), whatever the capture's size or its malformed messages."""
    import gc

    from analyzer.pipeline import Settings, analyze_capture
    from bench.many_flows import write_capture

    small, big = tmp_path / "small.pcap", tmp_path / "big.pcap"
    write_capture(small, 200, seed=3)
    write_capture(big, 4000, seed=3)
    captures = [small, big, *(ROOT / "captures").glob("*.pcap*")]
    gc.collect()
    gc.disable()
    try:
        garbage = {}
        for capture in captures:
            analyze_capture(capture, Settings(jobs=1, hash_captures=False))
            garbage[capture.name] = gc.collect()
    finally:
        gc.enable()
    assert garbage["big.pcap"] == garbage["small.pcap"]  # (twenty times the flows)
    assert max(garbage.values()) < 100, garbage


def test_the_media_path_keeps_nothing_for_tcp_flows(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """What the slow path learns of a TCP flow (a TLS handshake) cannot change how the media
    path reads UDP: the media path is not told, and keeps no state for the flow."""
    from analyzer.media import MediaExtractor
    from analyzer.pipeline import Settings, analyze_capture
    from bench.many_flows import write_capture

    asked: list[int] = []
    original = MediaExtractor._flow

    def recording(self: MediaExtractor, index: int) -> object:
        asked.append(index)
        return original(self, index)

    monkeypatch.setattr(MediaExtractor, "_flow", recording)
    capture = tmp_path / "flows.pcap"
    write_capture(capture, 400, seed=5)
    flows = analyze_capture(capture, Settings(jobs=1, hash_captures=False)).tables["flows"]
    transport = dict(zip(flows["flow_id"] - 1, flows["transport"], strict=True))
    assert asked and "tcp" in transport.values()
    assert {transport[i] for i in asked} == {"udp"}
