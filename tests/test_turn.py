"""analyzer.decode.turn: ChannelData, MS-TURN framing and the two TCP splitters."""

from __future__ import annotations

import collections
import itertools
import shutil
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.decode.stun import looks_like_stun, parse_stun, service_hint
from analyzer.decode.turn import (
    ChannelData,
    MsTurnFrame,
    Rfc4571Splitter,
    StunTcpSplitter,
    looks_like_channel_data,
    looks_like_ms_turn,
    parse_channel_data,
    parse_ms_turn,
)
from analyzer.errors import DecodeError

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
NDPI = CORPUS / "ndpi"
COOKIE = 0x2112A442


# --------------------------------------------------------------------------- builders


def stun(msg_type: int = 0x0001, body: bytes = b"", tid: bytes = bytes(12)) -> bytes:
    """RFC 8489 §5 header: type, length, magic cookie, 96-bit transaction id."""
    return struct.pack("!HHI12s", msg_type, len(body), COOKIE, tid) + body


def channel_data(channel: int, data: bytes, pad: bool) -> bytes:
    """RFC 8656 §12.4: channel(2) length(2) data, padded to 4 when `pad`."""
    return struct.pack("!HH", channel, len(data)) + data + b"\0" * ((-len(data) % 4) if pad else 0)


def ms_turn(session_id: bytes, data: bytes) -> bytes:
    """MS-TURN §2.2.3: 0xFF10, Length = bytes after the Length field, session id(8), data."""
    return struct.pack("!HH", 0xFF10, 8 + len(data)) + session_id + data


# --------------------------------------------------------------------------- ChannelData


@pytest.mark.parametrize("over_tcp", [False, True])
def test_channel_data_padded(over_tcp: bool) -> None:
    wire = channel_data(0x4000, b"abc", pad=True)
    assert wire == bytes.fromhex("40000003") + b"abc\0"
    assert looks_like_channel_data(wire, over_tcp)
    assert parse_channel_data(wire, over_tcp) == ChannelData(0x4000, b"abc")


def test_channel_data_unpadded_only_over_udp() -> None:
    wire = channel_data(0x7FFF, b"hello", pad=False)
    assert parse_channel_data(wire) == ChannelData(0x7FFF, b"hello")
    assert not looks_like_channel_data(wire, over_tcp=True)
    with pytest.raises(DecodeError, match="does not match"):
        parse_channel_data(wire, over_tcp=True)


@pytest.mark.parametrize(("wire", "reason"), [
    (b"\x40\x00\x00", "shorter"),
    (channel_data(0x3FFF, b"abcd", pad=True), "outside"),
    (channel_data(0x8000, b"abcd", pad=True), "outside"),
    (channel_data(0x4001, b"abcd", pad=True) + b"\0", "does not match"),
    (channel_data(0x4001, b"abcd", pad=True)[:-1], "does not match"),
    (channel_data(0x4001, b"abcde", pad=True) + b"\0\0\0\0", "does not match"),
])
def test_bad_channel_data(wire: bytes, reason: str) -> None:
    assert not looks_like_channel_data(wire)
    with pytest.raises(DecodeError, match=reason):
        parse_channel_data(wire)


def test_empty_channel_data() -> None:
    assert parse_channel_data(bytes.fromhex("40020000"), over_tcp=True) == ChannelData(0x4002, b"")


# --------------------------------------------------------------------------- MS-TURN


def test_ms_turn_frame_round_trip() -> None:
    inner = stun(0x0101)
    wire = ms_turn(bytes.fromhex("0102030405060708"), inner)
    assert wire[:4] == bytes.fromhex("ff10") + struct.pack("!H", 8 + len(inner))
    assert looks_like_ms_turn(wire)
    frame = parse_ms_turn(wire)
    assert frame == MsTurnFrame(bytes.fromhex("0102030405060708"), inner)
    assert looks_like_stun(frame.data)


@pytest.mark.parametrize(("wire", "reason"), [
    (bytes.fromhex("ff10000801020304050607"), "shorter"),
    (b"\xff\x11" + ms_turn(bytes(8), b"x")[2:], "channel id"),
    (ms_turn(bytes(8), b"xyz")[:-1], "does not match"),
    (ms_turn(bytes(8), b"xyz") + b"\0", "does not match"),
])
def test_bad_ms_turn(wire: bytes, reason: str) -> None:
    assert not looks_like_ms_turn(wire)
    with pytest.raises(DecodeError, match=reason):
        parse_ms_turn(wire)


# --------------------------------------------------------------------------- splitters (spec)


def rfc4571(*packets: bytes) -> bytes:
    return b"".join(struct.pack("!H", len(p)) + p for p in packets)


