"""DNS decoder: messages built from RFC 1035 §4, real captures compared with tshark, fuzzing."""

from __future__ import annotations

import contextlib
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.decode.dns import (
    DnsAnswer,
    DnsQuestion,
    address_names,
    looks_like_dns,
    parse_dns,
    split_dns_tcp,
)
from analyzer.errors import DecodeError

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
TSHARK = shutil.which("tshark")
A, NS, CNAME, PTR, MX, TXT, AAAA = 1, 2, 5, 12, 15, 16, 28


# --- building messages (RFC 1035 §4.1) ---------------------------------------------------------


def encode_name(name: str) -> bytes:
    labels = [label.encode() for label in name.split(".") if label]
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"


def pointer(offset: int) -> bytes:
    return struct.pack("!H", 0xC000 | offset)


def header(ident: int, flags: int, qd: int, an: int, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", ident, flags, qd, an, ns, ar)


def question(name: bytes, qtype: int = A) -> bytes:
    return name + struct.pack("!HH", qtype, 1)


def record(name: bytes, rtype: int, ttl: int, rdata: bytes) -> bytes:
    return name + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata


RESPONSE = 0x8180  # QR, RD, RA, NOERROR
QUERY = 0x0100  # RD


def zoom_cname_response() -> bytes:
    """zoom.us A? -> CNAME zoomcn.zoom.us -> A 52.81.151.250, with compression pointers."""
    qname = encode_name("zoom.us")  # at offset 12
    target = b"\x06zoomcn" + pointer(12)  # "zoomcn" + pointer to zoom.us
    cname = record(pointer(12), CNAME, 60, target)
    target_offset = 12 + len(qname) + 4 + len(pointer(12)) + 10
    address = record(pointer(target_offset), A, 30, bytes([52, 81, 151, 250]))
    return header(0x1234, RESPONSE, 1, 2) + question(qname) + cname + address


# --- spec-built messages ------------------------------------------------------------------------


def test_query() -> None:
    data = header(0xBEEF, QUERY, 1, 0) + question(encode_name("log.zoom.us"))
    assert looks_like_dns(data)
    msg = parse_dns(data)
    assert (msg.id, msg.is_response, msg.opcode, msg.rcode) == (0xBEEF, False, 0, 0)
    assert msg.questions == (DnsQuestion("log.zoom.us", A),)
    assert msg.answers == ()


def test_labels_that_are_not_utf8_read_each_as_alone() -> None:
    """A bad byte sequence at a label's end is replaced there; it never swallows the dot."""
    labels = [b"caf\xc3", b"\xa9", b"\xe4\xb8", b"ok", b"\xff\xfe"]
    qname = b"".join(bytes([len(label)]) + label for label in labels) + b"\0"
    msg = parse_dns(header(1, QUERY, 1, 0) + question(qname))
    assert msg.questions[0].name == "caf\ufffd.\ufffd.\ufffd.ok.\ufffd\ufffd"


def test_cname_chain_with_compression() -> None:
    msg = parse_dns(zoom_cname_response())
    assert msg.is_response
    assert msg.answers == (
        DnsAnswer("zoom.us", CNAME, 60, "zoomcn.zoom.us"),
        DnsAnswer("zoomcn.zoom.us", A, 30, "52.81.151.250"),
    )
    assert address_names(msg) == {"52.81.151.250": ("zoom.us", "zoomcn.zoom.us")}


def test_aaaa_ptr_and_skipped_types() -> None:
    qname = encode_name("meet.example")
    v6 = bytes.fromhex("20014860486400050000000000000001")
    body = (
        record(pointer(12), MX, 10, struct.pack("!H", 5) + pointer(12))
        + record(pointer(12), AAAA, 20, v6)
        + record(pointer(12), TXT, 30, b"\x05hello")
        + record(encode_name("1.0.0.127.in-addr.arpa"), PTR, 40, encode_name("localhost"))
    )
    data = header(7, RESPONSE, 1, 4) + question(qname, AAAA) + body
    msg = parse_dns(data)
    assert msg.answers == (
        DnsAnswer("meet.example", AAAA, 20, "2001:4860:4864:5::1"),
        DnsAnswer("1.0.0.127.in-addr.arpa", PTR, 40, "localhost"),
    )
    assert address_names(msg) == {"2001:4860:4864:5::1": ("meet.example",)}


def test_address_names_long_chain_and_several_addresses() -> None:
    names = ["a.example", "b.example", "c.example"]
    answers = [record(encode_name(names[i]), CNAME, 1, encode_name(names[i + 1])) for i in (0, 1)]
    answers += [record(encode_name("c.example"), A, 1, bytes([10, 0, 0, n])) for n in (1, 2)]
    data = header(1, RESPONSE, 1, 4) + question(encode_name("A.Example")) + b"".join(answers)
    assert address_names(parse_dns(data)) == {
        "10.0.0.1": ("a.example", "b.example", "c.example"),
        "10.0.0.2": ("a.example", "b.example", "c.example"),
    }


def test_address_names_survives_cname_loop() -> None:
    loop = [
        record(encode_name("x.example"), CNAME, 1, encode_name("y.example")),
        record(encode_name("y.example"), CNAME, 1, encode_name("x.example")),
        record(encode_name("y.example"), A, 1, bytes([192, 0, 2, 1])),
    ]
    data = header(1, RESPONSE, 1, 3) + question(encode_name("x.example")) + b"".join(loop)
    assert address_names(parse_dns(data)) == {"192.0.2.1": ("x.example", "y.example")}


def test_rcode_nxdomain() -> None:
    data = header(9, 0x8183, 1, 0) + question(encode_name("local"), 6)
    msg = parse_dns(data)
    assert (msg.rcode, msg.questions) == (3, (DnsQuestion("local", 6),))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        header(1, QUERY, 1, 0),  # question missing
        header(1, QUERY, 1, 0) + b"\x03abc",  # name not terminated
        header(1, QUERY, 1, 0) + pointer(12) + b"\x00\x01\x00\x01",  # pointer to itself
        header(1, QUERY, 1, 0) + pointer(40) + b"\x00\x01\x00\x01" + bytes(30),  # forward
        header(1, QUERY, 1, 0) + b"\x40abc\x00\x00\x01\x00\x01",  # reserved label type 01
        header(1, QUERY, 1, 0) + (b"\x3f" + b"a" * 63) * 5 + b"\x00\x00\x01\x00\x01",  # > 255
        header(1, RESPONSE, 1, 1) + question(encode_name("a")) + record(pointer(12), A, 1, b"\1"),
        header(1, RESPONSE, 0, 1) + encode_name("a") + struct.pack("!HHIH", A, 1, 1, 4) + b"\1",
    ],
)
def test_malformed_raises_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        parse_dns(data)


