"""RTCP / SRTCP decoder: packets built from RFC 3550/4585/3611 layouts, SRTCP trailers built from
RFC 3711 §3.4 and RFC 7714, real captures checked field by field against tshark, fuzzing."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.decode.rtcp import (
    AppDefined,
    ExtendedReport,
    Feedback,
    Goodbye,
    ReceiverReport,
    SenderReport,
    SourceDescription,
    looks_like_rtcp,
    parse_rtcp_compound,
)
from analyzer.errors import DecodeError

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


def rtcp(packet_type: int, count: int, body: bytes, padding: int = 0) -> bytes:
    """RFC 3550 §6.4.1 common header + body (+ padding whose last octet is its count)."""
    body += (b"\0" * (padding - 1) + bytes([padding])) if padding else b""
    assert len(body) % 4 == 0
    first = 0x80 | (0x20 if padding else 0) | count
    return struct.pack("!BBH", first, packet_type, len(body) // 4) + body


def report_block(ssrc: int, lost: int, cumulative: int, highest: int = 0x10005) -> bytes:
    return struct.pack("!IB", ssrc, lost) + cumulative.to_bytes(3, "big", signed=True) + \
        struct.pack("!IIII", highest, 77, 0xAABBCCDD, 0x10000)  # fmt: skip


def sdes_chunk(ssrc: int, items: list[tuple[int, bytes]]) -> bytes:
    raw = struct.pack("!I", ssrc) + b"".join(bytes([t, len(v)]) + v for t, v in items) + b"\0"
    return raw + b"\0" * (-len(raw) % 4)


SR = rtcp(200, 1, struct.pack("!IQIII", 0x1234, 0xE4F61363_9788BC88, 11336480, 3438, 231506)
          + report_block(0x9999, 25, -5))  # fmt: skip
SDES = rtcp(202, 2, sdes_chunk(0x1234, [(1, b"alice@host"), (6, b"tool\xff")])
            + sdes_chunk(0x5678, [(2, b"Bob")]))  # fmt: skip
BYE = rtcp(203, 1, struct.pack("!I", 0x1234) + bytes([8]) + b"shutdown" + b"\0\0\0")


# --- built from the RFCs ------------------------------------------------------------------------


def test_compound_sr_sdes_bye() -> None:
    compound = parse_rtcp_compound(SR + SDES + BYE)
    assert [p.name for p in compound.packets] == ["SR", "SDES", "BYE"]
    assert compound.consumed_length == len(SR + SDES + BYE) and compound.srtcp_trailer is None
    sender, sdes, bye = (p.body for p in compound.packets)
    assert isinstance(sender, SenderReport) and compound.packets[0].ssrc == 0x1234
    assert sender.sender_info.ntp_timestamp == 0xE4F61363_9788BC88
    assert (sender.sender_info.packet_count, sender.sender_info.octet_count) == (3438, 231506)
    block = sender.report_blocks[0]
    assert (block.ssrc, block.fraction_lost, block.cumulative_lost) == (0x9999, 25, -5)
    assert (block.highest_seq, block.jitter, block.lsr, block.dlsr) == (
        0x10005, 77, 0xAABBCCDD, 0x10000,
    )  # fmt: skip
    assert isinstance(sdes, SourceDescription)
    assert [(c.ssrc, [(i.item_type, i.text) for i in c.items]) for c in sdes.chunks] == [
        (0x1234, [(1, "alice@host"), (6, "tool\ufffd")]),
        (0x5678, [(2, "Bob")]),
    ]
    assert isinstance(bye, Goodbye) and bye.ssrcs == (0x1234,) and bye.reason == "shutdown"
    assert compound.body_decoded


def test_rr_app_feedback_xr_and_padding() -> None:
    blocks = report_block(2, 0, 0x7FFFFF) + report_block(3, 255, -1)
    rr = rtcp(201, 2, struct.pack("!I", 1) + blocks)
    app = rtcp(204, 5, struct.pack("!I", 1) + b"TEST" + b"\x01\x02\x03\x04")
    nack = rtcp(205, 1, struct.pack("!IIHH", 1, 0xCAFE, 100, 0b101))  # RFC 4585 generic NACK
    pli = rtcp(206, 1, struct.pack("!II", 1, 0xBEEF))  # RFC 4585 PLI, no FCI
    xr = rtcp(207, 0, struct.pack("!I", 1) + struct.pack("!BBHQ", 4, 0, 2, 7)
              + struct.pack("!BBHIII", 5, 0, 3, 9, 8, 7), padding=4)  # fmt: skip
    packets = parse_rtcp_compound(rr + app + nack + pli + xr).packets
    bodies = [p.body for p in packets]
    assert isinstance(bodies[0], ReceiverReport)
    assert [b.cumulative_lost for b in bodies[0].report_blocks] == [0x7FFFFF, -1]
    assert bodies[1] == AppDefined(5, "TEST", b"\x01\x02\x03\x04")
    assert bodies[2] == Feedback(1, 0xCAFE, struct.pack("!HH", 100, 0b101))
    assert bodies[3] == Feedback(1, 0xBEEF, b"") and packets[3].name == "PSFB"
    assert bodies[4] == ExtendedReport((4, 5)) and packets[4].padding


@pytest.mark.parametrize(
    "data",
    [
        b"\x80\xc8\x00\x06" + b"\0" * 4,  # length says 28 bytes, 8 present
        b"\x40\xc9\x00\x01" + b"\0" * 4,  # version 1
        b"\x80\xbf\x00\x01" + b"\0" * 4,  # PT 191: below RFC 5761's RTCP range
        b"\x80\xc3\x00\x01" + b"\0" * 4,  # PT 195 (IJ) cannot start a compound
        b"\x80\xc9\x00\x00",  # RR without its SSRC
        rtcp(200, 0, b"\0" * 8),  # SR shorter than its sender info
        rtcp(201, 2, b"\0" * 28),  # RR announcing two blocks, carrying one
        rtcp(203, 1, struct.pack("!I", 1) + bytes([9]) + b"abc"),  # BYE reason overruns
        rtcp(202, 1, struct.pack("!I", 1) + bytes([1, 20]) + b"ab"),  # SDES item overruns
        b"\xa0\xc9\x00\x01\x00\x00\x00\x09",  # padding count 9 > 4 body bytes
    ],
)
def test_malformed_raise_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        parse_rtcp_compound(data)


def test_other_types_in_the_rfc5761_range_are_walked_undecoded() -> None:
    ij = rtcp(195, 1, struct.pack("!I", 1234))  # RFC 5450 IJ
    compound = parse_rtcp_compound(SR + ij)
    assert [p.packet_type for p in compound.packets] == [200, 195]
    assert compound.packets[0].body_decoded and compound.packets[1].body is None
    assert compound.consumed_length == len(SR + ij)


def test_trailing_garbage_is_left_unexplained() -> None:
    compound = parse_rtcp_compound(SR + b"\x00\x01\x02")
    assert len(compound.packets) == 1 and compound.consumed_length == len(SR)
    assert compound.srtcp_trailer is None


# --- SRTCP trailers -----------------------------------------------------------------------------


def srtcp(compound: bytes, encrypted: bool, index: int, tag: int, aead: bool = False) -> bytes:
    """RFC 3711 §3.4: compound (encrypted after 8 bytes), E|index, tag.
    RFC 7714: the 16-byte GCM tag ends the ciphertext, the E|index word follows it."""
    body = compound[:8] + (bytes(255 - b for b in compound[8:]) if encrypted else compound[8:])
    word = struct.pack("!I", (0x8000_0000 if encrypted else 0) | index)
    return body + b"\xa5" * tag + word if aead else body + word + b"\x5a" * tag


@pytest.mark.parametrize(("tag", "aead"), [(10, False), (4, False), (16, True)])
def test_encrypted_srtcp_keeps_only_the_clear_first_header(tag: int, aead: bool) -> None:
    data = srtcp(SR + SDES, encrypted=True, index=41, tag=tag, aead=aead)
    compound = parse_rtcp_compound(data)
    trailer = compound.srtcp_trailer
    assert trailer is not None and (trailer.encrypted_flag, trailer.index) == (True, 41)
    assert trailer.tag_length == tag and compound.consumed_length == len(data)
    (first,) = compound.packets
    assert (first.packet_type, first.ssrc, first.length) == (200, 0x1234, len(SR))
    assert not first.body_decoded and not compound.body_decoded


@pytest.mark.parametrize(("tag", "aead"), [(10, False), (4, False), (16, True)])
def test_authenticated_only_srtcp_is_decoded(tag: int, aead: bool) -> None:
    data = srtcp(SR + SDES + BYE, encrypted=False, index=0x7FFFFFFF, tag=tag, aead=aead)
    compound = parse_rtcp_compound(data)
    assert compound.srtcp_trailer is not None
    assert (compound.srtcp_trailer.encrypted_flag, compound.srtcp_trailer.index) == (
        False, 0x7FFFFFFF,
    )  # fmt: skip
    assert compound.srtcp_trailer.tag_length == tag
    assert [p.name for p in compound.packets] == ["SR", "SDES", "BYE"] and compound.body_decoded


# --- real captures ------------------------------------------------------------------------------


def udp_payloads(path: Path) -> dict[int, bytes]:
    """UDP payloads by 1-based frame number (Ethernet or Linux cooked v1)."""
    payloads = {}
    with path.open("rb") as handle:
        magic = handle.read(4)
        handle.seek(0)
        reader = dpkt.pcapng.Reader(handle) if magic == b"\n\r\r\n" else dpkt.pcap.Reader(handle)
        link = reader.datalink()
        for number, (_, frame) in enumerate(reader, start=1):
            ip = (dpkt.ethernet.Ethernet(frame) if link == 1 else dpkt.sll.SLL(frame)).data
            if isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6) and isinstance(ip.data, dpkt.udp.UDP):
                payloads[number] = bytes(ip.data.data)
    return payloads


def capture(name: str) -> Path:
    path = CORPUS / name
    if not path.exists():
        pytest.skip(f"corpus capture {name} absent")
    return path


def tshark_fields(path: Path, display_filter: str, fields: list[str]) -> list[list[str]]:
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    command = ["tshark", "-r", str(path), "--enable-heuristic", "rtcp_udp", "-Y", display_filter,
               "-T", "fields", "-E", "separator=/t", "-E", "aggregator=,"]  # fmt: skip
    for field in fields:
        command += ["-e", field]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return [line.split("\t") for line in output.splitlines()]


def ints(text: str, base: int = 10) -> list[int]:
    return [int(value, base) for value in text.split(",") if value]


@pytest.mark.parametrize(
    "name", ["ndpi/rtcp_multiple_pkts_in_the_same_datagram.pcap", "sngrep/aaa.pcap"]
)
def test_compounds_match_tshark(name: str) -> None:
    path = capture(name)
    payloads = udp_payloads(path)
    fields = ["frame.number", "rtcp.pt", "rtcp.length", "rtcp.timestamp.ntp.msw",
              "rtcp.timestamp.ntp.lsw", "rtcp.timestamp.rtp", "rtcp.sender.packetcount",
              "rtcp.sender.octetcount", "rtcp.ssrc.fraction", "rtcp.ssrc.cum_nr",
              "rtcp.ssrc.ext_high", "rtcp.ssrc.jitter", "rtcp.ssrc.lsr", "rtcp.ssrc.dlsr",
              "rtcp.sdes.type"]  # fmt: skip
    rows = tshark_fields(path, "rtcp", fields)
    assert rows
    for frame, pts, lengths, msw, lsw, rtp_ts, packets, octets, *blocks, sdes_types in rows:
        compound = parse_rtcp_compound(payloads[int(frame)])
        assert compound.consumed_length == len(payloads[int(frame)])
        assert [p.packet_type for p in compound.packets] == ints(pts)
        assert [p.length_words for p in compound.packets] == ints(lengths)
        senders = [p.body.sender_info for p in compound.packets if isinstance(p.body, SenderReport)]
        assert [s.ntp_timestamp >> 32 for s in senders] == ints(msw)
        assert [s.ntp_timestamp & 0xFFFFFFFF for s in senders] == ints(lsw)
        assert [(s.rtp_timestamp, s.packet_count, s.octet_count) for s in senders] == list(
            zip(ints(rtp_ts), ints(packets), ints(octets), strict=True)
        )
        report_blocks = [
            (b.fraction_lost, b.cumulative_lost, b.highest_seq, b.jitter, b.lsr, b.dlsr)
            for p in compound.packets
            if isinstance(p.body, SenderReport | ReceiverReport)
            for b in p.body.report_blocks
        ]
        assert report_blocks == list(zip(*(ints(column) for column in blocks), strict=True))
        sdes = [i.item_type for p in compound.packets if isinstance(p.body, SourceDescription)
                for c in p.body.chunks for i in c.items]  # fmt: skip
        assert sdes == [t for t in ints(sdes_types) if t != 0]  # tshark also lists END (0)


def test_sdes_text_and_bye_reason_in_sngrep_capture() -> None:
    compound = parse_rtcp_compound(udp_payloads(capture("sngrep/aaa.pcap"))[633])
    sdes, bye = compound.packets[1].body, compound.packets[2].body
    assert isinstance(sdes, SourceDescription) and isinstance(bye, Goodbye)
    # tshark shows CNAME "11894297-4432a9f8@192.168.1.2", TOOL "SIPPS", BYE "session shutdown"
    assert [(i.item_type, i.text) for i in sdes.chunks[0].items] == [
        (1, "11894297-4432a9f8@192.168.1.2"), (6, "SIPPS"),
    ]  # fmt: skip
    assert sdes.cnames == ((0x3796CB71, "11894297-4432a9f8@192.168.1.2"),)
    assert bye.reason == "session shutdown" and bye.ssrcs == (0x3796CB71,)


def test_google_meet_srtcp_trailer_matches_negotiated_aead_profile() -> None:
    """stun_dtls_rtp: the DTLS ServerHello picks SRTP_AEAD_AES_256_GCM (0x0008), so SRTCP must
    carry a 16-byte tag before E|index. Frame 24 is a 40-byte XR (PT 207) datagram."""
    path = capture("ndpi/stun_dtls_rtp.pcapng")
    profiles = tshark_fields(path, "dtls.handshake.type == 2", ["dtls.use_srtp.protection_profile"])
    assert [int(row[0], 16) for row in profiles] == [0x0008]
    compound = parse_rtcp_compound(udp_payloads(path)[24])
    assert compound.srtcp_trailer is not None
    assert (compound.srtcp_trailer.tag_length, compound.srtcp_trailer.encrypted_flag) == (16, True)
    assert compound.srtcp_trailer.index == 1
    assert [p.packet_type for p in compound.packets] == [207] and not compound.body_decoded


def test_discord_rtcp_has_the_aead_trailer_shape() -> None:
    """nDPI labels the 150.219.118.19:54234 flow Discord. Its RTCP (RTPFB, FMT 15, frames 56/65/79)
    leaves 20 bytes after the clear first packet: read as an RFC 7714 trailer (16-byte tag,
    E=1). Discord appends its own nonce counter there, so `index` is that counter, not an
    SRTCP index: across frames only its top byte changes (0xee, 0xf1, 0xf5)."""
    payloads = udp_payloads(capture("ndpi/rtp.pcapng"))
    trailers = [parse_rtcp_compound(payloads[frame]).srtcp_trailer for frame in (56, 65, 79)]
    assert all(t is not None and t.tag_length == 16 and t.encrypted_flag for t in trailers)
    assert [t.index & 0x00FFFFFF for t in trailers if t] == [0x350180] * 3


def test_every_rtcp_looking_corpus_payload_parses() -> None:
    checked = 0
    for name in ("ndpi/rtp.pcapng", "ndpi/stun_dtls_rtp.pcapng", "sngrep/aaa.pcap",
                 "ndpi/rtcp_multiple_pkts_in_the_same_datagram.pcap"):  # fmt: skip
        for payload in udp_payloads(capture(name)).values():
            if looks_like_rtcp(payload):
                compound = parse_rtcp_compound(payload)
                assert compound.consumed_length == len(payload)
                checked += 1
    assert checked == 5 + 1 + 1 + 3  # rtcp_multiple 5, aaa 1, Google 1, Discord 3


# --- fuzzing ------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_parse_fuzz_raises_only_decode_error(data: bytes) -> None:
    assert looks_like_rtcp(data) in (True, False)
    try:
        compound = parse_rtcp_compound(data)
    except DecodeError:
        assert not looks_like_rtcp(data)
        return
    assert 0 < compound.consumed_length <= len(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60), st.integers(0, 2**31 - 1), st.sampled_from([4, 10, 16]),
       st.booleans())  # fmt: skip
def test_srtcp_fuzz_on_a_valid_first_header(tail: bytes, index: int, tag: int, enc: bool) -> None:
    data = srtcp(SR + tail[: len(tail) // 4 * 4], enc, index, tag, aead=tag == 16)
    compound = parse_rtcp_compound(data)
    assert compound.packets[0].packet_type == 200