def test_rfc4571_several_frames_in_one_feed_and_a_split_one() -> None:
    first, second, third = stun(0x0001), stun(0x0101, b"\x80\x22\x00\x04test"), b""
    stream = rfc4571(first, second, third, first)
    splitter = Rfc4571Splitter()
    assert splitter.feed(stream[:30]) == [first]
    assert splitter.pending == 30 - 22
    assert splitter.feed(stream[30:]) == [second, third, first]
    assert splitter.pending == 0 and not splitter.overflowed


@pytest.mark.parametrize("splitter_type", [Rfc4571Splitter, StunTcpSplitter])
def test_byte_by_byte_feeding(splitter_type: type[Rfc4571Splitter | StunTcpSplitter]) -> None:
    messages = [stun(0x0003, b"\x00\x19\x00\x04\x11\x00\x00\x00"), stun(0x0001),
                stun(0x0113, b"\x00\x14\x00\x03abc\0")]
    is_4571 = splitter_type is Rfc4571Splitter
    stream = rfc4571(*messages) if is_4571 else b"".join(messages)
    splitter = splitter_type()
    out = [frame for i in range(len(stream)) for frame in splitter.feed(stream[i:i + 1])]
    assert out == messages and splitter.pending == 0


def test_stun_tcp_mixes_stun_and_padded_channel_data() -> None:
    channel = channel_data(0x4001, b"\x80\x00rtp", pad=True)
    stream = stun(0x0009) + channel + stun(0x0109)
    splitter = StunTcpSplitter()
    assert splitter.feed(stream) == [stun(0x0009), channel, stun(0x0109)]
    assert parse_channel_data(channel, over_tcp=True) == ChannelData(0x4001, b"\x80\x00rtp")


@pytest.mark.parametrize("first_byte", [0x80, 0xC0, 0xFF])  # top bits 10 or 11
def test_stun_tcp_desync_keeps_earlier_messages_then_stops(first_byte: int) -> None:
    splitter = StunTcpSplitter()
    assert splitter.feed(stun() + bytes([first_byte]) + bytes(40)) == [stun()]
    assert splitter.desynced and splitter.pending == 0
    assert splitter.feed(stun()) == []


@pytest.mark.parametrize("splitter_type", [Rfc4571Splitter, StunTcpSplitter])
def test_buffer_bound(splitter_type: type[Rfc4571Splitter | StunTcpSplitter]) -> None:
    big = stun(0x0016, bytes(4000))
    stream = rfc4571(big) if splitter_type is Rfc4571Splitter else big
    splitter = splitter_type(max_buffer=1024)
    assert splitter.feed(stream[:1000]) == []
    assert not splitter.overflowed
    assert splitter.feed(stream[1000:2000]) == []
    assert splitter.overflowed and splitter.pending == 0
    assert splitter.feed(stream[2000:]) == []


def test_default_bound_is_256_kib_and_holds_a_maximal_message() -> None:
    biggest = stun(0x0017, bytes(0xFFFC))
    splitter = StunTcpSplitter()
    assert splitter.feed(biggest[:-1]) == [] and not splitter.overflowed
    assert splitter.feed(biggest[-1:]) == [biggest]


# --------------------------------------------------------------------------- fuzzing


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.booleans())
def test_fuzz_channel_data(data: bytes, over_tcp: bool) -> None:
    try:
        parsed = parse_channel_data(data, over_tcp)
    except DecodeError:
        assert not looks_like_channel_data(data, over_tcp)
        return
    assert looks_like_channel_data(data, over_tcp)
    assert 0x4000 <= parsed.channel <= 0x7FFF and len(parsed.data) <= len(data) - 4


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=64),
                 st.binary(max_size=40).map(lambda d: b"\xff\x10" + struct.pack("!H", len(d)) + d)))
def test_fuzz_ms_turn(data: bytes) -> None:
    try:
        frame = parse_ms_turn(data)
    except DecodeError:
        assert not looks_like_ms_turn(data)
        return
    assert looks_like_ms_turn(data) and len(frame.session_id) == 8
    assert data == ms_turn(frame.session_id, frame.data)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=8))
def test_fuzz_rfc4571_splitter_accounts_for_every_byte(chunks: list[bytes]) -> None:
    splitter = Rfc4571Splitter()
    frames = [frame for chunk in chunks for frame in splitter.feed(chunk)]
    assert sum(2 + len(f) for f in frames) + splitter.pending == sum(map(len, chunks))
    assert rfc4571(*frames) == b"".join(chunks)[:sum(2 + len(f) for f in frames)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=8))
def test_fuzz_stun_tcp_splitter(chunks: list[bytes]) -> None:
    splitter = StunTcpSplitter()
    frames = [frame for chunk in chunks for frame in splitter.feed(chunk)]
    joined = b"".join(frames)
    assert b"".join(chunks).startswith(joined)
    if not splitter.desynced:
        assert len(joined) + splitter.pending == sum(map(len, chunks))
    assert all(f[0] >> 6 in (0, 1) for f in frames)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 30), min_size=1, max_size=20))
