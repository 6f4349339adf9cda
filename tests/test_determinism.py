"""Results are identical whatever --jobs and chunk size (issue: performance)."""

from __future__ import annotations

import random
import shutil
import struct
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw
from scapy.utils import rdpcap, wrpcap

from analyzer.media import ECB_MAX_STREAMS, INFERRED
from analyzer.pipeline import Settings, analyze, analyze_capture
from bench.make_capture import Config, generate

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = [ROOT / "captures" / n for n in ("zoom_meeting.pcap", "webrtc_call.pcapng",
                                           "sip_sdes.pcap", "teams_turn.pcap")]


@pytest.fixture(scope="module")
def mixed_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 30,000-packet benchmark-style capture: hundreds of flows and streams interleaved."""
    path = tmp_path_factory.mktemp("bench") / "mixed.pcap"
    generate(Config(out=path, packets=30_000, size=None, seed=7, calls=60))
    return path


def tables_of(paths: list[Path], chunk_bytes: int, jobs: int) -> dict[str, pd.DataFrame]:
    settings = Settings(chunk_bytes=chunk_bytes, jobs=jobs, hash_captures=False)
    return analyze(paths, settings).tables


def assert_same(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=False, rtol=1e-9,
                                      obj=name)


@pytest.mark.parametrize("chunk_bytes", [4096, 65_536, 1 << 20])
def test_chunk_size_does_not_change_results(mixed_capture: Path, chunk_bytes: int) -> None:
    reference = tables_of([mixed_capture], 64 << 20, 1)
    assert len(reference["streams"]) > 50 and len(reference["flows"]) > 100
    assert_same(reference, tables_of([mixed_capture], chunk_bytes, 1))


def test_jobs_do_not_change_results(mixed_capture: Path) -> None:
    paths = [mixed_capture, *SAMPLES]
    assert_same(tables_of(paths, 1 << 20, 1), tables_of(paths, 1 << 20, 2))


def test_small_chunks_on_every_sample() -> None:
    assert_same(tables_of(SAMPLES, 64 << 20, 1), tables_of(SAMPLES, 4096, 2))


def test_read_ahead_thread_gives_the_same_tables(mixed_capture: Path) -> None:
    """--jobs 2 on one capture reads and decodes on a second thread (three rotating buffers)."""
    for chunk in (65_536, 1 << 20):
        assert_same(tables_of([mixed_capture], chunk, 1), tables_of([mixed_capture], chunk, 2))


@pytest.mark.parametrize(("workers", "chunk"), [(1, 65_536), (2, 1 << 20), (3, 4096)])
def test_media_workers_give_the_same_tables(mixed_capture: Path, workers: int,
                                            chunk: int) -> None:
    """One capture spread over processes (the media path split by flow) changes nothing."""
    settings = Settings(chunk_bytes=chunk, jobs=workers + 2, hash_captures=False)
    reference = analyze_capture(mixed_capture, Settings(jobs=1, hash_captures=False))
    spread = analyze_capture(mixed_capture, settings)
    assert reference.counts == spread.counts
    assert_same(reference.tables, spread.tables)


def test_media_workers_keep_the_first_streams_ecb_sample(mixed_capture: Path) -> None:
    """The ECB test samples the capture's first streams, whichever worker holds them."""
    one = analyze_capture(mixed_capture, Settings(jobs=1, hash_captures=False))
    three = analyze_capture(mixed_capture, Settings(jobs=1, hash_captures=False),
                            media_workers=3)
    sampled = one.tables["streams"]["ecb_verdict"].fillna("") != ""
    assert sampled.sum() == ECB_MAX_STREAMS
    assert_same(one.tables, three.tables)


@pytest.mark.parametrize("name", [n.name for n in SAMPLES])
def test_media_workers_on_samples(name: str) -> None:
    path = ROOT / "captures" / name
    one = analyze_capture(path, Settings(jobs=1, hash_captures=False))
    assert_same(one.tables, analyze_capture(path, Settings(jobs=1, hash_captures=False),
                                            media_workers=2).tables)


# ---------------------------------------------------------------- what a packet is read with

MACS = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}


def turn_flow_refreshed_midway(path: Path, refresh_after: int = 300, packets: int = 400) -> None:
    """RTP in TURN ChannelData on a port that does not say TURN; the flow's first STUN message
    (a Refresh) comes only after `refresh_after` packets, as when a capture starts mid-call."""
    rng = random.Random(5)
    frames = []
    for seq in range(packets):
        rtp = struct.pack("!BBHII", 0x80, 111, seq, seq * 960, 0xABCDEF01) + rng.randbytes(100)
        frames.append(struct.pack("!HH", 0x4000, len(rtp)) + rtp)
        if seq == refresh_after - 1:
            lifetime = struct.pack("!HHI", 0x000D, 4, 600)
            frames.append(struct.pack("!HHI", 0x0004, len(lifetime), 0x2112A442)
                          + rng.randbytes(12) + lifetime)
    wrpcap(str(path), [
        _timed(Ether(**MACS) / IP(src="192.0.2.10", dst="198.51.100.34")
               / UDP(sport=50004, dport=41000) / Raw(data), i)
        for i, data in enumerate(frames)])


