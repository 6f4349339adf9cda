"""RTP decoder: RFC-built headers, RFC 9335 test vectors, tshark on real captures, fuzzing,
and agreement of the columnar fast path with the scalar parser."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import dpkt
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzer.decode.payload_types import static_clock_rate, static_payload_type
from analyzer.decode.rtcp import may_carry_srtcp_trailer, parse_rtcp_compound
from analyzer.decode.rtp import (
    be_uint,
    is_rtcp_packet_type,
    looks_like_rtp,
    parse_rtp,
    rtp_header_columns,
)
from analyzer.errors import DecodeError

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
# Capture -> how many frames tshark's RTP heuristic decodes there (so a silent empty run fails).
TSHARK_RTP_FRAMES = {
    "ndpi/rtp.pcapng": 40,
    "ndpi/stun_dtls_rtp.pcapng": 11,
    "ndpi/rtcp_multiple_pkts_in_the_same_datagram.pcap": 0,
    "sngrep/aaa.pcap": 9,
}
RTP_CAPTURES = tuple(TSHARK_RTP_FRAMES)


def rtp_bytes(
    *,
    pt: int = 0,
    marker: bool = False,
    seq: int = 1,
    ts: int = 160,
    ssrc: int = 0x11223344,
    csrcs: tuple[int, ...] = (),
    extension: tuple[int, bytes] | None = None,
    payload: bytes = b"",
    padding: int = 0,
) -> bytes:
    """An RTP packet laid out as in RFC 3550 §5.1 (extension: profile and body)."""
    first = 0x80 | (0x20 if padding else 0) | (0x10 if extension else 0) | len(csrcs)
    header = struct.pack("!BBHII", first, (0x80 if marker else 0) | pt, seq, ts, ssrc)
    header += b"".join(struct.pack("!I", c) for c in csrcs)
    if extension:
        profile, body = extension
        header += struct.pack("!HH", profile, len(body) // 4) + body
    pad = (b"\0" * (padding - 1) + bytes([padding])) if padding else b""
    return header + payload + pad


# --- built from the RFCs ------------------------------------------------------------------------


def test_fixed_header_with_csrcs_and_padding() -> None:
    data = rtp_bytes(pt=8, marker=True, seq=0xFFFE, ts=0xDEADBEEF, ssrc=7, csrcs=(1, 2),
                     payload=b"\xd5" * 160, padding=4)  # fmt: skip
    header = parse_rtp(data)
    assert (header.version, header.marker, header.payload_type) == (2, True, 8)
    assert (header.sequence_number, header.timestamp, header.ssrc) == (0xFFFE, 0xDEADBEEF, 7)
    assert header.csrcs == (1, 2) and header.csrc_count == 2
    assert header.header_length == header.payload_offset == 20
    assert (header.padding_length, header.payload_length) == (4, 160)
    assert header.extension_profile is None and header.extension_elements == ()


def test_one_byte_extension_elements_rfc8285() -> None:
    # ID 1 len 3 (L=2), a padding byte, ID 3 len 1, then ID 15 stops processing (§4.2).
    body = bytes([0x12, 0xAA, 0xBB, 0xCC, 0x00, 0x30, 0x01, 0xF0])
    header = parse_rtp(rtp_bytes(pt=98, extension=(0xBEDE, body), payload=b"x"))
    assert header.extension_profile == 0xBEDE
    assert header.extension_elements == ((1, b"\xaa\xbb\xcc"), (3, b"\x01"))
    assert header.payload_offset == 12 + 4 + 8 and header.payload_length == 1


def test_two_byte_extension_elements_with_appbits() -> None:
    body = bytes([0x00, 0x07, 0x00, 0x20, 0x03, 1, 2, 3])  # padding, empty ID 7, ID 32 len 3
    header = parse_rtp(rtp_bytes(pt=111, extension=(0x1005, body)))
    assert header.extension_elements == ((7, b""), (32, b"\x01\x02\x03"))


@pytest.mark.parametrize(
    ("plain", "protected", "csrcs"),
    [
        # RFC 9335 Appendix A test vectors (plaintext and cryptex-protected RTP).
        ("900f1235decafbadcafebabebede000151000200abababababababababababababababab",
         "900f1235decafbadcafebabec0de0001eb92365251c3e036f8de27e9c27ee3e0b4651d9fbc4218a70244522f34a5",
         ()),
        ("900f1236decafbadcafebabe1000000105020002abababababababababababababababab",
         "900f1236decafbadcafebabec2de00014ed9cc4e6a712b3096c5ca77339d4204ce0d77396cab69585fbce38194a5",
         ()),
        ("920f1238decafbadcafebabe0001e2400000b26ebede000151000200abababababababababababababababab",
         "920f1238decafbadcafebabe8bb6e12b5cff16ddc0de000192838c8c09e58393e1de3a9a74734d6745671338c3acf11da2df8423bee0",
         (0x0001E240, 0x0000B26E)),
    ],
)  # fmt: skip
def test_cryptex_vectors_rfc9335(plain: str, protected: str, csrcs: tuple[int, ...]) -> None:
    clear = parse_rtp(bytes.fromhex(plain))
    assert clear.extension_elements == ((5, b"\x00\x02"),) and not clear.cryptex
    assert clear.csrcs == csrcs
    hidden = parse_rtp(bytes.fromhex(protected))
    assert hidden.cryptex and hidden.extension_profile in (0xC0DE, 0xC2DE)
    assert hidden.extension_elements == () and hidden.csrcs == ()
    assert hidden.csrc_count == len(csrcs)
    assert (hidden.sequence_number, hidden.ssrc) == (clear.sequence_number, clear.ssrc)
    assert hidden.payload_offset == clear.payload_offset


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x80\x00" + b"\0" * 9, "fixed header"),
        (b"\x40" + b"\0" * 11, "version"),
        (rtp_bytes(pt=72, marker=True), "RTCP packet type"),  # second byte 200 = SR
        (rtp_bytes(csrcs=(1,))[:14], "CSRC"),
        (rtp_bytes(extension=(0xBEDE, b"\x10\0\0\0"))[:15], "extension header"),
        (rtp_bytes(extension=(0xBEDE, b"\x10\0\0\0"))[:19], "overruns"),
        (rtp_bytes(payload=b"abc", padding=1)[:-1] + b"\x00", "padding"),
        (rtp_bytes(payload=b"abc", padding=1)[:-1] + b"\x09", "padding"),
    ],
)
def test_malformed_headers_raise_decode_error(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        parse_rtp(data)
    assert not looks_like_rtp(data)


def test_rfc5761_demultiplexing_boundaries() -> None:
    assert [is_rtcp_packet_type(b) for b in (191, 192, 200, 223, 224)] == [
        False, True, True, True, False,
    ]  # fmt: skip
    assert looks_like_rtp(rtp_bytes(pt=96, marker=True))  # second byte 224: RTP
    assert not looks_like_rtp(rtp_bytes(pt=72))  # reserved for RTCP conflict avoidance
    assert parse_rtp(rtp_bytes(pt=72)).payload_type == 72  # syntactically still RTP


def test_static_payload_type_table() -> None:
    assert static_clock_rate(0) == 8000 and static_clock_rate(9) == 8000  # G.722 quirk
    assert static_clock_rate(34) == 90000 and static_clock_rate(96) is None
    assert static_clock_rate(72) is None and static_clock_rate(19) is None
    entry = static_payload_type(10)
    assert entry is not None and (entry.encoding, entry.channels) == ("L16", 2)
    h261 = static_payload_type(31)
    assert h261 is not None and (h261.encoding, h261.media) == ("H261", "video")


# --- real captures against tshark ----------------------------------------------------------------


def udp_payloads(path: Path) -> dict[int, bytes]:
    """UDP payloads by 1-based frame number (Ethernet, VLAN, Linux cooked v1)."""
    payloads = {}
    with path.open("rb") as handle:
        magic = handle.read(4)
        handle.seek(0)
        reader = dpkt.pcapng.Reader(handle) if magic == b"\n\r\r\n" else dpkt.pcap.Reader(handle)
        link = reader.datalink()
        for number, (_, frame) in enumerate(reader, start=1):
            packet = dpkt.ethernet.Ethernet(frame) if link == 1 else dpkt.sll.SLL(frame)
            ip = packet.data
            if isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6) and isinstance(ip.data, dpkt.udp.UDP):
                payloads[number] = bytes(ip.data.data)
    return payloads


def tshark_rows(path: Path, fields: list[str], display_filter: str) -> list[list[str]]:
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    command = ["tshark", "-r", str(path), "--enable-heuristic", "rtp_udp", "--enable-heuristic",
               "rtcp_udp", "-Y", display_filter, "-T", "fields", "-E", "separator=/t"]  # fmt: skip
    for field in fields:
        command += ["-e", field]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return [line.split("\t") for line in output.splitlines()]


def capture(name: str) -> Path:
    path = CORPUS / name
    if not path.exists():
        pytest.skip(f"corpus capture {name} absent")
    return path


@pytest.mark.parametrize("name", RTP_CAPTURES)
def test_rtp_headers_match_tshark(name: str) -> None:
    path = capture(name)
    payloads = udp_payloads(path)
    fields = ["frame.number", "rtp.ssrc", "rtp.seq", "rtp.timestamp", "rtp.p_type",
              "rtp.marker", "rtp.ext.profile", "rtp.padding.count"]  # fmt: skip
    rows = tshark_rows(path, fields, "rtp and udp and not icmp")
    checked = 0
    for frame, ssrc, seq, ts, pt, marker, profile, pad in rows:
        header = parse_rtp(payloads[int(frame)])
        assert header.ssrc == int(ssrc, 16) and header.sequence_number == int(seq)
        assert header.timestamp == int(ts) and header.payload_type == int(pt)
        assert header.marker == (marker in ("1", "True"))
        assert header.extension_profile == (int(profile, 16) if profile else None)
        assert header.padding_length == (int(pad) if pad else 0)
        assert looks_like_rtp(payloads[int(frame)])
        checked += 1
    assert checked >= TSHARK_RTP_FRAMES[name]


def test_corpus_udp_payloads_vectorized_agree() -> None:
    payloads = [p for name in RTP_CAPTURES for p in udp_payloads(capture(name)).values()]
    assert len(payloads) > 300
    assert_columns_agree(payloads, columns=16)
    assert_columns_agree(payloads, columns=40)


# --- fuzzing and scalar/columnar agreement -------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_parse_rtp_fuzz_raises_only_decode_error(data: bytes) -> None:
    try:
        header = parse_rtp(data)
    except DecodeError:
        return
    assert header.payload_offset + header.payload_length + header.padding_length == len(data)
    assert looks_like_rtp(data) in (True, False)


rtp_like = st.builds(
    lambda first, second, rest: bytes([first, second]) + rest,
    st.integers(0x70, 0xC0),
    st.integers(0, 255),
    st.binary(min_size=0, max_size=60),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(rtp_like, st.binary(max_size=40)), min_size=1, max_size=40),
       st.sampled_from([16, 17, 20, 24, 40]), st.booleans())
def test_vectorized_agrees_with_scalar_on_random_input(payloads: list[bytes], columns: int,
                                                       fortran: bool) -> None:
    """Any width (extension length fields beyond 16 columns) and memory layout."""
    assert_columns_agree(payloads, columns, fortran)


def head_matrix(payloads: list[bytes], columns: int) -> tuple[np.ndarray, np.ndarray]:
    head = np.zeros((len(payloads), columns), np.uint8)
    for row, payload in enumerate(payloads):
        chunk = payload[:columns]
        head[row, : len(chunk)] = np.frombuffer(chunk, np.uint8)
    return head, np.array([len(p) for p in payloads], np.int64)


def assert_columns_agree(payloads: list[bytes], columns: int, fortran: bool = False) -> None:
    head, length = head_matrix(payloads, columns)
    cols = rtp_header_columns(np.asfortranarray(head) if fortran else head, length)
    for row, payload in enumerate(payloads):
        try:
            header = parse_rtp(payload)
        except DecodeError as error:
            # Only what lies beyond the K columns may differ: the padding count (last byte)
            # and an extension block whose length field is not among the K columns.
            if cols.valid[row]:
                beyond = "padding" in str(error) or cols.payload_offset[row] == -1
                assert beyond, (payload.hex(), str(error))
            continue
        assert cols.valid[row], payload.hex()
        assert cols.payload_type[row] == header.payload_type
        assert cols.marker[row] == header.marker and cols.extension[row] == header.extension
        assert cols.sequence_number[row] == header.sequence_number
        assert cols.timestamp[row] == header.timestamp and cols.ssrc[row] == header.ssrc
        assert cols.csrc_count[row] == header.csrc_count and cols.padding[row] == header.padding
        assert cols.header_length_min[row] == header.header_length
        assert cols.payload_offset[row] in (header.payload_offset, -1)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 6), st.integers(1, 24), st.integers(0, 23), st.sampled_from([1, 2, 3, 4, 8]),
       st.booleans(), st.integers(0, 2**32 - 1))
def test_be_uint_reads_each_layout(rows: int, columns: int, column: int, size: int,
                                   fortran: bool, seed: int) -> None:
    """Big-endian fields at any column, aligned or not, of C or Fortran ordered matrices."""
    if column + size > columns:
        return
    head = np.random.default_rng(seed).integers(0, 256, (rows, columns), dtype=np.uint8)
    want = [int.from_bytes(bytes(row[column : column + size]), "big") for row in head.tolist()]
    got = be_uint(np.asfortranarray(head) if fortran else head, column, size)
    assert got.dtype == np.int64 and got.astype(np.uint64).tolist() == want


def rtcp_packet(count: int, packet_type: int, body: bytes) -> bytes:
    body = body[: len(body) // 4 * 4]
    return bytes([0x80 | count, packet_type]) + (len(body) // 4).to_bytes(2, "big") + body


rtcp_packets = st.builds(rtcp_packet, st.integers(0, 31), st.integers(192, 223),
                         st.binary(min_size=4, max_size=60))


@settings(max_examples=500, deadline=None)
@given(st.lists(rtcp_packets, max_size=4), st.binary(max_size=24) | st.just(b""))
def test_rtcp_filling_its_datagram_has_no_srtcp_trailer(packets: list[bytes], tail: bytes) -> None:
    """The media path parses a sampled RTCP datagram only when it may carry an SRTCP trailer
    (`may_carry_srtcp_trailer`); skipping the others changes nothing: they have none."""
    data = b"".join(packets) + tail
    assert tail or not may_carry_srtcp_trailer(data)  # packets alone fill the datagram
    if may_carry_srtcp_trailer(data):
        return
    try:
        compound = parse_rtcp_compound(data)
    except DecodeError:
        return
    assert compound.srtcp_trailer is None and compound.consumed_length == len(data)


def test_srtcp_trailer_is_looked_for_after_the_compound() -> None:
    report = rtcp_packet(0, 201, bytes(4))
    trailer = (0x8000_0001).to_bytes(4, "big") + bytes(10)  # E flag, index 1, HMAC-SHA1-80 tag
    assert not may_carry_srtcp_trailer(report)
    assert may_carry_srtcp_trailer(report + trailer)
    assert parse_rtcp_compound(report + trailer).srtcp_trailer is not None


def test_columns_reject_bad_shapes() -> None:
    with pytest.raises(ValueError):
        rtp_header_columns(np.zeros((3, 8), np.uint8), np.zeros(3))
