"""The many-flows capture (bench/many_flows.py): what its doc says it writes, as dpkt, tshark
and confscope read it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import dpkt
import pytest

from analyzer.pipeline import Settings, analyze

ROOT = Path(__file__).resolve().parents[1]
FLOWS = 400


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("many") / "many.pcap"
    subprocess.run([sys.executable, "-m", "bench.many_flows", str(out), "--flows", str(FLOWS)],
                   cwd=ROOT, check=True, capture_output=True, timeout=60)
    return out


def _packets(path: Path) -> list[dpkt.ip.IP]:
    with path.open("rb") as f:
        return [dpkt.ethernet.Ethernet(frame).data for _, frame in dpkt.pcap.Reader(f)]


def test_each_kind_of_flow_is_there_with_valid_checksums(capture: Path) -> None:
    packets = _packets(capture)
    kinds: Counter[str] = Counter()
    for ip in packets:
        segment = ip.data
        if isinstance(segment, dpkt.udp.UDP):
            kinds["dns" if 53 in (segment.sport, segment.dport) else "udp"] += 1
        else:
            kinds[("syn" if segment.flags == dpkt.tcp.TH_SYN else "tcp")] += 1
        written = (ip.sum, segment.sum)
        ip.sum = segment.sum = 0  # dpkt computes both again
        rebuilt = dpkt.ip.IP(bytes(ip))
        assert (rebuilt.sum, rebuilt.data.sum) == written
    assert kinds["dns"] == 2 * FLOWS // 4  # a query and its answer per lookup
    assert kinds["syn"] == FLOWS // 4 * 2  # each web connection's SYN and each probe
    assert kinds["tcp"] == FLOWS // 4 * 5
    assert FLOWS // 4 <= kinds["udp"] <= FLOWS // 4 * 2


def test_web_servers_are_the_addresses_dns_answered(capture: Path) -> None:
    answered, contacted = [], []
    for ip in _packets(capture):
        segment = ip.data
        if isinstance(segment, dpkt.udp.UDP) and segment.sport == 53:
            answered += [rr.ip for rr in dpkt.dns.DNS(segment.data).an]
        elif isinstance(segment, dpkt.tcp.TCP) and segment.dport == 443 and \
                segment.flags == dpkt.tcp.TH_SYN:
            contacted.append(ip.dst)
    assert contacted == answered[: len(contacted)] and len(contacted) == FLOWS // 4


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_and_confscope_see_one_conversation_per_flow(capture: Path) -> None:
    lines = subprocess.run(["tshark", "-r", str(capture), "-q", "-z", "conv,udp", "-z",
                            "conv,tcp"], capture_output=True, text=True, check=True,
                           timeout=60).stdout.splitlines()
    conversations = [line for line in lines if "<->" in line]
    flows = analyze([capture], Settings(jobs=1, hash_captures=False)).flows
    assert len(conversations) == len(flows) == FLOWS
    assert (flows["server_name"].str.endswith(".example")).sum() == FLOWS // 4
