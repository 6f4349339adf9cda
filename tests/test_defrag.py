"""IP reassembly (analyzer/defrag.py): fragmented UDP datagrams are read whole, in the frame that
completes them, as Wireshark reads them. Captures are built with scapy's own fragmenters and the
frame numbers are compared with tshark's."""

from __future__ import annotations

import base64
import json
import random
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP, fragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, fragment6
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw
from scapy.utils import wrpcap

from analyzer.defrag import (
    FRAGMENT_TIMEOUT_S,
    MAX_FRAGMENTS,
    MAX_PENDING,
    Defragmenter,
    Fragment,
    parse_fragment,
)
from analyzer.pipeline import Settings, analyze

CALLER, PROXY, CALLEE_MEDIA = "192.0.2.10", "198.51.100.5", "203.0.113.7"
CALLER6, PROXY6 = "2001:db8::10", "2001:db8::5"
KEY = base64.b64encode(bytes(range(30))).decode()
START = 1_700_000_000.0
MACS = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}  # (scapy would look them up)


def invite(caller: str, notes: int = 40) -> bytes:
    """A SIP INVITE whose SDP (with the SDES key last) is far larger than one Ethernet frame."""
    family = "IP6" if ":" in caller else "IP4"
    body_lines = ["v=0", f"o=- 1 1 IN {family} {caller}", "s=call", f"c=IN {family} {caller}",
                  "t=0 0", "m=audio 40000 RTP/SAVP 0", "a=rtpmap:0 PCMU/8000",
                  *(f"a=x-note:{i:03d} {'n' * 60}" for i in range(notes)),
                  f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}"]
    body = ("\r\n".join(body_lines) + "\r\n").encode()
    head = ["INVITE sip:bob@example.test SIP/2.0",
            f"Via: SIP/2.0/UDP {caller}:5060;branch=z9hG4bK-frag",
            "From: <sip:alice@example.test>;tag=a1", "To: <sip:bob@example.test>",
            "Call-ID: fragmented-invite@example.test", "CSeq: 1 INVITE",
            "Content-Type: application/sdp", f"Content-Length: {len(body)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def answer() -> bytes:
    body = ("v=0\r\no=- 2 2 IN IP4 203.0.113.7\r\ns=call\r\nc=IN IP4 203.0.113.7\r\nt=0 0\r\n"
            "m=audio 50000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
            f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}\r\n").encode()
    head = ("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-frag\r\n"
            "From: <sip:alice@example.test>;tag=a1\r\nTo: <sip:bob@example.test>;tag=b2\r\n"
            "Call-ID: fragmented-invite@example.test\r\nCSeq: 1 INVITE\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    return head + body


def rtp(seq: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0x5EC0DE) + random.randbytes(170)


def timed(packets: list[Packet]) -> list[Packet]:
    for i, packet in enumerate(packets):
        packet.time = START + i * 0.02
    return packets


def udp(src: str, dst: str, sport: int, dport: int) -> Packet:
    return Ether(**MACS) / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport)


def noise(count: int) -> list[Packet]:
    """Unrelated small datagrams between the fragments."""
    return [udp("192.0.2.99", "198.51.100.99", 7000, 7001) / Raw(bytes(20)) for _ in range(count)]


def sip_call(order: list[int]) -> tuple[list[Packet], int]:
    """The fragmented INVITE (its fragments in `order`, noise between them), the answer, then
    SRTP both ways on the negotiated ports; and how many fragments there were."""
    datagram = IP(src=CALLER, dst=PROXY, id=0x4242) / UDP(sport=5060, dport=5060) / invite(CALLER)
    pieces = [Ether(**MACS) / piece for piece in fragment(datagram, fragsize=1000)]
    assert len(pieces) == len(order) >= 3
    packets: list[Packet] = []
    for index in order:
        packets += [pieces[index], *noise(2)]
    packets.append(udp(PROXY, CALLER, 5060, 5060) / answer())
    for seq in range(60):
        packets.append(udp(CALLER, CALLEE_MEDIA, 40000, 50000) / rtp(seq))
        packets.append(udp(CALLEE_MEDIA, CALLER, 50000, 40000) / rtp(seq))
    return timed(packets), len(pieces)


def tshark_frames(path: Path, display_filter: str) -> list[int]:
    out = subprocess.run(["tshark", "-r", str(path), "-Y", display_filter, "-T", "fields",
                          "-e", "frame.number"], capture_output=True, text=True, check=True)
    return [int(line) for line in out.stdout.split()]


@pytest.mark.parametrize("order", [[0, 1, 2, 3], [3, 0, 2, 1], [1, 3, 2, 0]])
@pytest.mark.parametrize("chunk_bytes", [4096, 64 << 20])
def test_fragmented_invite_is_read_whole(tmp_path: Path, order: list[int],
                                         chunk_bytes: int) -> None:
    packets, pieces = sip_call(order)
    path = tmp_path / "fragmented.pcap"
    wrpcap(str(path), packets)
    analysis = analyze([path], Settings(chunk_bytes=chunk_bytes, jobs=1, hash_captures=False))
    signalling = analysis.tables["signalling"]
    invite_row = signalling[signalling["message"] == "INVITE"].iloc[0]
    completing = 3 * (len(order) - 1) + 1  # the last fragment in capture order (each + 2 noise)
    assert int(invite_row["frame"]) == completing
    assert bool(invite_row["sdes_keys"]) and "audio/40000/RTP/SAVP" in invite_row["sdp_media"]
    sdes = [f for f in analysis.findings if f["kind"] == "sdes-keys-in-cleartext"]
    assert sdes and completing in sdes[0]["evidence"]["frames"]
    counts = analysis.summary["captures"][0]
    assert (counts["ip_fragments"], counts["ip_datagrams_reassembled"],
            counts["ip_datagrams_incomplete"]) == (pieces, 1, 0)
    if shutil.which("tshark"):
        assert tshark_frames(path, 'sip.Method == "INVITE"') == [completing]


def test_ipv6_fragments_are_reassembled(tmp_path: Path) -> None:
    datagram = (IPv6(src=CALLER6, dst=PROXY6) / IPv6ExtHdrFragment(id=0xABCDEF)
                / UDP(sport=5060, dport=5060) / invite(CALLER6))
    pieces = [Ether(**MACS) / piece for piece in fragment6(datagram, 900)]
    assert len(pieces) >= 3
    path = tmp_path / "fragmented6.pcap"
    wrpcap(str(path), timed([pieces[1], *noise(1), pieces[0], *pieces[2:]]))
    analysis = analyze([path], Settings(jobs=1, hash_captures=False))
    signalling = analysis.tables["signalling"]
    assert signalling["message"].tolist() == ["INVITE"]
    assert int(signalling["frame"].iloc[0]) == len(pieces) + 1
    assert bool(signalling["sdes_keys"].iloc[0])
    if shutil.which("tshark"):
        assert tshark_frames(path, 'sip.Method == "INVITE"') == [len(pieces) + 1]


def test_a_datagram_missing_a_fragment_is_reported_incomplete(tmp_path: Path) -> None:
    packets, _ = sip_call([0, 1, 2, 3])
    path = tmp_path / "lost.pcap"
    wrpcap(str(path), [p for i, p in enumerate(packets) if i != 3])  # the second fragment
    analysis = analyze([path], Settings(jobs=1, hash_captures=False))
    assert "INVITE" not in analysis.tables["signalling"]["message"].tolist()
    capture = analysis.summary["captures"][0]
    assert (capture["ip_datagrams_reassembled"], capture["ip_datagrams_incomplete"]) == (0, 1)


def test_summary_json_reports_the_reassembly(tmp_path: Path) -> None:
    packets, pieces = sip_call([2, 0, 1, 3])
    path = tmp_path / "call.pcap"
    wrpcap(str(path), packets)
    out = tmp_path / "out"
    subprocess.run(["confscope", "analyze", str(path), "-o", str(out), "--no-report", "-q"],
                   check=True)
    capture = json.loads((out / "summary.json").read_text())["captures"][0]
    assert capture["ip_fragments"] == pieces and capture["ip_datagrams_reassembled"] == 1


# ---------------------------------------------------------------- the reassembler alone

SOURCE = (4, 0, 1, 0, 2)


def piece(offset: int, data: bytes, more: bool, ident: int = 7) -> Fragment:
    return Fragment(ident, 17, offset, more, data)


def test_overlaps_and_repeats_keep_the_lower_offset_and_the_first_copy() -> None:
    defrag = Defragmenter()
    assert defrag.add(SOURCE, piece(0, b"AAAAAAAA", True), 1, 0.0, (0, 0)) is None
    assert defrag.add(SOURCE, piece(0, b"XXXXXXXX", True), 2, 0.0, (0, 0)) is None
    assert defrag.add(SOURCE, piece(16, b"CCCC", False), 3, 0.0, None) is None
    done = defrag.add(SOURCE, piece(8, b"BBBBBBBBDD", True), 4, 0.1, None)
    assert done is not None and done.payload == b"AAAAAAAABBBBBBBBDDCC"
    assert (done.frame, done.flow_index, done.direction) == (4, 0, 0)
    assert defrag.reassembled == 1 and defrag.dropped == 0


def test_datagrams_in_progress_stay_bounded() -> None:
    defrag = Defragmenter()
    for ident in range(MAX_PENDING + 10):
        defrag.add(SOURCE, piece(0, b"x" * 8, True, ident), ident, 0.0, (0, 0))
    assert len(defrag._pending) == MAX_PENDING and defrag.dropped == 10
    late = defrag.add(SOURCE, piece(8, b"y", False, MAX_PENDING + 9), 99, 0.5, None)
    assert late is not None and late.payload == b"x" * 8 + b"y"
    defrag.add(SOURCE, piece(0, b"z" * 8, True, 1 << 20), 100, FRAGMENT_TIMEOUT_S + 1, (0, 0))
    assert len(defrag._pending) == 1  # the rest timed out
    defrag.finish()
    assert defrag.dropped == MAX_PENDING + 10


def test_oversized_datagrams_are_dropped() -> None:
    defrag = Defragmenter()
    assert defrag.add(SOURCE, piece(65_528, b"x" * 16, False), 1, 0.0, None) is None
    assert defrag.dropped == 1 and not defrag._pending
    for n in range(MAX_FRAGMENTS + 1):  # tiny pieces, each rejoined at every arrival
        assert defrag.add(SOURCE, piece(8 * n, b"y" * 8, True), n, 0.0, None) is None
    assert defrag.dropped == 2 and not defrag._pending


def test_fragment_fields_from_real_headers() -> None:
    datagram = IP(src=CALLER, dst=PROXY, id=0x1234) / UDP(sport=1, dport=2) / Raw(bytes(3000))
    parsed = [parse_fragment(bytes(p), 4) for p in fragment(datagram, fragsize=1000)]
    assert [(f.ident, f.offset, f.more, f.protocol) for f in parsed if f] == [
        (0x1234, 0, True, 17), (0x1234, 1000, True, 17), (0x1234, 2000, True, 17),
        (0x1234, 3000, False, 17)]
    six = IPv6(src=CALLER6, dst=PROXY6) / IPv6ExtHdrFragment(id=99) / UDP() / Raw(bytes(3000))
    parsed6 = [parse_fragment(bytes(p), 6) for p in fragment6(six, 1200)]
    assert all(f is not None and f.ident == 99 and f.protocol == 17 for f in parsed6)
    assert [f.more for f in parsed6 if f] == [True] * (len(parsed6) - 1) + [False]
    assert parse_fragment(bytes(IP() / UDP())[:12], 4) is None
    assert parse_fragment(bytes(IPv6() / UDP()), 6) is None  # no Fragment header


@settings(max_examples=300, deadline=None)
@given(packet=st.binary(max_size=120), version=st.sampled_from([4, 6, 5]))
def test_fragment_parser_never_raises(packet: bytes, version: int) -> None:
    found = parse_fragment(packet, version)
    assert found is None or len(found.data) <= len(packet)


@settings(max_examples=200, deadline=None)
@given(pieces=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 24), st.booleans(),
                                 st.integers(0, 3)), max_size=40))
def test_whatever_arrives_each_datagram_comes_out_whole_or_not_at_all(
        pieces: list[tuple[int, int, bool, int]]) -> None:
    """Each datagram that comes out holds, at every offset, the bytes of a fragment with its
    identification that covered that offset; none is left beyond the bound."""
    defrag = Defragmenter()
    for frame, (slot, size, more, ident) in enumerate(pieces):
        data = bytes([frame % 251]) * size
        done = defrag.add(SOURCE, piece(8 * slot, data, more, ident), frame, 0.0, (0, 0))
        if done is not None:
            sent = [(8 * s, n, f) for f, (s, n, _, i) in enumerate(pieces[: frame + 1])
                    if i == ident]
            for offset, value in enumerate(done.payload):
                assert any(o <= offset < o + n and value == f % 251 for o, n, f in sent)
    assert len(defrag._pending) <= MAX_PENDING
