"""Zoom encapsulation decoder: protocols.md §1.3-1.10 built into bytes, the Princeton worked
example, real 2019/2022 captures checked against nDPI's per-flow media labels, fuzzing, and
agreement of the columnar path (in C when the extension is built, and in numpy) with the scalar
parser."""

from __future__ import annotations

import re
import socket
import struct
from collections import defaultdict
from dataclasses import dataclass, fields
from pathlib import Path

import dpkt
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzer import speedups
from analyzer.decode.rtcp import parse_rtcp_compound
from analyzer.decode.rtp import parse_rtp
from analyzer.decode.zoom import (
    DIRECTION_CODES,
    HEAD_BYTES,
    LAYOUT_CODES,
    MEDIA_KINDS,
    ZoomColumns,
    ZoomPacket,
    looks_like_zoom_p2p,
    looks_like_zoom_sfu,
    parse_zoom,
    zoom_columns,
)
from analyzer.errors import DecodeError

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
ZOOM_PORTS = range(8801, 8811)  # protocols.md §1.1; stands in for Zoom's address list here


# --- byte builders following protocols.md -------------------------------------------------------


def rtp(pt: int = 99, seq: int = 1, ext_words: int = 1, payload: bytes = b"\x11" * 40) -> bytes:
    """RFC 3550 header with an RFC 8285 one-byte extension (as Zoom sends, §1.8)."""
    header = struct.pack("!BBHII", 0x90, pt, seq, 1000, 0x01000402)
    extension = struct.pack("!HH", 0xBEDE, ext_words) + b"\x10\x00\x00\x00" * ext_words
    return header + extension + payload


SR_SDES = bytes.fromhex("80c8000601000402e4f613639788bc8800acfb2000000d6e0003885281ca000201000402"
                        "01000000")  # fmt: skip  (RFC 3550 SR + SDES, as in Princeton's test)


def sfu(direction: int = 0x04, seq: int = 7) -> bytes:
    """§1.3: type 5, sequence, cookie, direction."""
    return struct.pack("!BH4sB", 5, seq, b"\x00\xfe\x51\x32", direction)


def inner(media_type: int, filler: int) -> bytes:
    """§1.4: type byte then `filler` opaque header bytes (seq at 9..10, ts at 11..14)."""
    body = bytearray(b"\x01\x00\xfb\x90" + bytes(max(filler - 4, 0)))[:filler]
    if filler >= 14:
        body[8:14] = b"\x00\x05\x69\x65\x92\xaa"
    return bytes([media_type]) + bytes(body)


def video(framed: bool, first: bytes, second: bytes = b"") -> bytes:
    """§1.4 type 16: I[20] == 2 adds frame number and packet count, RTP at I+24 (else I+20)."""
    head = inner(16, 19) + (b"\x02\x33\x18\x05" if framed else b"")
    return head + first + second


def fec_then_video() -> bytes:
    """§1.8: a 31-byte FEC RTP packet (PT 110) then a complete RTP header at I+55."""
    first = rtp(pt=110, ext_words=1, payload=b"\x22" * 11)
    assert len(first) == 31
    return video(True, first, rtp(pt=98, ext_words=2))


def filler(base_type: int = 21) -> bytes:
    body = bytearray(inner(base_type, 40))
    body[13:15] = b"\x00\x2a"
    body[22:24] = b"\x03\xe8"
    return bytes(body)


def p2p_setup(ip: bytes = b"192.168.1.226") -> bytes:
    """nDPI zoom.c: 1f 02 01, 24-byte header, IP text and UUID with 32-bit lengths, 4 zeros."""
    uuid = b"8b4d3b1e-6f55-4bb5-9f5b-4e3c1f0d9a77"
    header = b"\x1f\x02\x01" + bytes(21)
    return header + struct.pack("!I", len(ip)) + ip + struct.pack("!I", len(uuid)) + uuid + bytes(4)


