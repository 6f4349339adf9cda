"""What counts as RTP: a stream is media once it behaves like RTP (RFC 3550 A.1's probation:
two packets of one SSRC in sequence), or when framing (Zoom, TURN) or signalling (SDP) vouch for
its flow. Random datagrams, a quarter of which start like RTP version 2, are not calls.

Real pcaps built with scapy; payloads really encrypted with `cryptography` for the ECB test.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw
from scapy.utils import wrpcap

from analyzer.decode.demux import Demux, classify
from analyzer.media import ECB_MAX_STREAMS, PROBATION_STREAMS_PER_FLOW, MediaExtractor
from analyzer.pipeline import Analysis, Settings, analyze, analyze_capture
from dashboards.report import gaps_text

ROOT = Path(__file__).resolve().parents[1]
MACS = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
CLIENT = "192.0.2.10"
T0 = 1_700_000_000.0


def udp(src: tuple[str, int], dst: tuple[str, int], data: bytes, at: float) -> Packet:
    packet = Ether(**MACS) / IP(src=src[0], dst=dst[0]) / UDP(sport=src[1], dport=dst[1]) / Raw(
        data)
    packet.time = at
    return packet


def rtp(seq: int, ssrc: int, payload: bytes, pt: int = 0) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq & 0xFFFF, seq * 160, ssrc) + payload


def peer(index: int) -> tuple[str, int]:
    return (f"198.51.{100 + index // 250}.{1 + index % 250}", 20_000 + index)


def random_datagrams(rng: random.Random, flows: int, start: float = T0) -> list[Packet]:
    """UDP to peers carrying random bytes (as encrypted P2P protocols do), 1-3 per flow."""
    packets = []
    for i in range(flows):
        for k in range(rng.randint(1, 3)):
            packets.append(udp((CLIENT, 40_000 + i), peer(i), rng.randbytes(rng.randint(40, 400)),
                               start + i * 0.01 + k * 0.001))
    return packets


def run(tmp_path: Path, packets: list[Packet], chunk_bytes: int = 64 << 20,
        media_workers: int | None = None) -> Analysis:
    path = tmp_path / "capture.pcap"
    wrpcap(str(path), sorted(packets, key=lambda p: float(p.time)))
    settings = Settings(chunk_bytes=chunk_bytes, jobs=1, hash_captures=False)
    if media_workers is None:
        return analyze([path], settings)
    result = analyze_capture(path, settings, media_workers=media_workers)
    return Analysis(result.tables, {"captures": [result.counts]}, [])


def counts(analysis: Analysis) -> dict[str, object]:
    return analysis.summary["captures"][0]  # type: ignore[index,no-any-return]


def media_flows(flows: pd.DataFrame) -> pd.DataFrame:
    return flows[flows["protocols"].str.contains(r"\b(?:s?rtp|s?rtcp)\b", regex=True)]


# ---------------------------------------------------------------------- random bytes


def test_random_datagrams_are_not_calls(tmp_path: Path) -> None:
    rng = random.Random(1)
    packets = random_datagrams(rng, 400)
    like_rtp = {p[UDP].sport for p in packets if classify(bytes(p[Raw].load)[0]) == Demux.RTP}
    assert len(like_rtp) > 100  # a quarter of random first bytes are in RTP's range
    analysis = run(tmp_path, packets)
    assert analysis.streams.empty
    assert media_flows(analysis.flows).empty
    assert set(analysis.flows["encryption"]) == {"unknown"}
    assert "cleartext-media" not in {f["kind"] for f in analysis.findings}
    found = counts(analysis)
    # each such flow had a candidate RTP header (valid fields) or RTCP header, and no more
    assert 0.8 * len(like_rtp) < int(found["flows_with_unconfirmed_rtp"]) <= len(like_rtp)
    assert int(found["unconfirmed_rtp_packets"]) >= int(found["flows_with_unconfirmed_rtp"])
    assert f"{found['unconfirmed_rtp_packets']:,} packets that start like RTP" in gaps_text(
        found)


def test_the_terminal_says_what_was_not_counted(tmp_path: Path) -> None:
    path = tmp_path / "random.pcap"
    wrpcap(str(path), random_datagrams(random.Random(1), 100))
    result = subprocess.run([sys.executable, "-m", "analyzer.cli", "analyze", str(path), "-o",
                             str(tmp_path / "out"), "--no-report", "--no-hash"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, check=True,
                            env={**os.environ, "COLUMNS": "300"})
    assert "not counted as media: random.pcap:" in result.stdout
    assert "RTP streams" not in result.stdout.split("\n", 1)[1]  # no stream table


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_tshark_heuristic_calls_random_datagrams_rtp(tmp_path: Path) -> None:
    """Where confscope disagrees with the peer: tshark's rtp_udp heuristic lists one-packet
    "streams" on these flows (it makes no claim from them; confscope's tables would)."""
    path = tmp_path / "random.pcap"
    wrpcap(str(path), random_datagrams(random.Random(1), 400))
    out = subprocess.run(["tshark", "-q", "-r", str(path), "--enable-heuristic", "rtp_udp",
                          "-z", "rtp,streams"], capture_output=True, text=True, check=True).stdout
    listed = [line for line in out.splitlines() if "0x" in line]
    assert len(listed) > 50


def test_one_ssrc_without_sequence_is_not_rtp(tmp_path: Path) -> None:
    """A constant header with a fixed 'SSRC' but no sequence numbering: never in sequence."""
    rng = random.Random(2)
    sequence = [rng.randrange(0, 65536, 7) for _ in range(30)]  # steps are multiples of 7
    packets = [udp((CLIENT, 40_000), peer(0), rtp(s, 0x51515151, rng.randbytes(80)),
                   T0 + i * 0.02) for i, s in enumerate(sequence)]
    analysis = run(tmp_path, packets)
    assert analysis.streams.empty and media_flows(analysis.flows).empty
    assert counts(analysis)["unconfirmed_rtp_packets"] == 30


# ---------------------------------------------------------------------- real RTP


@pytest.mark.parametrize("chunk_bytes", [4096, 64 << 20])
def test_two_packets_in_sequence_make_a_stream(tmp_path: Path, chunk_bytes: int) -> None:
    """Probation holds across batches: with 4 KiB chunks the two packets are read apart."""
    rng = random.Random(3)
    noise = [udp(("192.0.2.99", 7000), ("198.51.100.250", 7001), bytes(1000), T0 + 0.001 * i)
             for i in range(1, 8)]
    call = [udp((CLIENT, 40_000), peer(0), rtp(1000, 0xCAFE0001, rng.randbytes(160)), T0),
            udp((CLIENT, 40_000), peer(0), rtp(1001, 0xCAFE0001, rng.randbytes(160)), T0 + 0.02)]
    analysis = run(tmp_path, noise + call, chunk_bytes)
    assert analysis.streams[["ssrc", "packets"]].values.tolist() == [["0xcafe0001", 2]]
    row = media_flows(analysis.flows)
    assert row["protocols"].tolist() == ["rtp"] and row["encryption"].tolist() == ["cleartext"]
    assert counts(analysis)["flows_with_unconfirmed_rtp"] == 0


def test_a_lone_packet_counts_beside_a_valid_stream(tmp_path: Path) -> None:
    """One flow, one valid stream and a one-packet SSRC (a retransmission stream, a probe):
    the flow's media is vouched for, so both are listed, as tshark lists them."""
    rng = random.Random(4)
    packets = [udp((CLIENT, 40_000), peer(0), rtp(seq, 0x0A0A0A0A, rng.randbytes(160)),
                   T0 + seq * 0.02) for seq in range(10)]
    packets.append(udp((CLIENT, 40_000), peer(0), rtp(7, 0x0B0B0B0B, rng.randbytes(160), 97),
                       T0 + 0.5))
    analysis = run(tmp_path, packets)
    assert sorted(analysis.streams["packets"]) == [1, 10]


def sip_invite(media_ip: str, media_port: int) -> bytes:
    body = (f"v=0\r\no=- 1 1 IN IP4 {media_ip}\r\ns=-\r\nc=IN IP4 {media_ip}\r\nt=0 0\r\n"
            f"m=audio {media_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n").encode()
    head = ("INVITE sip:bob@example.net SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {CLIENT}:5060;branch=z9hG4bK1\r\n"
            "From: <sip:alice@example.net>;tag=1\r\nTo: <sip:bob@example.net>\r\n"
            "Call-ID: probation@example.net\r\nCSeq: 1 INVITE\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def test_a_lone_packet_to_an_announced_port_counts(tmp_path: Path) -> None:
    rng = random.Random(5)
    packets = [udp((CLIENT, 5060), ("198.51.100.5", 5060), sip_invite(CLIENT, 40_000), T0),
               udp(peer(0), (CLIENT, 40_000), rtp(9, 0x0C0C0C0C, rng.randbytes(160)), T0 + 1),
               udp(peer(1), (CLIENT, 40_002), rtp(9, 0x0D0D0D0D, rng.randbytes(160)), T0 + 1)]
    analysis = run(tmp_path, packets)
    assert analysis.streams[["dst_port", "packets"]].values.tolist() == [[40_000, 1]]
    assert counts(analysis)["flows_with_unconfirmed_rtp"] == 1  # the unannounced port


def rtcp_receiver_report(ssrc: int) -> bytes:
    block = struct.pack("!IIIIII", 0x0A0A0A0A, 0, 1000, 0, 0, 0)
    return struct.pack("!BBHI", 0x81, 201, (8 + len(block)) // 4 - 1, ssrc) + block


def test_rtcp_alone_counts_when_it_is_exactly_rtcp(tmp_path: Path) -> None:
    """RTCP on its own port (no rtcp-mux): a datagram of well-formed RTCP packets is RTCP; a
    random one whose first bytes read as RTCP is not."""
    rng = random.Random(6)
    fake = bytes([0x81, 201]) + rng.randbytes(60)
    fake = fake[:2] + struct.pack("!H", 40) + fake[4:]  # its length runs past the datagram
    packets = [udp((CLIENT, 40_001), peer(0), rtcp_receiver_report(0x0B0B0B0B), T0),
               udp((CLIENT, 40_003), peer(1), fake, T0 + 0.1)]
    analysis = run(tmp_path, packets)
    assert media_flows(analysis.flows)["client_port"].tolist() == [40_001]
    assert counts(analysis)["unconfirmed_rtp_packets"] == 1


def stun_binding_request(rng: random.Random) -> bytes:
    return struct.pack("!HHI", 0x0001, 0, 0x2112A442) + rng.randbytes(12)


def test_rtcp_after_ice_checks_counts(tmp_path: Path) -> None:
    """SRTCP alone on a flow (its RTP elsewhere, or not captured): encrypted reports do not
    fill the datagram with well-formed RTCP, but the flow's STUN checks (ICE) vouch for it."""
    rng = random.Random(9)
    srtcp = rtcp_receiver_report(0x0B0B0B0B)[:8] + rng.randbytes(40)  # sealed after the header
    ice = [udp((CLIENT, 40_005), peer(2), stun_binding_request(rng), T0)]
    reports = [udp((CLIENT, 40_005), peer(2), srtcp, T0 + 1 + i) for i in range(3)]
    assert media_flows(run(tmp_path, reports).flows).empty
    assert media_flows(run(tmp_path, ice + reports).flows)["client_port"].tolist() == [40_005]


def test_bytes_that_fail_as_stun_do_not_turn_on_turn_framing(tmp_path: Path) -> None:
    """A random datagram starting with 0x01 is in STUN's range but is no STUN message; the next
    one reads as TURN ChannelData with RTP inside. Only a real STUN message (or a TURN port)
    makes the flow's ChannelData worth reading."""
    rng = random.Random(10)
    not_stun = bytes([0x01, 0x66, 0xFF, 0x1B]) + rng.randbytes(60)  # its length runs past
    inner = rtp(77, 0x0E0E0E0E, rng.randbytes(100))
    channel_data = struct.pack("!HH", 0x4001, len(inner)) + inner
    packets = [udp((CLIENT, 40_006), peer(3), not_stun, T0),
               udp((CLIENT, 40_006), peer(3), channel_data, T0 + 1)]
    analysis = run(tmp_path, packets)
    assert analysis.streams.empty and media_flows(analysis.flows).empty
    real_stun = udp((CLIENT, 40_006), peer(3), stun_binding_request(rng), T0 + 0.5)
    streams = run(tmp_path, [*packets, real_stun]).streams
    assert streams["encapsulation"].tolist() == ["turn-channel"]


def random_rtp_like(rng: random.Random, count: int, start: float) -> list[Packet]:
    """Random datagrams on one flow whose first byte is in RTP's range (a new SSRC each)."""
    return [udp((CLIENT, 40_007), peer(4), bytes([0x80 | rng.randrange(16)])
                + rng.randbytes(rng.randint(40, 300)), start + i * 0.001) for i in range(count)]


def test_a_flow_of_random_bytes_keeps_few_streams(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    made = []
    original = MediaExtractor._new_stream
    monkeypatch.setattr(MediaExtractor, "_new_stream",
                        lambda self, key, encap: made.append(key) or original(self, key, encap))
    rng = random.Random(11)
    analysis = run(tmp_path, random_rtp_like(rng, 3000, T0), chunk_bytes=65_536)
    assert 0 < len(made) <= PROBATION_STREAMS_PER_FLOW
    assert analysis.streams.empty
    assert counts(analysis)["unconfirmed_rtp_packets"] > 2500  # every one is counted


def test_rtp_after_random_bytes_on_one_flow_is_found_in_any_batches(tmp_path: Path) -> None:
    """Past the flow's streams on probation, an SSRC whose packet follows its last one in
    sequence is valid from that packet on."""
    rng = random.Random(12)
    noise = random_rtp_like(rng, 400, T0)
    call = [udp((CLIENT, 40_007), peer(4), rtp(seq, 0x5EED5EED, rng.randbytes(160)),
                T0 + 1 + seq * 0.02) for seq in range(100)]
    tables = [run(tmp_path, noise + call, chunk).streams for chunk in (4096, 65_536, 64 << 20)]
    tables.append(run(tmp_path, noise + call, 4096, media_workers=2).streams)
    for other in tables[1:]:
        pd.testing.assert_frame_equal(tables[0], other)
    streams = tables[0].set_index("ssrc")
    assert streams.loc["0x5eed5eed", ["packets", "first_frame"]].tolist() == [99, 402]
    # from its second packet (frame 402) on; the streams the flow kept on probation are
    # listed beside it, one packet each (a flow with valid RTP keeps its streams)
    others = streams.drop("0x5eed5eed")["packets"]
    assert len(others) == PROBATION_STREAMS_PER_FLOW and set(others) == {1}


def test_framed_rtp_on_a_crowded_flow_is_kept(tmp_path: Path) -> None:
    """A TURN flow past its streams on probation: RTP inside ChannelData is valid from its
    first packet, as anywhere else."""
    rng = random.Random(13)
    ice = udp((CLIENT, 40_007), peer(4), stun_binding_request(rng), T0 - 1)
    inner = rtp(500, 0xC4A77E15, rng.randbytes(100))
    relayed = udp((CLIENT, 40_007), peer(4), struct.pack("!HH", 0x4001, len(inner)) + inner,
                  T0 + 5)
    streams = run(tmp_path, [ice, *random_rtp_like(rng, 200, T0), relayed]).streams
    framed = streams[streams["encapsulation"] == "turn-channel"]
    assert framed[["ssrc", "packets"]].values.tolist() == [["0xc4a77e15", 1]]


# ---------------------------------------------------------------------- the ECB test's slots


def ecb_call(rng: random.Random, start: float) -> list[Packet]:
    """Plain RTP whose payloads are AES-128-ECB: comfort-noise frames repeat, so do their
    ciphertext blocks. The first packet is one of them."""
    cipher = Cipher(algorithms.AES(rng.randbytes(16)), modes.ECB())
    silence = rng.randbytes(48)
    packets = []
    for seq in range(120):
        frame = silence if seq % 3 == 0 else rng.randbytes(160)
        encryptor = cipher.encryptor()
        payload = encryptor.update(frame) + encryptor.finalize()
        packets.append(udp((CLIENT, 41_000), ("203.0.113.8", 8000),
                           rtp(5000 + seq, 0xEC0EC0EC, payload, 96), start + seq * 0.02))
    return packets


@pytest.mark.parametrize("media_workers", [None, 2])
def test_random_datagrams_take_no_ecb_slot(tmp_path: Path, media_workers: int | None) -> None:
    """Before this stream, more random flows than the ECB test has slots: the stream is still
    sampled (from its first packet) and its ECB found, in one process or spread over two."""
    rng = random.Random(7)
    noise = random_datagrams(rng, 12 * ECB_MAX_STREAMS)
    analysis = run(tmp_path, noise + ecb_call(rng, T0 + 60), media_workers=media_workers)
    (stream,) = analysis.streams.itertuples()
    assert stream.ecb_verdict == "ecb", stream
    assert str(stream.first_frame) in stream.ecb_examples.replace("/", " ").split()


def test_a_probation_packet_is_sampled_in_any_batches(tmp_path: Path) -> None:
    rng = random.Random(8)
    packets = ecb_call(rng, T0)
    tables = [run(tmp_path, packets, chunk).streams for chunk in (4096, 65_536, 64 << 20)]
    for other in tables[1:]:
        pd.testing.assert_frame_equal(tables[0], other)
    assert tables[0]["ecb_verdict"].tolist() == ["ecb"]
