"""SIP decoder and TCP splitter: messages written from RFC 3261 / RFC 4568 / RFC 8842, real
captures compared with tshark, and fuzzing."""

from __future__ import annotations

import base64
import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.decode.sdp import RtpMap
from analyzer.decode.sip import MAX_BUFFER, SipStreamSplitter, looks_like_sip, parse_sip
from analyzer.errors import DecodeError

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
TSHARK = shutil.which("tshark")
SRTP_KEY = base64.b64encode(bytes(range(100, 130))).decode()  # 16-byte key + 14-byte salt


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


def with_body(head: str, body: bytes) -> bytes:
    return crlf(head.replace("{length}", str(len(body)))) + body


SDES_SDP = crlf(f"""v=0
o=alice 2890844526 2890844526 IN IP4 198.51.100.1
s=-
c=IN IP4 198.51.100.1
t=0 0
m=audio 49170 RTP/SAVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{SRTP_KEY}|2^31
""")

INVITE = with_body(
    """INVITE sip:bob@biloxi.example.com SIP/2.0
Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds
Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bK1, SIP/2.0/TCP edge.example.com;branch=z9hG4bK2
Max-Forwards: 70
To: Bob <sip:bob@biloxi.example.com>
From: "Alice, A." <sip:alice@atlanta.example.com>;tag=1928301774
Call-ID: a84b4c76e66710@pc33.atlanta.example.com
CSeq: 314159 INVITE
Contact: <sip:alice@pc33.atlanta.example.com>
User-Agent: confscope-test/1.0
Content-Type: application/sdp
Content-Length: {length}

""",
    SDES_SDP,
)

FINGERPRINT = ":".join(f"{byte:02X}" for byte in range(32))
WEBRTC_SDP = crlf(f"""v=0
o=- 1 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0
m=audio 9 UDP/TLS/RTP/SAVPF 111
c=IN IP4 203.0.113.5
a=ice-ufrag:F7gI
a=fingerprint:sha-256 {FINGERPRINT}
a=setup:passive
a=rtcp-mux
a=rtpmap:111 opus/48000/2
""")

OK_200 = with_body(
    """SIP/2.0 200 OK
v: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK56sdasks
t: <sip:bob@example.com>;tag=b-98765
f: Alice <sip:alice@example.com>
 ;tag=a-12345
i: folded-call-id@example.com
CSeq: 2 INVITE
m: <sip:bob@203.0.113.5:5060;transport=ws>
Server: example-gateway 4.2
c: application/sdp
l: {length}

""",
    WEBRTC_SDP,
)


# --- spec-built messages -------------------------------------------------------------------------


def test_invite_with_sdes_offer() -> None:
    assert looks_like_sip(INVITE)
    msg = parse_sip(INVITE)
    assert msg.is_request and msg.method == "INVITE"
    assert msg.request_uri == "sip:bob@biloxi.example.com"
    assert msg.status_code is None and msg.reason is None
    assert msg.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert msg.from_uri == "sip:alice@atlanta.example.com" and msg.from_tag == "1928301774"
    assert msg.to_uri == "sip:bob@biloxi.example.com" and msg.to_tag is None
    assert msg.cseq == (314159, "INVITE")
    assert msg.via == (
        "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds",
        "SIP/2.0/UDP proxy.example.com;branch=z9hG4bK1",
        "SIP/2.0/TCP edge.example.com;branch=z9hG4bK2",
    )
    assert msg.contact == "<sip:alice@pc33.atlanta.example.com>"
    assert msg.user_agent == "confscope-test/1.0" and msg.server is None
    assert msg.content_type == "application/sdp"
    assert msg.body == SDES_SDP
    assert msg.header("max-forwards") == "70" and msg.header("i") == msg.call_id
    assert msg.sdp is not None
    (audio,) = msg.sdp.media
    assert (audio.port, audio.proto, audio.is_srtp_profile) == (49170, "RTP/SAVP", True)
    assert audio.rtpmap == {
        0: RtpMap("PCMU", 8000, None),
        101: RtpMap("telephone-event", 8000, None),
    }
    (crypto,) = audio.crypto
    assert (crypto.suite, crypto.key_bytes_len, crypto.lifetime) == (
        "AES_CM_128_HMAC_SHA1_80", 30, "2^31",
    )  # fmt: skip
    assert crypto.key_params == f"inline:{SRTP_KEY}|2^31"