# (name, payload, server_flow, layout, media_type, kind, direction, rtp_offsets, is_rtcp)
CASES = [
    ("p2p audio", inner(15, 18) + rtp(), False, "p2p", 15, "audio", None, (19,), False),
    ("p2p rtcp", inner(34, 15) + SR_SDES, False, "p2p", 34, "rtcp", None, (16,), True),
    ("p2p screen", inner(30, 19) + rtp(), False, "p2p", 30, "screen", None, (20,), False),
    ("p2p video", video(True, rtp(98)), False, "p2p", 16, "video", None, (24,), False),
    ("p2p second rtp", fec_then_video(), False, "p2p", 16, "video", None, (24, 55), False),
    ("p2p no second rtp after non-fec", video(True, rtp(98, payload=b"\x22" * 11), rtp(98)),
     False, "p2p", 16, "video", None, (24,), False),
    ("p2p setup", p2p_setup(), False, "p2p", 31, "setup", None, (), False),
    ("sfu audio", sfu(0) + inner(15, 18) + rtp(), True, "sfu", 15, "audio", "to-server", (27,),
     False),
    ("sfu video unframed", sfu() + video(False, rtp(98)), True, "sfu", 16, "video",
     "from-server", (28,), False),
    ("sfu fec only", sfu() + video(True, rtp(110)), True, "sfu", 16, "fec", "from-server",
     (32,), False),
    ("sfu second rtp", sfu(5) + fec_then_video(), True, "sfu", 16, "video", "from-server",
     (32, 63), False),
    ("sfu screen", sfu(1) + inner(13, 6) + inner(30, 19) + rtp(), True, "sfu", 13, "screen",
     "to-server", (35,), False),
    ("sfu rtcp", sfu() + inner(33, 15) + SR_SDES, True, "sfu", 33, "rtcp", "from-server",
     (24,), True),
    ("sfu wrapped audio", sfu() + inner(7, 6) + inner(15, 18) + rtp(), True, "sfu", 7, "audio",
     "from-server", (34,), False),
    ("sfu filler", sfu() + filler(), True, "sfu", 21, "probe", "from-server", (), False),
    ("sfu opaque 10", sfu() + inner(10, 18), True, "sfu", 10, "unknown", "from-server", (),
     False),
    ("sfu handshake", b"\x01\x00\x03" + bytes(120), True, "sfu", None, "setup", None, (), False),
    ("sfu keepalive", b"\x03\x00\x00\x00\x01" + bytes(8), True, "sfu", None, "setup", None, (),
     False),
    ("legacy rtcp", b"\x05" + inner(34, 15) + SR_SDES, False, "legacy", 34, "rtcp", None, (17,),
     True),
    ("legacy filler", b"\x05" + filler(), False, "legacy", 21, "probe", None, (), False),
    ("legacy control", b"\x05" + inner(12, 40), True, "legacy", 12, "setup", None, (), False),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_layouts_built_from_the_notes(case: tuple) -> None:
    _, data, server_flow, layout, media_type, kind, direction, offsets, is_rtcp = case
    packet = parse_zoom(data, server_flow)
    assert (packet.layout, packet.media_type, packet.media_kind) == (layout, media_type, kind)
    assert (packet.direction, packet.rtp_offsets, packet.is_rtcp) == (direction, offsets, is_rtcp)
    for offset in packet.rtp_offsets:
        if is_rtcp:
            assert parse_rtcp_compound(data[offset:]).packets[0].packet_type == 200
        else:
            assert parse_rtp(data[offset:]).version == 2
    assert_agrees([data], [server_flow])


def test_princeton_worked_example() -> None:
    """protocols.md §1.7 (Princeton `zoom_srv_video_buf`), rebuilt from the text."""
    outer = bytes.fromhex("05 0007 00fe5132 04")
    header = bytes([0x10]) + bytes(8) + bytes.fromhex("0005 696592aa") + bytes(5)
    frame = bytes.fromhex("02 3318 05")
    extension = bytes.fromhex("bede0004") + bytes.fromhex("12500000358a903318331650") + bytes(4)
    media = bytes.fromhex("90621e23f3e79e3001000801") + extension + b"\x65" * 100
    data = outer + header + frame + media
    packet = parse_zoom(data, server_flow=False)  # the layout, not the flow flag, decides
    assert packet == ZoomPacket(
        layout="sfu", sfu_type=5, sfu_sequence=7, direction="from-server", media_type=16,
        media_kind="video", zoom_sequence=5, zoom_timestamp=0x696592AA, frame_number=0x3318,
        packets_in_frame=5, rtp_offsets=(32,), is_rtcp=False,
    )  # fmt: skip
    header_rtp = parse_rtp(data[32:])
    assert (header_rtp.extension, header_rtp.payload_type, header_rtp.sequence_number) == (
        True, 98, 7715,
    )  # fmt: skip
    assert (header_rtp.timestamp, header_rtp.ssrc) == (4092042800, 0x01000801)
    assert header_rtp.extension_profile == 0xBEDE and header_rtp.payload_offset == 32
    assert looks_like_zoom_sfu(data) and not looks_like_zoom_p2p(data)


@pytest.mark.parametrize(
    ("data", "server_flow"),
    [
        (bytes.fromhex("16fefd000000000000000000a10100009500000000000000") + bytes(150), True),
        # 0x15 is both a DTLS alert and Zoom type 21: without the 0x03E8 marker it is not Zoom.
        (bytes.fromhex("15fefd0001000000000005001a") + bytes(40), True),
        (bytes.fromhex("17fefd00010000000000070030") + bytes(48), False),
        (bytes.fromhex("000100582112a442") + bytes(88), True),  # STUN binding request
        (bytes.fromhex("0101003c") + bytes(60), True),  # classic STUN success response
        (sfu() + inner(15, 18) + b"\x40" + rtp()[1:], True),  # RTP version 1 at the offset
        (sfu() + inner(15, 18) + rtp(pt=72), True),  # PT 72 is not a plausible RTP PT
        (sfu() + inner(34, 15) + SR_SDES[:20], True),  # RTCP length runs past the datagram
        (sfu(0x02) + inner(15, 18) + rtp(), True),  # direction byte 2 is not known
        (inner(10, 20), False),  # opaque type: not enough evidence without an SFU header
        (b"\x05" + inner(12, 40), False),  # legacy opaque on a non-server flow
        (b"\x01\x00\x03" + bytes(120), False),  # SFU handshake on a non-server flow
        (p2p_setup()[:-1], False),  # setup lengths no longer add up
        (b"", True),
    ],
)
def test_not_zoom_raises_decode_error(data: bytes, server_flow: bool) -> None:
    with pytest.raises(DecodeError):
        parse_zoom(data, server_flow)
    assert_agrees([data], [server_flow])


# --- real captures ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Datagram:
    frame: int
    client: tuple[str, int]
    from_server: bool
    payload: bytes


def zoom_datagrams(name: str) -> list[Datagram]:
    """UDP datagrams with a Zoom media port on one side (Ethernet, VLAN, GTP-U tunnels)."""
    path = CORPUS / name
    if not path.exists():
        pytest.skip(f"corpus capture {name} absent")
    return [d for d in _udp_datagrams(path) if d is not None]


def _udp_datagrams(path: Path) -> list[Datagram | None]:
    with path.open("rb") as handle:
        magic = handle.read(4)
        handle.seek(0)
        reader = dpkt.pcapng.Reader(handle) if magic == b"\n\r\r\n" else dpkt.pcap.Reader(handle)
        return [_datagram(number, frame) for number, (_, frame) in enumerate(reader, start=1)]


def _datagram(number: int, frame: bytes) -> Datagram | None:
    ip = dpkt.ethernet.Ethernet(frame).data
    while isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.udp.UDP):
        udp = ip.data
        if 2152 in (udp.sport, udp.dport):  # GTP-U: 8-byte header (+4 with S/PN/E flags)
            ip = dpkt.ip.IP(bytes(udp.data)[8 + (4 if udp.data[0] & 0x07 else 0) :])
            continue
        if udp.sport in ZOOM_PORTS or udp.dport in ZOOM_PORTS:
            from_server = udp.sport in ZOOM_PORTS
            client = (ip.dst, udp.dport) if from_server else (ip.src, udp.sport)
            client_text = (socket.inet_ntoa(client[0]), client[1])
            return Datagram(number, client_text, from_server, bytes(udp.data))
        return None
    return None


