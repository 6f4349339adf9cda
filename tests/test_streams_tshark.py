"""confscope's `streams` table against tshark's `-z rtp,streams` on real captures.

Same (src, dst, SSRC) keys; equal packet and lost counts; mean and max jitter within 5 % or
0.1 ms where tshark knows the clock rate. Runs the real tshark; skips when it is absent.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from analyzer.pipeline import analyze
from analyzer.rtpstats import parse_tshark_rtp_streams

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
pytestmark = [
    pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is absent"),
    pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed"),
]


def corpus_captures() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return sorted(p for p in CORPUS.rglob("*") if p.suffix in (".pcap", ".pcapng"))


def tshark_streams(path: Path) -> list[dict[str, object]]:
    out = subprocess.run(
        ["tshark", "-q", "-r", str(path), "--enable-heuristic", "rtp_udp", "-z", "rtp,streams"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    return parse_tshark_rtp_streams(out)


def key(src: str, sport: int, dst: str, dport: int, ssrc: int) -> tuple[str, int, str, int, int]:
    return (str(ipaddress.ip_address(src)), int(sport), str(ipaddress.ip_address(dst)),
            int(dport), int(ssrc))


def ours(path: Path) -> dict[tuple[str, int, str, int, int], pd.Series]:
    streams = analyze([path]).streams
    return {key(r.src_ip, r.src_port, r.dst_ip, r.dst_port, int(r.ssrc, 16)): r
            for _, r in streams.iterrows() if r.encapsulation == "rtp"}


def rtp_frames_tshark_calls_otherwise(path: Path, k: tuple[str, int, str, int, int]) -> int:
    """Frames of this stream's ports that tshark does not dissect as RTP although they start
    with an RTP header of this SSRC (e.g. after SDP told tshark the port now carries T.38)."""
    _, sport, _, dport, ssrc = k
    out = subprocess.run(
        ["tshark", "-r", str(path), "--enable-heuristic", "rtp_udp", "-Y",
         f"udp.srcport=={sport} && udp.dstport=={dport} && !rtp", "-T", "fields",
         "-e", "udp.payload"], capture_output=True, text=True, timeout=120, check=True,
    ).stdout.split()
    return sum(1 for hexed in out
               if len(hexed) >= 24 and int(hexed[:2], 16) >> 6 == 2
               and int(hexed[16:24], 16) == ssrc)


def close(a: float, b: float) -> bool:
    return abs(a - b) <= max(0.1, 0.05 * abs(b))


@pytest.mark.parametrize("path", corpus_captures(), ids=lambda p: p.name)
def test_streams_match_tshark(path: Path) -> None:
    theirs = {key(t["src"], t["src_port"], t["dst"], t["dst_port"], t["ssrc"]): t
              for t in tshark_streams(path)}
    mine = ours(path)
    assert set(mine) == set(theirs)
    for stream_key, t in theirs.items():
        m = mine[stream_key]
        hidden = 0
        if m.packets != t["packets"]:
            # tshark's SDP-driven dissection can hide RTP packets: count them from its own bytes
            hidden = rtp_frames_tshark_calls_otherwise(path, stream_key)
        assert (m.packets, m.lost) == (t["packets"] + hidden, t["lost"]), stream_key
        # tshark prints -1 when it does not know the clock rate
        if t["min_jitter_ms"] >= 0 and not hidden:
            assert close(m.jitter_mean_ms, t["mean_jitter_ms"]), (stream_key, m.jitter_mean_ms, t)
            assert close(m.jitter_max_ms, t["max_jitter_ms"]), (stream_key, m.jitter_max_ms, t)