def test_200_ok_compact_folded_webrtc() -> None:
    assert looks_like_sip(OK_200)
    msg = parse_sip(OK_200)
    assert not msg.is_request
    assert (msg.status_code, msg.reason, msg.method) == (200, "OK", None)
    names = [name for name, _ in msg.headers]
    assert names == [
        "Via", "To", "From", "Call-ID", "CSeq", "Contact", "Server", "Content-Type",
        "Content-Length",
    ]  # fmt: skip
    assert msg.header("From") == "Alice <sip:alice@example.com> ;tag=a-12345"
    assert (msg.from_tag, msg.to_tag) == ("a-12345", "b-98765")
    assert msg.call_id == "folded-call-id@example.com"
    assert msg.via == ("SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK56sdasks",)
    assert msg.server == "example-gateway 4.2"
    assert msg.sdp is not None
    (audio,) = msg.sdp.media
    assert audio.fingerprint == ("sha-256", FINGERPRINT)
    assert (audio.setup, audio.ice_ufrag, audio.rtcp_mux) == ("passive", "F7gI", True)
    assert audio.connection_address == "203.0.113.5"
    assert audio.crypto == ()


def test_addr_spec_without_angle_brackets() -> None:
    data = crlf(
        "BYE sip:bob@192.0.2.4 SIP/2.0\nFrom: sip:alice@atlanta.example.com;tag=88sja8x\n"
        "To: sip:bob@biloxi.example.com\nCSeq: 231 BYE\nCall-ID: x\n\n"
    )
    msg = parse_sip(data)
    assert (msg.from_uri, msg.from_tag) == ("sip:alice@atlanta.example.com", "88sja8x")
    assert (msg.to_uri, msg.to_tag) == ("sip:bob@biloxi.example.com", None)
    assert msg.body == b"" and msg.sdp is None


def test_content_length_limits_body() -> None:
    data = with_body("MESSAGE sip:a@b SIP/2.0\nContent-Type: text/plain\nl: 5\n\n", b"hello!!!")
    assert parse_sip(data).body == b"hello"


def test_non_ascii_content_length_is_ignored() -> None:
    data = with_body("MESSAGE sip:a@b SIP/2.0\nContent-Length: ²\n\n", b"hello")
    assert parse_sip(data).body == b"hello"


def test_missing_content_length_takes_rest_of_datagram() -> None:
    data = with_body("MESSAGE sip:a@b SIP/2.0\nContent-Type: text/plain\n\n", b"hello")
    assert parse_sip(data).body == b"hello"


def multipart(boundary: str, header_boundary: str) -> bytes:
    parts = (
        f"--{boundary}\r\nContent-Type: application/isup;version=itu-t92+\r\n\r\n"
    ).encode() + b"\x01\x00\x49\x00\r\n"
    parts += f"--{boundary}\r\nContent-Type: application/SDP\r\n\r\n".encode() + SDES_SDP
    parts += f"\r\n--{boundary}--\r\n".encode()
    head = (
        "INVITE sip:+15551234567@gw.example.com;user=phone SIP/2.0\nCall-ID: mp@example.com\n"
        f"Content-Type: multipart/mixed; {header_boundary}\nMIME-Version: 1.0\n"
        "Content-Length: {length}\n\n"
    )
    return with_body(head, parts)


@pytest.mark.parametrize(
    ("boundary", "param"),
    [
        ("unique-boundary-1", "boundary=unique-boundary-1"),
        ("b1=x'(),./:?", 'boundary="b1=x\'(),./:?"'),  # quoted, RFC 2046 bchars
        ("simple", "charset=utf-8;boundary=simple"),
    ],
)
def test_multipart_body_with_sdp(boundary: str, param: str) -> None:
    msg = parse_sip(multipart(boundary, param))
    assert msg.content_type is not None and msg.content_type.startswith("multipart/mixed")
    assert msg.sdp is not None
    assert msg.sdp.media[0].port == 49170
    assert msg.sdp.media[0].crypto[0].key_bytes_len == 30


def test_multipart_without_sdp_part() -> None:
    body = b"--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n--x--\r\n"
    head = "NOTIFY sip:a@b SIP/2.0\nContent-Type: multipart/mixed;boundary=x\nl: {length}\n\n"
    assert parse_sip(with_body(head, body)).sdp is None


