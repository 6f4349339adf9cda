"""How strong a flow's service attribution is (`service_basis`): a port number alone is said
to be a guess, in the flows table, the summary and the terminal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

from analyzer.pipeline import analyze

ROOT = Path(__file__).resolve().parents[1]
OPAQUE = bytes([0x70]) + bytes(range(40))  # no decoder takes it (not RTP, STUN, DTLS, ...)


def _datagrams(server: str, port: int, count: int = 3) -> list[Ether]:
    return [Ether() / IP(src="10.0.0.2", dst=server) / UDP(sport=50_000 + port % 1000,
                                                           dport=port) / Raw(OPAQUE)
            for _ in range(count)]


def _capture(tmp_path: Path) -> Path:
    """Opaque UDP to Zoom's and Teams' media ports, and to an unassigned port (documentation
    addresses: in no service's published range)."""
    packets = (_datagrams("198.51.100.9", 8801) + _datagrams("198.51.100.10", 3480)
               + _datagrams("198.51.100.11", 40_000))
    for i, packet in enumerate(packets):
        packet.time = 1_715_691_600 + i * 0.01
    path = tmp_path / "ports.pcap"
    wrpcap(str(path), packets)
    return path


def test_a_port_alone_is_a_guess_in_the_tables_and_the_summary(tmp_path: Path) -> None:
    analysis = analyze([_capture(tmp_path)])
    flows = analysis.flows.set_index("server_port")
    assert flows.loc[8801, ["service", "service_basis"]].tolist() == ["zoom", "port"]
    assert flows.loc[3480, ["service", "service_basis"]].tolist() == ["teams", "port"]
    assert flows.loc[40_000, ["service", "service_basis"]].tolist() == ["other", "none"]
    counts = analysis.summary["captures"][0]  # type: ignore[index]
    assert counts["flows_by_service"] == {"zoom": 1, "teams": 1, "other": 1}
    assert counts["flows_by_service_port_only"] == {"zoom": 1, "teams": 1}


def test_stronger_evidence_names_its_kind() -> None:
    """On the sample captures: a Zoom SNI is a name, Zoom's media framing a signature."""
    samples = sorted((ROOT / "captures").glob("zoom_*.pcap"))
    flows = analyze(samples).flows
    by_name = flows[flows["service_evidence"].str.contains("sni name", regex=False)]
    framed = flows[flows["service_evidence"].str.contains("Zoom media encapsulation",
                                                          regex=False)]
    assert len(by_name) and set(by_name["service_basis"]) == {"name"}
    assert len(framed) and set(framed["service_basis"]) == {"signature"}
    assert set(flows["service_basis"]) <= {"signature", "name", "address-range", "learned",
                                           "port", "protocols", "none"}


def test_the_terminal_counts_port_guesses(tmp_path: Path) -> None:
    capture = _capture(tmp_path)
    run = subprocess.run([sys.executable, "-m", "analyzer.cli", "analyze", str(capture), "-o",
                          str(tmp_path / "out"), "--no-report", "--no-hash"],
                         capture_output=True, text=True, cwd=ROOT, check=True,
                         env={"COLUMNS": "160", "PATH": "/usr/bin:/bin"})
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in run.stdout.splitlines() if line.startswith("│")}
    assert rows["zoom"][:2] == ["1", "1"] and rows["teams"][:2] == ["1", "1"]
    assert rows["other"][:2] == ["1", ""]
    assert "by port only: attributed by the port number alone" in run.stdout
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert written["captures"][0]["flows_by_service_port_only"] == {"zoom": 1, "teams": 1}
    table = pd.read_csv(tmp_path / "out" / "flows.csv")
    assert sorted(table["service_basis"]) == ["none", "port", "port"]


def test_the_report_marks_port_guesses(tmp_path: Path) -> None:
    from dashboards.report import build_report

    capture = _capture(tmp_path)
    subprocess.run([sys.executable, "-m", "analyzer.cli", "analyze", str(capture), "-o",
                    str(tmp_path / "out"), "--no-report", "--no-hash", "-q"],
                   cwd=ROOT, check=True, capture_output=True)
    page = build_report(tmp_path / "out").read_text()
    assert page.count(">port guess<") == 2  # zoom's and teams' flows
    assert 'title="UDP 8801-8810 (Zoom media ports)"' in page


def test_the_terminal_shows_the_column_only_when_a_service_is_guessed(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "analyzer.cli", "analyze",
                          str(ROOT / "captures" / "zoom_meeting.pcap"), "-o",
                          str(tmp_path / "out"), "--no-report", "--no-hash"],
                         capture_output=True, text=True, cwd=ROOT, check=True,
                         env={"COLUMNS": "160", "PATH": "/usr/bin:/bin"})
    assert "Flows by service" in run.stdout
    assert "by port only" not in run.stdout
