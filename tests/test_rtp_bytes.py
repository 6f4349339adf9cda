"""RTP bytes and bitrate count each packet as its headers declare it, as Wireshark does: the
bytes a snap length cut off and the bytes later IP fragments carry are counted too.

Captures are built with scapy (its own IPv4 and IPv6 fragmenters); the snap-length copies are
written record by record with a caplen below the wire length, as tcpdump -s writes them. The
expected byte counts come from the generated packets and, where tshark is installed, from
tshark's own `udp.length` of the frames it dissects as RTP.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from scapy.layers.inet import IP, UDP, fragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, fragment6
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from analyzer.pipeline import Settings, analyze

SRC, DST, SRC6, DST6 = "192.0.2.10", "203.0.113.7", "2001:db8::10", "2001:db8::7"
MACS = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
START = 1_700_000_000.0
SSRC, PT_H263, CLOCK = 0x5EED1234, 34, 90_000  # a static payload type: tshark knows its clock
RTP_HEADER = 12


def rtp(seq: int, payload: bytes) -> bytes:
    return struct.pack("!BBHII", 0x80, PT_H263, seq, seq * 3000, SSRC) + payload


def datagram(seq: int, payload: bytes, ipv6: bool) -> Packet:
    udp = UDP(sport=40000, dport=50000) / Raw(rtp(seq, payload))
    if ipv6:
        return IPv6(src=SRC6, dst=DST6) / udp
    return IP(src=SRC, dst=DST, id=seq + 1) / udp


def frames(datagram_: Packet, ipv6: bool) -> list[Packet]:
    """The datagram as it goes on an Ethernet with a 1,280-byte MTU."""
    if len(datagram_) <= 1280:
        return [Ether(**MACS) / datagram_]
    if ipv6:
        marked = datagram_.copy()
        marked.remove_payload()
        marked = marked / IPv6ExtHdrFragment(id=int(datagram_[UDP].sport)) / datagram_[UDP]
        return [Ether(**MACS) / piece for piece in fragment6(marked, 1280)]
    return [Ether(**MACS) / piece for piece in fragment(datagram_, fragsize=1200)]


def stream(seed: int, ipv6: bool, sizes: list[int] | None = None, count: int = 300
           ) -> tuple[list[tuple[float, bytes]], int]:
    """Timed frames of one video stream (some datagrams fragmented) and its RTP bytes."""
    rng = random.Random(seed)
    out: list[tuple[float, bytes]] = []
    rtp_bytes, clock = 0, START
    for seq in range(count):
        size = sizes[seq % len(sizes)] if sizes else rng.choice([160, 900, 1400, 3000, 5000])
        payload = os.urandom(size) if sizes is None else rng.randbytes(size)
        rtp_bytes += RTP_HEADER + size
        for piece in frames(datagram(seq, payload, ipv6), ipv6):
            out.append((clock, bytes(piece)))
            clock += 0.0002
        clock += 0.033
    return out, rtp_bytes


def write_pcap(path: Path, timed: list[tuple[float, bytes]], snaplen: int = 65535) -> None:
    """A classic pcap whose records keep at most `snaplen` bytes of each frame."""
    with path.open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, 1))
        for when, data in timed:
            seconds, micros = divmod(round(when * 1e6), 1_000_000)
            kept = data[:snaplen]
            out.write(struct.pack("<IIII", seconds, micros, len(kept), len(data)) + kept)


def our_stream(path: Path) -> pd.Series:
    streams = analyze([path], Settings(hash_captures=False)).streams
    assert len(streams) == 1
    return streams.iloc[0]


def counted_bytes(row: pd.Series) -> float:
    return float(row.bitrate_kbps) * 1000 * float(row.duration_s) / 8


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("snaplen", [65535, 200, 0], ids=["whole", "snap200", "rtp-header"])
def test_rtp_bytes_count_what_the_headers_declare(tmp_path: Path, ipv6: bool,
                                                  snaplen: int) -> None:
    """snaplen 0: the headers up to the RTP header's last byte (in IPv6, of a fragmented
    datagram, whose Fragment header takes 8 bytes more), and no more."""
    timed, rtp_bytes = stream(7, ipv6)
    path = tmp_path / "video.pcap"
    write_pcap(path, timed, snaplen or 14 + (40 + 8 if ipv6 else 20) + 8 + RTP_HEADER)
    row = our_stream(path)
    assert row.packets == 300
    assert counted_bytes(row) == pytest.approx(rtp_bytes, rel=1e-9)


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
@pytest.mark.parametrize("snaplen", [65535, 200], ids=["whole", "snap200"])
def test_rtp_bytes_equal_tsharks_udp_lengths(tmp_path: Path, snaplen: int) -> None:
    timed, _ = stream(11, ipv6=False)
    path = tmp_path / "video.pcap"
    write_pcap(path, timed, snaplen)
    out = subprocess.run(
        ["tshark", "-r", str(path), "--enable-heuristic", "rtp_udp", "-Y", "rtp",
         "-T", "fields", "-e", "udp.length"],
        capture_output=True, text=True, timeout=120, check=True).stdout.split()
    assert len(out) == 300
    assert counted_bytes(our_stream(path)) == pytest.approx(
        sum(int(length) - 8 for length in out), rel=1e-9)


def test_ecb_reads_payload_lengths_from_the_headers_under_a_snap_length(tmp_path: Path) -> None:
    """Under a snap length, the 16-byte alignment of payload lengths (ECB's supporting clue)
    is that of the declared lengths, not of the few bytes the capture kept."""
    timed, _ = stream(3, ipv6=False, sizes=[160, 320, 480], count=600)  # aligned, no repeats
    path = tmp_path / "aligned.pcap"
    write_pcap(path, timed, 14 + 20 + 8 + RTP_HEADER + 50)  # 50 payload bytes kept
    whole = tmp_path / "whole.pcap"
    write_pcap(whole, timed)
    cut_row, whole_row = our_stream(path), our_stream(whole)
    assert cut_row.ecb_verdict == whole_row.ecb_verdict == "no-repeats"
    assert cut_row.ecb_blocks_examined < whole_row.ecb_blocks_examined
    assert cut_row.ecb_confidence == whole_row.ecb_confidence == "medium"  # lengths aligned


def wire_bytes(timed: list[tuple[float, bytes]]) -> int:
    return sum(len(data) for _, data in timed)


def reversed_fragments(timed: list[tuple[float, bytes]]) -> list[tuple[float, bytes]]:
    """Each datagram's fragments sent last first (as old Linux did), times kept in order."""
    out: list[tuple[float, bytes]] = []
    group: list[tuple[float, bytes]] = []
    for when, data in [*timed, (0.0, b"")]:
        if group and (not data or when - group[-1][0] > 0.001):
            times = [t for t, _ in group]
            out += list(zip(times, [d for _, d in reversed(group)], strict=True))
            group = []
        group.append((when, data))
    return out


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_flow_bytes_and_timeline_count_every_fragment(tmp_path: Path, ipv6: bool) -> None:
    """Later fragments carry no ports: they are the flow's bytes (and timeline), not packets."""
    timed, _ = stream(5, ipv6)
    path = tmp_path / "fragments.pcap"
    write_pcap(path, timed)
    tables = analyze([path], Settings(hash_captures=False)).tables
    (flow,) = tables["flows"].itertuples()
    assert (flow.packets_c2s, flow.bytes_c2s, flow.bytes_s2c) == (300, wire_bytes(timed), 0)
    last_frame_us = round(timed[-1][0] * 1e6)  # (the capture's microseconds)
    assert flow.last_seen == pd.Timestamp(last_frame_us, unit="us", tz="UTC")
    timeline = tables["timeline"]
    assert (timeline["packets"].sum(), timeline["bytes"].sum()) == (300, wire_bytes(timed))


def test_fragments_before_their_first_count_in_the_flow_total(tmp_path: Path) -> None:
    """Reverse order: the later fragments arrive first; the flow's total still has them,
    whatever the batch size (the timeline only gets fragments that follow their first)."""
    timed, _ = stream(9, ipv6=False)
    reverse = reversed_fragments(timed)
    assert reverse != timed
    path = tmp_path / "reversed.pcap"
    write_pcap(path, reverse)
    runs = [analyze([path], Settings(hash_captures=False, chunk_bytes=size)).tables
            for size in (4096, 65536, 64 << 20)]
    for tables in runs:
        (flow,) = tables["flows"].itertuples()
        assert (flow.packets_c2s, flow.bytes_c2s) == (300, wire_bytes(timed))
        pd.testing.assert_frame_equal(tables["timeline"], runs[0]["timeline"])
    assert runs[0]["timeline"]["bytes"].sum() < wire_bytes(timed)


def test_media_workers_count_the_same_bytes(tmp_path: Path) -> None:
    """The bytes a frame lacks travel with each payload to the media worker processes."""
    timed, rtp_bytes = stream(13, ipv6=False)
    path = tmp_path / "cut.pcap"
    write_pcap(path, timed, 200)
    alone, workers = (analyze([path], Settings(hash_captures=False, jobs=jobs)).streams
                      for jobs in (1, 4))
    pd.testing.assert_frame_equal(alone, workers)
    assert counted_bytes(workers.iloc[0]) == pytest.approx(rtp_bytes, rel=1e-9)