def test_bad_sdp_body_keeps_message() -> None:
    data = with_body("INVITE sip:a@b SIP/2.0\nc: application/sdp\nl: {length}\n\n", b"garbage")
    msg = parse_sip(data)
    assert msg.body == b"garbage" and msg.sdp is None


@pytest.mark.parametrize(
    "data",
    [
        b"REGISTER sip:registrar.example.com SIP/2.0\r\n\r\n",
        b"SIP/2.0 180 Ringing\r\n\r\n",
        b"SIP/2.0 401 Unauthorized\r\nCSeq: 1 REGISTER\r\n\r\n",
        b"OPTIONS sips:carol@chicago.example.com SIP/2.0\n\n",
        b"NOTIFY tel:+15551234567 SIP/2.0\r\n\r\n",
    ]
    + [f"{m} sip:x@y SIP/2.0\r\n\r\n".encode() for m in ("PRACK", "UPDATE", "REFER", "INFO")],
)
def test_looks_like_sip_accepts(data: bytes) -> None:
    assert looks_like_sip(data)
    parse_sip(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello",
        b"GET /index.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"HTTP/1.1 403 Forbidden\r\n\r\n",
        b"OPTIONS rtsp://example.com/media RTSP/1.0\r\n\r\n",
        b"INVITE http://example.com SIP/2.0\r\n\r\n",
        b"FOO sip:x@y SIP/2.0\r\n\r\n",
        b"invite sip:x@y SIP/2.0\r\n\r\n",
        b"SIP/2.0 2000 OK\r\n\r\n",
        b"SIP/2.0 099 Low\r\n\r\n",
        b"INVITE sip:x@y SIP/2.0",  # no line end
        b"\x00\x01INVITE sip:x@y SIP/2.0\r\n",
    ],
)
def test_not_sip(data: bytes) -> None:
    assert not looks_like_sip(data)
    with pytest.raises(DecodeError):
        parse_sip(data)


# --- SIP over TCP splitter -----------------------------------------------------------------------


def test_splitter_several_messages_one_segment_with_keepalives() -> None:
    splitter = SipStreamSplitter()
    stream = b"\r\n\r\n" + INVITE + b"\r\n" + OK_200 + INVITE
    assert splitter.feed(stream) == [INVITE, OK_200, INVITE]
    assert not splitter.overflowed


def test_splitter_message_across_segments_byte_by_byte() -> None:
    splitter = SipStreamSplitter()
    out: list[bytes] = []
    for index in range(len(INVITE)):
        out += splitter.feed(INVITE[index : index + 1])
        if index < len(INVITE) - 1:
            assert out == []
    assert out == [INVITE]


def test_splitter_without_content_length_means_no_body() -> None:
    ack = crlf("ACK sip:bob@example.com SIP/2.0\nCall-ID: x\nCSeq: 1 ACK\n\n")
    assert SipStreamSplitter().feed(ack + ack) == [ack, ack]


def test_splitter_overflow_is_bounded() -> None:
    splitter = SipStreamSplitter()
    assert splitter.feed(b"INVITE sip:x@y SIP/2.0\r\nX: " + b"a" * MAX_BUFFER) == []
    assert splitter.overflowed
    assert splitter.feed(INVITE) == []


@pytest.mark.parametrize("length", ["-1", "abc", str(MAX_BUFFER + 1)])
def test_splitter_unusable_content_length(length: str) -> None:
    splitter = SipStreamSplitter()
    assert splitter.feed(crlf(f"INVITE sip:x@y SIP/2.0\nContent-Length: {length}\n\n")) == []
    assert splitter.overflowed


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from([INVITE, OK_200, b"\r\n\r\n"]), min_size=1, max_size=6),
    st.lists(st.integers(1, 400), min_size=1, max_size=30),
)
def test_splitter_any_segmentation(items: list[bytes], sizes: list[int]) -> None:
    stream = b"".join(items)
    splitter, out, offset, index = SipStreamSplitter(), [], 0, 0
    while offset < len(stream):
        size = sizes[index % len(sizes)]
        out += splitter.feed(stream[offset : offset + size])
        offset, index = offset + size, index + 1
    assert out == [item for item in items if item != b"\r\n\r\n"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_fuzz_splitter(chunks: list[bytes]) -> None:
    splitter = SipStreamSplitter()
    for chunk in chunks:
        for message in splitter.feed(chunk):
            assert message
            with contextlib.suppress(DecodeError):
                parse_sip(message)


# --- fuzz parse_sip ------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_raw_bytes(data: bytes) -> None:
    looks_like_sip(data)
    with contextlib.suppress(DecodeError):
        parse_sip(data)


HEADER_LINE = st.one_of(
    st.text(max_size=60),
    st.sampled_from(
        [
            "f: <sip:a@b;tag=1", 'From: "x<,>" <sip:a@b>;tag=', "t:", "CSeq: x y z",
            "c: multipart/mixed;boundary=", "Content-Type: multipart/related; boundary=\"\"",
            "l: 99999999999", "Content-Length: -3", " folded", "v: a, b,, \"c,d\"",
        ]
    ),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["INVITE sip:a@b SIP/2.0", "SIP/2.0 200 OK", "SIP/2.0 100"]),
    st.lists(HEADER_LINE, max_size=8),
    st.binary(max_size=200),
)
def test_fuzz_structured(start: str, headers: list[str], body: bytes) -> None:
    data = "\r\n".join([start, *headers]).encode("utf-8", errors="replace") + b"\r\n\r\n" + body
    with contextlib.suppress(DecodeError):
        msg = parse_sip(data)
        assert msg.body in data and len(msg.headers) <= len(headers)