def test_looks_like_dns_rejects_other_protocols() -> None:
    assert not looks_like_dns(b"INVITE sip:bob@example.com SIP/2.0\r\n")
    assert not looks_like_dns(bytes(11))
    assert not looks_like_dns(header(1, 0x7800, 1, 0) + question(encode_name("a")))  # opcode 15
    assert not looks_like_dns(header(1, RESPONSE, 1, 200) + question(encode_name("a")))


# --- DNS over TCP (RFC 1035 §4.2.2) --------------------------------------------------------------


def test_split_dns_tcp_across_segments() -> None:
    first = header(1, QUERY, 1, 0) + question(encode_name("zoom.us"))
    second = zoom_cname_response()
    stream = b"".join(struct.pack("!H", len(m)) + m for m in (first, second))
    messages, rest = split_dns_tcp(stream[:5])
    assert (messages, rest) == ((), stream[:5])
    messages, rest = split_dns_tcp(rest + stream[5 : len(first) + 10])
    assert messages == (first,)
    messages, rest = split_dns_tcp(rest + stream[len(first) + 10 :])
    assert (messages, rest) == ((second,), b"")
    assert parse_dns(messages[0]).answers[1].value == "52.81.151.250"


def test_split_dns_tcp_zero_length_and_odd_byte() -> None:
    assert split_dns_tcp(b"\x00\x00\x00") == ((b"",), b"\x00")


# --- real captures against tshark ---------------------------------------------------------------


def read_frames(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as handle:
        magic = handle.read(4)
        handle.seek(0)
        reader = dpkt.pcapng.Reader(handle) if magic == b"\x0a\x0d\x0d\x0a" else None
        reader = reader or dpkt.pcap.Reader(handle)
        for number, (_, frame) in enumerate(reader, start=1):
            yield number, frame


def udp_payloads(path: Path) -> dict[int, bytes]:
    """Frame number -> UDP payload, for Ethernet IPv4/IPv6 frames."""
    payloads = {}
    for number, frame in read_frames(path):
        ip = dpkt.ethernet.Ethernet(frame).data
        if isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6) and isinstance(ip.data, dpkt.udp.UDP):
            payloads[number] = bytes(ip.data.data)
    return payloads


