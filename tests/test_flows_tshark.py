"""confscope's `flows` table against tshark's `-z conv,udp -z conv,tcp` on the corpus: the same
conversations, with the same frame counts in each direction.

One difference is by design: a GTP-U or VXLAN tunnel is taken off and its inner flow kept, so
the tunnel endpoints' own conversation (UDP 2152 or 4789), which tshark lists besides the inner
one, is no flow of ours. Runs the real tshark; skips when it or the corpus is absent.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from analyzer.pipeline import Settings, analyze

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
TUNNEL_PORTS = {2152, 4789}
pytestmark = [
    pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is absent"),
    pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed"),
]
Side = tuple[str, int]
Direction = tuple[str, Side, Side]  # (transport, sender, receiver)
# "A:port <-> B:port  frames bytes unit  frames bytes unit ..." (B->A first, then A->B)
CONV_LINE = re.compile(r"^(\S+):(\d+)\s+<->\s+(\S+):(\d+)\s+(\d+)\s+[\d,]+\s+\w+\s+(\d+)\s")


def corpus_captures() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return sorted(p for p in CORPUS.rglob("*") if p.suffix in (".pcap", ".pcapng"))


def side(address: str, port: object) -> Side:
    return str(ipaddress.ip_address(address)), int(str(port))


def tshark_directions(path: Path) -> dict[Direction, int]:
    """Frames sent each way in the UDP and TCP conversations (tshark may list one address
    pair on several lines, e.g. once per SDP-set-up conversation: they are added up)."""
    out = subprocess.run(["tshark", "-q", "-r", str(path), "-z", "conv,udp", "-z", "conv,tcp"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    found: dict[Direction, int] = {}
    transport = ""
    for line in out.splitlines():
        if line.startswith(("UDP Conversations", "TCP Conversations")):
            transport = line[:3].lower()
        match = CONV_LINE.match(line)
        if match and transport:
            a_host, a_port, b_host, b_port, b_to_a, a_to_b = match.groups()
            a, b = side(a_host, a_port), side(b_host, b_port)
            for key, frames in (((transport, a, b), a_to_b), ((transport, b, a), b_to_a)):
                found[key] = found.get(key, 0) + int(frames)
    return {key: frames for key, frames in found.items() if frames}


def our_directions(path: Path) -> dict[Direction, int]:
    flows = analyze([path], Settings(hash_captures=False)).flows
    found: dict[Direction, int] = {}
    for row in flows.itertuples():
        client, server = side(row.client_ip, row.client_port), side(row.server_ip, row.server_port)
        for key, frames in (((str(row.transport), client, server), row.packets_c2s),
                            ((str(row.transport), server, client), row.packets_s2c)):
            found[key] = found.get(key, 0) + int(frames)
    return {key: frames for key, frames in found.items() if frames}


@pytest.mark.parametrize("path", corpus_captures(), ids=lambda p: p.name)
def test_flows_match_tshark_conversations(path: Path) -> None:
    theirs, ours = tshark_directions(path), our_directions(path)
    tunnels = {k for k in theirs.keys() - ours.keys()
               if k[0] == "udp" and k[1][1] in TUNNEL_PORTS and k[2][1] in TUNNEL_PORTS}
    assert ours.keys() == theirs.keys() - tunnels
    assert {k: (v, theirs[k]) for k, v in ours.items() if v != theirs[k]} == {}