def ndpi_stream_content(name: str) -> dict[tuple[str, int], set[str]]:
    """Per client endpoint, nDPI's "Stream Content" with Zoom extra dissection enabled."""
    out = CORPUS / "ndpi" / "zoom_extra_dissection" / f"{Path(name).name}.out"
    content: dict[tuple[str, int], set[str]] = defaultdict(set)
    labels = {"Audio": "audio", "Video": "video", "Screen Sharing": "screen"}
    for line in out.read_text().splitlines():
        flow = re.search(r"UDP ([\d.]+):(\d+) <-> [\d.]+:88(?:0\d|10) ", line)
        if flow:
            stream = re.search(r"\[Stream Content: ([^\]]+)\]", line)
            content[(flow[1], int(flow[2]))] |= {labels[stream[1]]} if stream else set()
    return content


MEDIA = {"audio", "video", "screen"}


@pytest.mark.parametrize("name", ["ndpi/zoom.pcap", "ndpi/zoom2.pcap"])
def test_media_kinds_per_flow_agree_with_ndpi(name: str) -> None:
    """nDPI labels a Zoom flow with the first media type it verifies (RTP at the same offsets),
    so its label must be among ours, and flows it leaves unlabelled must carry no media here.
    zoom.pcap (2019, legacy layout) has filler, RTCP and control only; zoom2.pcap's 58117 flow
    carries audio; its 60653 and 57953 flows carry filler, type 10/12/13 control and RTCP."""
    ours: dict[tuple[str, int], set[str]] = defaultdict(set)
    for datagram in zoom_datagrams(name):
        packet = parse_zoom(datagram.payload, server_flow=True)
        ours[datagram.client].add(packet.media_kind)
    expected = ndpi_stream_content(name)
    assert set(ours) == set(expected)
    for client, labels in expected.items():
        assert ours[client] & MEDIA == labels, client
    assert any(ours.values())