DNS_FIELDS = [
    "frame.number", "dns.id", "dns.flags.response", "dns.flags.rcode", "dns.qry.name",
    "dns.qry.type", "dns.count.answers", "dns.resp.name", "dns.resp.type", "dns.resp.ttl",
    "dns.a", "dns.aaaa", "dns.cname", "dns.ptr.domain_name",
]  # fmt: skip
VALUE_FIELD = {A: "dns.a", AAAA: "dns.aaaa", CNAME: "dns.cname", PTR: "dns.ptr.domain_name"}


def tshark_dns(path: Path) -> list[dict[str, list[str]]]:
    command = [TSHARK or "tshark", "-r", str(path), "-Y", "dns && udp", "-T", "fields"]
    command += ["-E", "aggregator=\x1f"] + [arg for f in DNS_FIELDS for arg in ("-e", f)]
    output = subprocess.run(command, capture_output=True, check=True, text=True).stdout
    rows = []
    for line in output.splitlines():
        cells = zip(DNS_FIELDS, line.split("\t"), strict=True)
        rows.append({field: (cell.split("\x1f") if cell else []) for field, cell in cells})
    return rows


def expected_answers(row: dict[str, list[str]]) -> list[DnsAnswer]:
    """The kept records among the first ANCOUNT resource records tshark lists (answers come
    before authority and additional records, and each value list keeps record order)."""
    values = {field: list(row[field]) for field in VALUE_FIELD.values()}
    count = int(row["dns.count.answers"][0]) if row["dns.count.answers"] else 0
    answers = []
    records = zip(row["dns.resp.name"], row["dns.resp.type"], row["dns.resp.ttl"], strict=False)
    for name, rtype, ttl in list(records)[:count]:
        if int(rtype) in VALUE_FIELD:
            value = values[VALUE_FIELD[int(rtype)]].pop(0)
            answers.append(DnsAnswer(name, int(rtype), int(ttl), value))
    return answers


@pytest.mark.skipif(TSHARK is None, reason="tshark not installed")
@pytest.mark.parametrize("name", ["sngrep/aaa.pcap", "ndpi/zoom.pcap"])
def test_corpus_matches_tshark(name: str) -> None:
    path = CORPUS / name
    if not path.exists():
        pytest.skip(f"corpus file {path} absent")
    payloads = udp_payloads(path)
    rows = tshark_dns(path)
    assert rows, "tshark found no DNS"
    for row in rows:
        number = int(row["frame.number"][0])
        msg = parse_dns(payloads[number])
        assert looks_like_dns(payloads[number])
        assert msg.id == int(row["dns.id"][0], 16)
        assert msg.is_response == (row["dns.flags.response"] == ["1"])
        if msg.is_response:
            assert msg.rcode == int(row["dns.flags.rcode"][0])
        assert [q.name for q in msg.questions] == row["dns.qry.name"]
        assert [str(q.qtype) for q in msg.questions] == row["dns.qry.type"]
        assert list(msg.answers) == expected_answers(row), f"frame {number}"


def test_corpus_cname_chain_aaa() -> None:
    """sngrep/aaa.pcap frame 43: ftp.ecitele.com CNAME dns.ecitele.com A 147.234.1.253; the
    additional-section A 212.150.48.169 (name server glue) is not an answer."""
    path = CORPUS / "sngrep" / "aaa.pcap"
    if not path.exists():
        pytest.skip("corpus absent")
    msg = parse_dns(udp_payloads(path)[43])
    assert address_names(msg) == {"147.234.1.253": ("ftp.ecitele.com", "dns.ecitele.com")}


# --- fuzz ----------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_raw_bytes(data: bytes) -> None:
    looks_like_dns(data)
    with contextlib.suppress(DecodeError):
        address_names(parse_dns(data))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(zoom_cname_response()) - 1), st.integers(0, 255), st.integers(1, 80))
def test_fuzz_mutated_response(position: int, value: int, cut: int) -> None:
    data = bytearray(zoom_cname_response())
    data[position] = value
    for candidate in (bytes(data), bytes(data[:-cut])):
        with contextlib.suppress(DecodeError):
            address_names(parse_dns(candidate))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_tcp_split_reassembles(stream: bytes) -> None:
    messages, rest = split_dns_tcp(stream)
    rebuilt = b"".join(struct.pack("!H", len(m)) + m for m in messages) + rest
    assert rebuilt == stream
    assert len(rest) < 2 or struct.unpack("!H", rest[:2])[0] > len(rest) - 2