def _timed(packet: Packet, index: int) -> Packet:
    packet.time = 1_700_000_000 + index * 0.02
    return packet


@pytest.mark.parametrize("chunk_bytes", [4096, 65_536, 64 << 20])
def test_a_packet_is_read_with_what_was_known_when_it_arrived(tmp_path: Path,
                                                              chunk_bytes: int) -> None:
    """Whatever the batch size (64 MiB holds the whole capture): the ChannelData before the
    flow's first STUN message is not read as TURN, the 100 after it are."""
    path = tmp_path / "turn.pcap"
    turn_flow_refreshed_midway(path)
    streams = tables_of([path], chunk_bytes, 1)["streams"]
    assert streams["packets"].tolist() == [100]
    if shutil.which("tshark"):  # Wireshark reads ChannelData from the same packet on
        out = subprocess.run(["tshark", "-r", str(path), "-Y", "stun.channel", "-T", "fields",
                              "-e", "frame.number"], capture_output=True, text=True, check=True)
        assert int(out.stdout.split()[0]) == int(streams["first_frame"].iloc[0]) == 302


def test_zoom_p2p_media_before_the_zoom_stun_is_read_alike_in_any_batches(
        tmp_path: Path) -> None:
    """The P2P client's Zoom STUN moved after its first 100 media packets: the capture-wide
    list of Zoom STUN clients grows mid-batch, and every batch size and worker count agrees."""
    packets = rdpcap(str(SAMPLES[0].parent / "zoom_p2p.pcap"))
    moved = [*packets[2:102], packets[0], packets[1], *packets[102:]]
    path = tmp_path / "zoom_p2p_late_stun.pcap"
    wrpcap(str(path), moved)
    reference = tables_of([path], 64 << 20, 1)
    assert 0 < reference["streams"]["packets"].sum() < tables_of(
        [SAMPLES[0].parent / "zoom_p2p.pcap"], 64 << 20, 1)["streams"]["packets"].sum()
    for chunk in (4096, 65_536):
        assert_same(reference, tables_of([path], chunk, 1))
    assert_same(reference, tables_of([path], 4096, 4))  # the read-ahead and 2 media workers


def test_the_first_syn_names_the_client_whatever_the_batches(tmp_path: Path) -> None:
    """A simultaneous open: both sides send a SYN (RFC 9293 §3.5). The first one names the
    client, whether the second is in the same batch or a later one."""
    a, b = ("192.0.2.20", 40123), ("198.51.100.30", 40456)

    def tcp(src: tuple[str, int], dst: tuple[str, int], flags: str) -> Packet:
        return (Ether(**MACS) / IP(src=src[0], dst=dst[0])
                / TCP(sport=src[1], dport=dst[1], flags=flags, seq=1000))

    noise = [Ether(**MACS) / IP(src="192.0.2.99", dst="198.51.100.99")
             / UDP(sport=7000, dport=7001) / Raw(bytes(200)) for _ in range(40)]
    packets = [tcp(a, b, "S"), *noise, tcp(b, a, "S"), tcp(a, b, "SA"), tcp(b, a, "SA")]
    path = tmp_path / "simultaneous_open.pcap"
    wrpcap(str(path), [_timed(p, i) for i, p in enumerate(packets)])
    one_batch = tables_of([path], 64 << 20, 1)
    row = one_batch["flows"].query("transport == 'tcp'").iloc[0]
    assert (row["client_ip"], int(row["client_port"])) == a
    assert_same(one_batch, tables_of([path], 4096, 1))


def test_a_clock_rate_is_inferred_from_the_same_packets_in_any_batches(tmp_path: Path) -> None:
    """Video with a dynamic payload type and no SDP, 20 packets a frame at 30 frames/s: its
    first 64 packets span only 0.1 s, too short to infer from, so the window runs on to 0.2 s
    whatever the batches (it used to end with the batch that held the 64th packet)."""
    rng = random.Random(9)
    packets = []
    for seq in range(600):
        frame_no, stamp = divmod(seq, 20)
        rtp = struct.pack("!BBHII", 0x80, 96 | (0x80 if stamp == 19 else 0), seq,
                          frame_no * 3000, 0x7E57DA7A) + rng.randbytes(900)
        packet = (Ether(**MACS) / IP(src="192.0.2.40", dst="198.51.100.41")
                  / UDP(sport=51000, dport=52000) / Raw(rtp))
        packet.time = 1_700_000_000 + frame_no / 30 + stamp * 0.0005
        packets.append(packet)
    path = tmp_path / "video.pcap"
    wrpcap(str(path), packets)
    reference = tables_of([path], 64 << 20, 1)
    stream = reference["streams"].iloc[0]
    assert (int(stream["clock_rate"]), stream["clock_rate_source"]) == (90000, INFERRED)
    for chunk in (4096, 65_536):
        assert_same(reference, tables_of([path], chunk, 1))
