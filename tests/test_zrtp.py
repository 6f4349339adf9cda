"""ZRTP decoder: packets built from RFC 6189 §5 figures, CRC-32C vectors, tshark cross-check."""

from __future__ import annotations

import contextlib
import shutil
import struct
import subprocess
from pathlib import Path

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.decode.zrtp import crc32c, looks_like_zrtp, parse_zrtp
from analyzer.errors import DecodeError

TSHARK = shutil.which("tshark")


def zrtp_packet(
    type_block: bytes,
    body: bytes = b"",
    sequence: int = 1,
    ssrc: int = 0xDEADBEEF,
    preamble: int = 0x505A,
    length_words: int | None = None,
) -> bytes:
    """RFC 6189 Figure 2 packet around a Figure 3 message; CRC-32C appended low byte first
    (RFC 4960 Appendix B placement, as ZRTP uses it)."""
    assert len(type_block) == 8 and len(body) % 4 == 0
    words = 3 + len(body) // 4 if length_words is None else length_words
    header = struct.pack("!BBH", 0x10, 0, sequence) + b"ZRTP" + struct.pack("!I", ssrc)
    message = struct.pack("!HH", preamble, words) + type_block + body
    packet = header + message
    return packet + crc32c(packet).to_bytes(4, "little")


def hello_body() -> bytes:
    """Hello message fields after the type block (RFC 6189 §5.2): version, client id, H3,
    ZID, flags and counts (one hash, cipher, auth tag, key agreement, SAS), MAC."""
    # |0|S|M|P| unused (8) | hc (4) | cc (4) | ac (4) | kc (4) | sc (4) |, one of each
    counts = struct.pack("!BBBB", 0x00, 0x01, 0x11, 0x11)
    algorithms = b"S256" + b"AES1" + b"HS32" + b"EC25" + b"B32 "
    identity = b"confscope-test  " + bytes(32) + bytes(range(12))
    return b"1.10" + identity + counts + algorithms + bytes(8)


def commit_body() -> bytes:
    """Commit (RFC 6189 §5.4, DH mode): H2 (8 words), ZID (3), hash, cipher, auth tag, key
    agreement and SAS types (1 each), hvi (8), MAC (2): 29 words with the message header."""
    return bytes(32) + bytes(12) + b"S256AES1HS32EC25B32 " + bytes(32) + bytes(8)


# --- CRC-32C ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"123456789", 0xE3069283),  # CRC catalogue check value for CRC-32/ISCSI
        (bytes(32), 0x8A9136AA),  # RFC 3720 B.4: 32 bytes of zeros
        (b"\xff" * 32, 0x62A8AB43),  # RFC 3720 B.4: 32 bytes of 0xFF
        (bytes(range(32)), 0x46DD794E),  # RFC 3720 B.4: incrementing bytes
        (b"", 0),
    ],
)
def test_crc32c_known_vectors(data: bytes, expected: int) -> None:
    assert crc32c(data) == expected


# --- spec-built packets -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("block", "name"),
    [
        (b"Hello   ", "Hello"),
        (b"HelloACK", "HelloACK"),
        (b"Commit  ", "Commit"),
        (b"DHPart1 ", "DHPart1"),
        (b"DHPart2 ", "DHPart2"),
        (b"Confirm1", "Confirm1"),
        (b"Conf2ACK", "Conf2ACK"),
        (b"GoClear ", "GoClear"),
    ],
)
def test_message_types(block: bytes, name: str) -> None:
    packet = parse_zrtp(zrtp_packet(block, bytes(8), sequence=513, ssrc=0x01020304))
    assert packet.message_type == name
    assert packet.is_known_type
    assert (packet.sequence, packet.ssrc) == (513, 0x01020304)
    assert packet.crc_valid


def test_hello_fields() -> None:
    data = zrtp_packet(b"Hello   ", hello_body(), sequence=7)
    assert looks_like_zrtp(data)
    packet = parse_zrtp(data)
    assert packet.message_type == "Hello"
    assert packet.message_length_words == (len(data) - 16) // 4
    assert packet.crc == int.from_bytes(data[-4:], "big")
    assert packet.crc_valid


def test_commit_is_29_words() -> None:
    assert parse_zrtp(zrtp_packet(b"Commit  ", commit_body())).message_length_words == 29


def test_helloack_is_three_words() -> None:
    # RFC 6189 §5.3: HelloACK is preamble/length word + 2-word type block only.
    data = zrtp_packet(b"HelloACK")
    assert len(data) == 12 + 12 + 4
    assert parse_zrtp(data).message_length_words == 3