def test_fuzz_any_chunking_gives_the_same_messages(cuts: list[int]) -> None:
    messages = [stun(0x0001, tid=bytes([i]) * 12) for i in range(4)] + [
        channel_data(0x4000 + i, bytes(i), pad=True) for i in range(4)]
    stream = b"".join(messages)
    splitter, out, position = StunTcpSplitter(), [], 0
    for cut in itertools.cycle(cuts):
        if position >= len(stream):
            break
        out += splitter.feed(stream[position:position + cut])
        position += cut
    assert out == messages


# --------------------------------------------------------------------------- real captures

needs_corpus = pytest.mark.skipif(not NDPI.is_dir(), reason="shared corpus absent")
needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark absent")

Endpoint = tuple[str, int]


def _reader(f: BinaryIO) -> dpkt.pcap.Reader | dpkt.pcapng.Reader:
    magic = f.read(4)
    f.seek(0)
    return dpkt.pcapng.Reader(f) if magic == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(f)


def segments(path: Path) -> Iterator[tuple[int, str, Endpoint, Endpoint, int, bytes]]:
    """(frame, 'udp'|'tcp', source, destination, TCP seq or 0, payload) per Ethernet packet."""
    with path.open("rb") as f:
        for number, (_, frame) in enumerate(_reader(f), 1):
            ip = dpkt.ethernet.Ethernet(frame).data
            if not isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6):
                continue
            l4 = ip.data
            if isinstance(l4, dpkt.udp.UDP | dpkt.tcp.TCP):
                family = socket.AF_INET if isinstance(ip, dpkt.ip.IP) else socket.AF_INET6
                src = (socket.inet_ntop(family, ip.src), l4.sport)
                dst = (socket.inet_ntop(family, ip.dst), l4.dport)
                kind, seq = ("udp", 0) if isinstance(l4, dpkt.udp.UDP) else ("tcp", l4.seq)
                yield number, kind, src, dst, seq, bytes(l4.data)


def tcp_stream(path: Path, src: Endpoint, dst: Endpoint) -> list[tuple[int, bytes]]:
    """(frame, payload) of one TCP direction, checked to be contiguous in sequence space."""
    chunks = [(n, seq, p) for n, kind, s, d, seq, p in segments(path)
              if kind == "tcp" and (s, d) == (src, dst) and p]
    for (_, seq, payload), (_, next_seq, _) in itertools.pairwise(chunks):
        assert next_seq == (seq + len(payload)) & 0xFFFFFFFF, "gap or retransmission"
    return [(n, p) for n, _, p in chunks]


def split_stream(path: Path, src: Endpoint, dst: Endpoint,
                 splitter: Rfc4571Splitter | StunTcpSplitter) -> dict[int, list[bytes]]:
    out = {n: splitter.feed(p) for n, p in tcp_stream(path, src, dst)}
    assert splitter.pending == 0 and not splitter.broken
    return out


def tshark_column(name: str, display_filter: str, field: str) -> dict[int, str]:
    out = subprocess.run(["tshark", "-r", str(NDPI / name), "-Y", display_filter, "-T", "fields",
                          "-e", "frame.number", "-e", field],
                         capture_output=True, text=True, check=True).stdout
    return {int(n): v for n, v in (line.split("\t") for line in out.splitlines())}


@needs_corpus
@needs_tshark
def test_tcp_multiple_msgs_same_pkt_is_unframed_stun() -> None:
    """Three Allocate requests back to back in frame 5, no RFC 4571 prefix: StunTcpSplitter."""
    name = "stun_tcp_multiple_msgs_same_pkt.pcap"
    client, server = ("23.183.197.71", 42849), ("166.172.142.131", 3479)
    found = split_stream(NDPI / name, client, server, StunTcpSplitter())
    types = tshark_column(name, "stun", "stun.type")
    assert {n: [f"0x{parse_stun(m).msg_type:04x}" for m in msgs] for n, msgs in found.items()} \
        == {n: v.split(",") for n, v in types.items()}
    assert [len(msgs) for msgs in found.values()] == [1, 1, 1, 3]
    # The same bytes read as RFC 4571 would be nonsense: 0x0003 is not the segment's length.
    assert struct.unpack("!H", tcp_stream(NDPI / name, client, server)[0][1][:2])[0] + 2 != 28


