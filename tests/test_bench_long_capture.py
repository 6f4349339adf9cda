"""The long capture (bench/long_capture.py): what its doc says it writes, as dpkt and tshark
read it, and what confscope's timeline makes of it."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import sys
from pathlib import Path

import dpkt
import pytest

from analyzer import timeline as timeline_module
from analyzer.pipeline import Settings, analyze

ROOT = Path(__file__).resolve().parents[1]
FLOWS, HOURS = 20, 0.5


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("long") / "long.pcap"
    subprocess.run([sys.executable, "-m", "bench.long_capture", str(out), "--flows", str(FLOWS),
                    "--hours", str(HOURS)], cwd=ROOT, check=True, capture_output=True,
                   timeout=60)
    return out


def test_one_small_packet_per_flow_per_second_with_valid_checksums(capture: Path) -> None:
    seen: dict[int, list[float]] = {}
    with capture.open("rb") as f:
        for ts, frame in dpkt.pcap.Reader(f):
            ip = dpkt.ethernet.Ethernet(frame).data
            udp = ip.data
            assert len(frame) == 60 and udp.data[:1] == b"\x70"
            ip_sum, udp_sum = ip.sum, udp.sum
            ip.sum = udp.sum = 0
            assert dpkt.ip.IP(bytes(ip)).sum == ip_sum  # (dpkt fills checksums in on packing)
            assert dpkt.ip.IP(bytes(ip)).data.sum == udp_sum
            seen.setdefault(udp.sport, []).append(ts)
    seconds = int(HOURS * 3600)
    assert sorted(seen) == list(range(40_000, 40_000 + FLOWS))
    assert all(len(times) == seconds for times in seen.values())
    assert all(b - a == pytest.approx(1.0) for times in seen.values()
               for a, b in itertools.pairwise(times))


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_tshark_reads_it_without_complaint(capture: Path) -> None:
    out = subprocess.run(["tshark", "-r", str(capture), "-o", "ip.check_checksum:TRUE",
                          "-o", "udp.check_checksum:TRUE", "-Y", "_ws.expert.severity >= warning",
                          "-T", "fields", "-e", "frame.number"],
                         capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == []


def test_its_timeline_widens_to_fit(capture: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """36,000 (flow, second) rows over a limit of 5,000: 10-second bins (2-second bins would
    be 18,000 rows; 10-second ones 3,600), every packet and byte kept."""
    monkeypatch.setattr(timeline_module, "MAX_ROWS", 5_000)
    monkeypatch.setattr(timeline_module, "FOLD_ROWS", 4_000)
    tables = analyze([capture], Settings(jobs=1, hash_captures=False,
                                         chunk_bytes=256 * 1024)).tables
    timeline = tables["timeline"]
    assert set(timeline["bin_seconds"]) == {10} and len(timeline) == FLOWS * 1800 // 10
    assert timeline["packets"].sum() == FLOWS * 1800 == tables["flows"]["packets_c2s"].sum()
    assert timeline["bytes"].sum() == 60 * FLOWS * 1800