def test_corrupted_byte_fails_crc() -> None:
    data = bytearray(zrtp_packet(b"Hello   ", hello_body()))
    data[40] ^= 0x01
    packet = parse_zrtp(bytes(data))
    assert packet.message_type == "Hello"
    assert not packet.crc_valid


def test_big_endian_crc_is_not_accepted() -> None:
    data = zrtp_packet(b"Commit  ", bytes(16))
    swapped = data[:-4] + data[-4:][::-1]
    assert not parse_zrtp(swapped).crc_valid


def test_bad_preamble_raises() -> None:
    with pytest.raises(DecodeError, match="preamble"):
        parse_zrtp(zrtp_packet(b"Hello   ", bytes(8), preamble=0x5050))


@pytest.mark.parametrize("words", [0, 2, 4, 6, 0xFFFF])
def test_length_mismatch_raises(words: int) -> None:
    with pytest.raises(DecodeError):
        parse_zrtp(zrtp_packet(b"Hello   ", bytes(8), length_words=words))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes(28),
        b"\x80\x00\x00\x01ZRTP" + bytes(20),  # RTP version 2, not ZRTP
        b"\x10\x00\x00\x01ZRTQ" + bytes(20),  # wrong cookie
        b"\x10\x00\x00\x01ZRTP" + bytes(4),  # too short for a message
    ],
)
def test_not_zrtp(data: bytes) -> None:
    assert not looks_like_zrtp(data)
    with pytest.raises(DecodeError):
        parse_zrtp(data)


def test_unknown_type_is_reported_not_raised() -> None:
    packet = parse_zrtp(zrtp_packet(b"Future  ", bytes(4)))
    assert packet.message_type == "Future"
    assert not packet.is_known_type


# --- tshark cross-check -----------------------------------------------------------------------


def _write_udp_pcap(path: Path, payloads: list[bytes], port: int = 5004) -> None:
    with path.open("wb") as handle:
        writer = dpkt.pcap.Writer(handle)
        for index, payload in enumerate(payloads):
            udp = dpkt.udp.UDP(sport=port, dport=port, data=payload, ulen=8 + len(payload))
            ip = dpkt.ip.IP(src=b"\x7f\0\0\1", dst=b"\x7f\0\0\2", p=17, data=udp)
            ip.len = 20 + len(bytes(udp))
            eth = dpkt.ethernet.Ethernet(src=bytes(6), dst=bytes(6), type=0x0800, data=ip)
            writer.writepkt(bytes(eth), ts=float(index))


@pytest.mark.skipif(TSHARK is None, reason="tshark not installed")
def test_agrees_with_tshark(tmp_path: Path) -> None:
    good = zrtp_packet(b"Hello   ", hello_body(), sequence=11)
    bad = bytearray(zrtp_packet(b"Commit  ", commit_body(), sequence=12))
    bad[30] ^= 0xFF
    packets = [good, bytes(bad), zrtp_packet(b"Conf2ACK", sequence=13)]
    capture = tmp_path / "zrtp.pcap"
    _write_udp_pcap(capture, packets)
    fields = ["zrtp.sequence", "zrtp.type", "zrtp.checksum", "zrtp.checksum.status"]
    command = [TSHARK or "tshark", "-r", str(capture), "-d", "udp.port==5004,rtp", "-T", "fields"]
    command += [arg for field in fields for arg in ("-e", field)]
    output = subprocess.run(command, capture_output=True, check=True, text=True).stdout
    rows = [line.split("\t") for line in output.splitlines()]
    assert len(rows) == len(packets)
    for (sequence, type_block, checksum, status), data in zip(rows, packets, strict=True):
        ours = parse_zrtp(data)
        assert int(sequence) == ours.sequence
        assert type_block.rstrip() == ours.message_type
        assert int(checksum, 16) == ours.crc
        # Wireshark's checksum status: 1 = good, 0 = bad.
        assert (status == "1") == ours.crc_valid
    assert [row[3] for row in rows] == ["1", "0", "1"]


# --- fuzz --------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_raw_bytes(data: bytes) -> None:
    _parse_or_decode_error(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.integers(0, 0xFFFF))
def test_fuzz_after_valid_header(tail: bytes, words: int) -> None:
    data = b"\x10\x00\x00\x01ZRTP\x00\x00\x00\x01" + struct.pack("!HH", 0x505A, words) + tail
    assert looks_like_zrtp(data) == (len(data) >= 28)
    _parse_or_decode_error(data)


def _parse_or_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        parse_zrtp(data)