# --- real captures against tshark ----------------------------------------------------------------


def read_frames(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as handle:
        magic = handle.read(4)
        handle.seek(0)
        reader = dpkt.pcapng.Reader(handle) if magic == b"\x0a\x0d\x0d\x0a" else None
        reader = reader or dpkt.pcap.Reader(handle)
        for number, (_, frame) in enumerate(reader, start=1):
            yield number, frame


def transport_payloads(path: Path) -> dict[int, tuple[str, bytes]]:
    """Frame number -> ("udp" | "tcp", payload) for Ethernet IPv4/IPv6 frames."""
    payloads = {}
    for number, frame in read_frames(path):
        ip = dpkt.ethernet.Ethernet(frame).data
        if isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6):
            segment = ip.data
            if isinstance(segment, dpkt.udp.UDP | dpkt.tcp.TCP):
                kind = "udp" if isinstance(segment, dpkt.udp.UDP) else "tcp"
                payloads[number] = (kind, bytes(segment.data))
    return payloads


def corpus_file(name: str) -> Path:
    path = CORPUS / name
    if not path.exists():
        pytest.skip(f"corpus file {path} absent")
    return path


SIP_FIELDS = [
    "frame.number", "sip.Call-ID", "sip.Method", "sip.Status-Code", "sip.CSeq.seq",
    "sip.CSeq.method", "sip.from.addr", "sip.from.tag", "sip.to.addr", "sip.to.tag", "sip.Via",
    "sip.User-Agent", "sdp.media.media", "sdp.media.port", "sdp.media.proto", "sdp.media_attr",
    "sdp.connection_info.address",
]  # fmt: skip


def tshark_sip(path: Path) -> dict[int, dict[str, list[str]]]:
    command = [TSHARK or "tshark", "-r", str(path), "-Y", "sip", "-T", "fields"]
    command += ["-E", "aggregator=\x1f"] + [arg for f in SIP_FIELDS for arg in ("-e", f)]
    output = subprocess.run(command, capture_output=True, check=True, text=True).stdout
    rows = {}
    for line in output.splitlines():
        cells = zip(SIP_FIELDS, line.split("\t"), strict=True)
        row = {field: (cell.split("\x1f") if cell else []) for field, cell in cells}
        rows[int(row["frame.number"][0])] = row
    return rows


def first(row: dict[str, list[str]], field: str) -> str | None:
    return row[field][0] if row[field] else None


def assert_matches_tshark(number: int, payload: bytes, row: dict[str, list[str]]) -> None:
    msg = parse_sip(payload)
    assert msg.call_id == first(row, "sip.Call-ID"), number
    assert msg.method == first(row, "sip.Method"), number
    status = str(msg.status_code) if msg.status_code is not None else None
    assert status == first(row, "sip.Status-Code"), number
    assert msg.cseq == (int(row["sip.CSeq.seq"][0]), row["sip.CSeq.method"][0])
    assert (msg.from_uri, msg.from_tag) == (first(row, "sip.from.addr"), first(row, "sip.from.tag"))
    assert (msg.to_uri, msg.to_tag) == (first(row, "sip.to.addr"), first(row, "sip.to.tag"))
    assert list(msg.via) == row["sip.Via"]
    assert msg.user_agent == first(row, "sip.User-Agent")
    media = msg.sdp.media if msg.sdp else ()
    assert [m.media for m in media] == row["sdp.media.media"], number
    assert [str(m.port) for m in media] == row["sdp.media.port"], number
    assert [m.proto for m in media] == row["sdp.media.proto"], number
    assert [f"rtpmap:{pt} {rtpmap_text(v)}" for m in media for pt, v in m.rtpmap.items()] == [
        attr for attr in row["sdp.media_attr"] if attr.startswith("rtpmap:")
    ], number
    assert {m.connection_address for m in media} <= set(row["sdp.connection_info.address"])