@needs_corpus
def test_stun_pcap_coturn_flow_is_unframed() -> None:
    """stun.pcap, coturn on TCP 3478: Allocate/CreatePermission/Send with two messages per
    segment in frames 151 and 157; every byte of both directions splits into STUN messages."""
    client, server = ("54.1.57.155", 37257), ("87.47.100.17", 3478)
    for src, dst in ((client, server), (server, client)):
        found = split_stream(NDPI / "stun.pcap", src, dst, StunTcpSplitter())
        messages = [parse_stun(m) for msgs in found.values() for m in msgs]
        assert messages and all(not m.classic for m in messages)
    assert [len(v) for v in split_stream(NDPI / "stun.pcap", client, server,
                                         StunTcpSplitter()).values()].count(2) >= 1


@needs_corpus
@needs_tshark
def test_stun_pcap_teams_ice_tcp_is_rfc4571() -> None:
    """stun.pcap, Skype/Teams ICE-TCP (RFC 6544): each segment is one RFC 4571 frame; the
    STUN inside agrees with tshark and carries Microsoft attributes (nDPI: Skype_TeamsCall)."""
    a, b = ("10.77.110.51", 41588), ("10.206.50.239", 42000)
    types = tshark_column("stun.pcap", "stun and tcp", "stun.type")
    hints = set()
    for src, dst in ((a, b), (b, a)):
        for number, frames in split_stream(NDPI / "stun.pcap", src, dst,
                                           Rfc4571Splitter()).items():
            assert len(frames) == 1
            msg = parse_stun(frames[0])
            assert f"0x{msg.msg_type:04x}" == types[number]
            hint = service_hint(msg)
            hints.add(hint.service if hint else None)
    assert hints == {"teams"}


@needs_corpus
def test_stun_dtls_rtp_google_turn_tcp_is_unframed() -> None:
    """stun_dtls_rtp.pcapng: TURN over TCP to 142.250.82.249:3478, Send/Data indications
    carrying STUN and DTLS in their DATA attribute."""
    client, server = ("192.168.12.182", 50221), ("142.250.82.249", 3478)
    inner: collections.Counter[str] = collections.Counter()
    for src, dst in ((client, server), (server, client)):
        for msgs in split_stream(NDPI / "stun_dtls_rtp.pcapng", src, dst,
                                 StunTcpSplitter()).values():
            for raw in msgs:
                data = parse_stun(raw).data
                if data is not None:
                    inner["stun" if looks_like_stun(data) else f"0x{data[0]:02x}"] += 1
    assert inner["stun"] > 0 and inner["0x16"] > 0  # ICE checks and DTLS handshake records


@needs_corpus
@needs_tshark
def test_real_udp_channel_data_agrees_with_tshark() -> None:
    """stun.pcap: Facebook TURN relays ICE checks and RTCP on channel 0x4003, bound by a
    ChannelBind whose CHANNEL-NUMBER our STUN decoder reads; one more flow (IPv6, port 3478)
    sends RTCP on 0x4001. Over UDP the data is not padded (22 bytes -> 26 on the wire)."""
    # tshark 4.0 decodes ChannelData inside its STUN dissector: stun.channel, stun.length.
    ids = tshark_column("stun.pcap", "stun.channel and udp", "stun.channel")
    lengths = tshark_column("stun.pcap", "stun.channel and udp", "stun.length")
    ours: dict[int, ChannelData] = {}
    bound: set[int] = set()
    for number, kind, _, _, _, payload in segments(NDPI / "stun.pcap"):
        if kind != "udp":
            continue
        if looks_like_channel_data(payload):
            ours[number] = parse_channel_data(payload)
        elif looks_like_stun(payload) and (channel := parse_stun(payload).channel_number):
            bound.add(channel)
    assert len(ours) == len(ids) > 0
    for number, frame in ours.items():
        want_length = int(lengths[number].split(",")[0])  # inner STUN lengths follow
        assert (frame.channel, len(frame.data)) == (int(ids[number], 16), want_length)
    assert bound == {0x4003} and {f.channel for f in ours.values()} == {0x4001, 0x4003}
    inner = {"stun" if looks_like_stun(f.data) else f.data[:2].hex() for f in ours.values()}
    assert inner == {"stun", "80c9", "81ca"}  # STUN checks, RTCP RR, RTCP SDES
    assert any(len(f.data) % 4 for f in ours.values())


@needs_corpus
@pytest.mark.parametrize("name", ["stun_msteams_unidir.pcapng", "skype-conference-call.pcap",
                                  "stun.pcap", "whatsapp_voice_and_message.pcap"])
def test_no_ms_turn_frames_in_the_corpus(name: str) -> None:
    """No capture here carries MS-TURN 0xFF10 framing (checked with tshark/grep too): the
    Teams captures are plain RFC 5389 STUN plus RTCP. So no false positives either."""
    payloads = [p for *_, p in segments(NDPI / name)]
    assert payloads and not any(looks_like_ms_turn(p) for p in payloads)