def test_zoom2_sfu_details() -> None:
    """§1.6 validation claims: audio RTP at 27 with PT 98/99/112, RTCP SR at 24, both directions."""
    directions, audio_pts, rtcp_types = set(), set(), set()
    for datagram in zoom_datagrams("ndpi/zoom2.pcap"):
        packet = parse_zoom(datagram.payload, server_flow=True)
        if packet.media_type is None:
            assert packet.sfu_type in (1, 2, 3, 4, 7) and packet.media_kind == "setup"
            continue
        assert packet.layout == "sfu"
        directions.add(packet.direction)
        assert packet.direction == ("from-server" if datagram.from_server else "to-server")
        if packet.media_kind == "audio":
            assert packet.rtp_offsets == (27,)
            audio_pts.add(parse_rtp(datagram.payload[27:]).payload_type)
        if packet.is_rtcp:
            compound = parse_rtcp_compound(datagram.payload[packet.rtp_offsets[0] :])
            rtcp_types.add(tuple(p.packet_type for p in compound.packets))
    assert directions == {"to-server", "from-server"}
    assert audio_pts and audio_pts <= {98, 99, 112}
    assert rtcp_types == {(200, 202)}


def test_zoom_2019_legacy_layout() -> None:
    """§1.10: the 109.94.160.99 flows put the type straight after 0x05; the GTP-tunnelled flow
    to 193.122.35.237 in the same file already uses the 8-byte SFU header."""
    layouts: dict[str, set[str]] = defaultdict(set)
    for datagram in zoom_datagrams("ndpi/zoom.pcap"):
        packet = parse_zoom(datagram.payload, server_flow=True)
        layouts[datagram.client[0]].add(packet.layout)
        if packet.is_rtcp:
            assert packet.rtp_offsets == (17,)
            assert parse_rtcp_compound(datagram.payload[17:]).packets[0].packet_type == 200
    assert layouts == {"192.168.1.117": {"legacy", "sfu"}, "10.140.117.35": {"sfu"}}


def test_dtls_and_stun_on_8801_are_not_zoom() -> None:
    """stun_zoom.pcapng: WebRTC (STUN + DTLS) to a Zoom address on 8801. nDPI calls it
    DTLS.Zoom by address; it is not Zoom's own encapsulation."""
    datagrams = zoom_datagrams("ndpi/stun_zoom.pcapng")
    assert len(datagrams) > 50
    for datagram in datagrams:
        for server_flow in (True, False):
            with pytest.raises(DecodeError):
                parse_zoom(datagram.payload, server_flow)