def rtpmap_text(rtpmap: RtpMap) -> str:
    channels = f"/{rtpmap.channels}" if rtpmap.channels is not None else ""
    return f"{rtpmap.encoding}/{rtpmap.clock_rate}{channels}"


@pytest.mark.skipif(TSHARK is None, reason="tshark not installed")
@pytest.mark.parametrize(
    "name",
    [
        "sngrep/aaa.pcap",
        "ndpi/sip.pcap",
        "ndpi/FAX-Call-t38-CA-TDM-SIP-FB-1.pcap",
        "ndpi/sip_hello.pcapng",
    ],
)
def test_corpus_udp_sip_matches_tshark(name: str) -> None:
    path = corpus_file(name)
    rows = tshark_sip(path)
    payloads = transport_payloads(path)
    ours = {n for n, (kind, data) in payloads.items() if kind == "udp" and looks_like_sip(data)}
    assert ours == set(rows), "frames looks_like_sip picks differ from tshark's SIP frames"
    for number in sorted(rows):
        assert_matches_tshark(number, payloads[number][1], rows[number])


def test_corpus_fax_invite_has_audio_then_t38_reinvite() -> None:
    payloads = transport_payloads(corpus_file("ndpi/FAX-Call-t38-CA-TDM-SIP-FB-1.pcap"))
    invite, reinvite = parse_sip(payloads[23][1]), parse_sip(payloads[1394][1])
    assert invite.sdp is not None and reinvite.sdp is not None
    assert [(m.media, m.port, m.proto) for m in invite.sdp.media] == [("audio", 16756, "RTP/AVP")]
    assert [(m.media, m.proto, m.formats) for m in reinvite.sdp.media] == [
        ("image", "udptl", ("t38",))
    ]
    assert invite.cseq == (1, "INVITE") and reinvite.cseq == (3, "INVITE")
    assert not any(m.is_srtp_profile or m.crypto for m in invite.sdp.media)


def test_corpus_sip_hello_keepalives_are_not_sip() -> None:
    payloads = transport_payloads(corpus_file("ndpi/sip_hello.pcapng"))
    hellos = [data for _, data in payloads.values() if data == b"hello"]
    assert len(hellos) == 22
    assert not any(looks_like_sip(data) for data in hellos)


def test_corpus_http_on_sip_port_is_not_sip() -> None:
    """tshark labels these TCP/5060 frames SIP by port; they are HTTP (nDPI agrees: HTTP)."""
    payloads = transport_payloads(corpus_file("ndpi/http_on_sip_port.pcap"))
    tcp_data = [data for kind, data in payloads.values() if kind == "tcp" and data]
    assert any(data.startswith(b"GET ") for data in tcp_data)
    for data in tcp_data:
        assert not looks_like_sip(data)
        with pytest.raises(DecodeError):
            parse_sip(data)
    splitter = SipStreamSplitter()
    assert not any(looks_like_sip(m) for data in tcp_data for m in splitter.feed(data))


def test_corpus_h323_is_not_sip() -> None:
    payloads = transport_payloads(corpus_file("ndpi/h323.pcap"))
    assert payloads
    assert not any(looks_like_sip(data) for _, data in payloads.values())


def test_corpus_messages_through_splitter() -> None:
    """Real SIP messages of the FAX call, concatenated as a TCP stream and cut in odd places,
    come back whole (their Content-Length matches their bodies)."""
    payloads = transport_payloads(corpus_file("ndpi/FAX-Call-t38-CA-TDM-SIP-FB-1.pcap"))
    messages = [data for kind, data in payloads.values() if kind == "udp" and looks_like_sip(data)]
    assert len(messages) > 50
    stream = b"".join(messages)
    splitter, out = SipStreamSplitter(), []
    for offset in range(0, len(stream), 701):
        out += splitter.feed(stream[offset : offset + 701])
    assert out == messages