def test_corpus_vectorized_agrees_with_scalar() -> None:
    payloads = [
        d.payload
        for name in ("ndpi/zoom.pcap", "ndpi/zoom2.pcap", "ndpi/stun_zoom.pcapng")
        for d in zoom_datagrams(name)
    ]
    assert len(payloads) > 600
    assert_agrees(payloads * 2, [True] * len(payloads) + [False] * len(payloads))


# --- fuzzing and scalar/columnar agreement -------------------------------------------------------

SEEDS = [case[1] for case in CASES]
# Bytes the rules look at: SFU type/direction, inner types, I[7], I[20], RTP first bytes and PTs,
# extension profile/length, RTCP length, filler marker, setup lengths, second RTP.
HOT_OFFSETS = [0, 1, 2, 7, 8, 9, 15, 16, 17, 19, 20, 21, 24, 25, 27, 28, 29, 30, 31, 32, 33,
               35, 36, 39, 40, 44, 45, 55, 56, 63]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.booleans())
def test_parse_fuzz_raises_only_decode_error(data: bytes, server_flow: bool) -> None:
    try:
        packet = parse_zoom(data, server_flow)
    except DecodeError:
        return
    assert all(offset < len(data) for offset in packet.rtp_offsets)
    assert looks_like_zoom_sfu(data) in (True, False) and looks_like_zoom_p2p(data) in (True, False)


mutated = st.builds(
    lambda seed, edits, cut: _mutate(seed, edits, cut),
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.one_of(st.sampled_from(HOT_OFFSETS), st.integers(0, 90)),
                       st.integers(0, 255)), max_size=3),
    st.integers(0, 160),
)


def _mutate(seed: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
    data = bytearray(seed[: max(cut, 1)])
    for position, value in edits:
        if position < len(data):
            data[position] = value
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.one_of(mutated, st.binary(max_size=80)), st.booleans()),
                min_size=1, max_size=30))  # fmt: skip
def test_vectorized_agrees_on_generated_inputs(rows: list[tuple[bytes, bool]]) -> None:
    assert_agrees([data for data, _ in rows], [flag for _, flag in rows])


def assert_agrees(payloads: list[bytes], server_flows: list[bool]) -> None:
    head = np.zeros((len(payloads), HEAD_BYTES), np.uint8)
    for row, payload in enumerate(payloads):
        chunk = payload[:HEAD_BYTES]
        head[row, : len(chunk)] = np.frombuffer(chunk, np.uint8)
    lengths = np.array([len(p) for p in payloads], np.int64)
    cols = columns_both_ways(head, lengths, np.array(server_flows, bool))
    for row, (payload, server_flow) in enumerate(zip(payloads, server_flows, strict=True)):
        try:
            packet = parse_zoom(payload, server_flow)
        except DecodeError:
            assert not cols.valid[row], payload.hex()
            continue
        offsets = (*packet.rtp_offsets, -1, -1)
        expected = (True, packet.layout, packet.media_type if packet.media_type is not None else -1,
                    packet.media_kind, packet.direction, offsets[0], offsets[1], packet.is_rtcp)
        got = (bool(cols.valid[row]), LAYOUT_CODES[cols.layout[row]], int(cols.media_type[row]),
               MEDIA_KINDS[cols.media_kind[row]], DIRECTION_CODES[cols.direction[row]],
               int(cols.rtp_offset[row]), int(cols.second_rtp_offset[row]),
               bool(cols.is_rtcp[row]))  # fmt: skip
        assert got == expected, payload.hex()


def columns_both_ways(head: np.ndarray, lengths: np.ndarray, server_flows: np.ndarray
                      ) -> ZoomColumns:
    """zoom_columns as the pipeline runs it (in C when built), held equal to the numpy code."""
    cols = zoom_columns(head, lengths, server_flows)
    saved, speedups.native = speedups.native, None
    try:
        reference = zoom_columns(head, lengths, server_flows)
    finally:
        speedups.native = saved
    for field in fields(ZoomColumns):
        got, want = getattr(cols, field.name), getattr(reference, field.name)
        assert got.dtype == want.dtype and np.array_equal(got, want), field.name
    return cols
