"""Tests for analyzer.decode.dtls: records (RFC 6347 §4.1, RFC 9146, RFC 9147 §4) and the
handshake reassembler (RFC 6347 §4.2.2), on spec-built bytes and on real DTLS captures from the
nDPI corpus, compared with tshark's decoding of the same frames."""

from __future__ import annotations

import contextlib
import functools
import itertools
import random
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.decode.dtls import (
    DtlsHandshakeAssembler,
    DtlsRecord,
    looks_like_dtls,
    looks_like_dtls13_ciphertext,
    parse_dtls_records,
    parse_handshake_fragments,
)
from analyzer.decode.tls import (
    HS_CERTIFICATE,
    HS_CLIENT_HELLO,
    HS_SERVER_HELLO,
    CertificateInfo,
    ClientHello,
    ServerHello,
    certificate_summary,
    parse_certificate_message,
    parse_client_hello,
    parse_server_hello,
)
from analyzer.decode.tls_registry import is_grease
from analyzer.errors import DecodeError

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
NDPI = CORPUS / "ndpi"

DTLS10, DTLS12 = 0xFEFF, 0xFEFD


def dtls_record(content_type: int, payload: bytes, *, version: int = DTLS12, epoch: int = 0,
                seq: int = 0) -> bytes:
    return (struct.pack("!BHH", content_type, version, epoch) + seq.to_bytes(6, "big")
            + len(payload).to_bytes(2, "big") + payload)


def fragment(msg_type: int, body: bytes, *, message_seq: int = 0, offset: int = 0,
             length: int | None = None) -> bytes:
    """Handshake fragment: msg_type(1) length(3) message_seq(2) offset(3) fragment_length(3)."""
    part = body[offset:offset + length] if length is not None else body[offset:]
    return (bytes([msg_type]) + len(body).to_bytes(3, "big") + message_seq.to_bytes(2, "big")
            + offset.to_bytes(3, "big") + len(part).to_bytes(3, "big") + part)


def as_record(data: bytes) -> DtlsRecord:
    (record,) = parse_dtls_records(data)
    return record


# ---------------------------------------------------------------------------------------------
# Records


def test_several_records_in_one_datagram() -> None:
    datagram = (dtls_record(22, fragment(16, b"k" * 5), seq=7)
                + dtls_record(20, b"\x01", seq=8)
                + dtls_record(22, b"encrypted-finished", epoch=1, seq=0))
    records = parse_dtls_records(datagram)
    assert [(r.content_type, r.epoch, r.sequence_number) for r in records] == [
        (22, 0, 7), (20, 0, 8), (22, 1, 0)]
    assert records[1].fragment == b"\x01" and records[2].fragment == b"encrypted-finished"
    assert all(r.version == DTLS12 and not r.is_unified_header for r in records)


def test_record_errors() -> None:
    good = dtls_record(22, b"abc")
    for bad in (b"", good[:12], good[:-1], good + b"\x16\xfe",
                dtls_record(22, b"x", version=0x0303), dtls_record(30, b"x")):
        with pytest.raises(DecodeError):
            parse_dtls_records(bad)


def test_looks_like_dtls() -> None:
    assert looks_like_dtls(dtls_record(22, b"x" * 20))
    assert looks_like_dtls(dtls_record(23, b"x", version=DTLS10))
    assert looks_like_dtls(dtls_record(22, b"x", version=0x0100))  # OpenSSL DTLS1_BAD_VER
    assert not looks_like_dtls(dtls_record(22, b"x" * 20)[:-1])  # length does not fit
    assert not looks_like_dtls(dtls_record(22, b"x", version=0x0303))
    assert not looks_like_dtls(dtls_record(19, b"x"))
    assert not looks_like_dtls(b"\x16\xfe\xfd")


def test_connection_id_records_rfc_9146() -> None:
    cid = b"\xC1\xD0\xCA\xFE"
    header = struct.pack("!BHH", 25, DTLS12, 1) + (3).to_bytes(6, "big")
    datagram = header + cid + (5).to_bytes(2, "big") + b"\x00" * 5
    assert looks_like_dtls(datagram)
    for known in (4, None):
        (record,) = parse_dtls_records(datagram, cid_length=known)
        assert (record.connection_id, record.fragment, record.epoch) == (cid, b"\x00" * 5, 1)
    with pytest.raises(DecodeError):
        parse_dtls_records(datagram, cid_length=2)  # length field would read 0xCAFE


def test_dtls13_unified_header_records() -> None:
    # 0b001 C=0 S=1 L=1 EE=10: 16-bit sequence, explicit length, epoch bits 2.
    first = 0x20 | 0x08 | 0x04 | 0x02
    ciphertext = bytes([first]) + b"\x12\x34" + (4).to_bytes(2, "big") + b"ENCR"
    assert looks_like_dtls13_ciphertext(ciphertext)
    assert not looks_like_dtls13_ciphertext(ciphertext[:-1])
    assert not looks_like_dtls13_ciphertext(dtls_record(22, b"x"))
    hello = dtls_record(22, fragment(HS_SERVER_HELLO, b"s" * 10))
    no_length = bytes([0x20 | 0x01]) + b"\x05" + b"rest-of-datagram"
    records = parse_dtls_records(hello + ciphertext + no_length)
    assert [r.is_unified_header for r in records] == [False, True, True]
    assert (records[1].epoch, records[1].sequence_number, records[1].fragment) == (2, 0x1234,
                                                                                   b"ENCR")
    assert records[2].fragment == b"rest-of-datagram" and records[2].version == 0xFEFC


# ---------------------------------------------------------------------------------------------
# Handshake reassembly


def test_fragments_in_any_order_with_duplicates_complete_once() -> None:
    body = bytes(range(256)) * 12
    pieces = [(0, 1000), (1000, 500), (1400, 1000), (2400, 672)]  # overlapping at 1400
    records = [as_record(dtls_record(22, fragment(HS_CERTIFICATE, body, message_seq=3,
                                                  offset=o, length=n))) for o, n in pieces]
    shuffled = records[:]
    random.Random(7).shuffle(shuffled)
    assembler = DtlsHandshakeAssembler()
    out = [m for r in shuffled + records for m in assembler.feed(r)]
    assert [(m.msg_type, m.body) for m in out] == [(HS_CERTIFICATE, body)]


def test_several_messages_in_one_record_and_empty_message() -> None:
    flight = (fragment(HS_SERVER_HELLO, b"hello", message_seq=1)
              + fragment(14, b"", message_seq=2))
    messages = DtlsHandshakeAssembler().feed(as_record(dtls_record(22, flight)))
    assert [(m.msg_type, m.body) for m in messages] == [(HS_SERVER_HELLO, b"hello"), (14, b"")]


def test_encrypted_records_are_not_collected() -> None:
    assembler = DtlsHandshakeAssembler()
    assert assembler.feed(as_record(dtls_record(22, fragment(20, b"f" * 12), epoch=1))) == []
    assert assembler.encrypted_seen
    alerting = DtlsHandshakeAssembler()
    assert alerting.feed(as_record(dtls_record(21, b"\x02\x28"))) == []
    assert alerting.alert_seen and not alerting.encrypted_seen


def test_conflicting_fragments_are_dropped() -> None:
    assembler = DtlsHandshakeAssembler()
    assembler.feed(as_record(dtls_record(22, fragment(11, b"a" * 10, length=5))))
    assembler.feed(as_record(dtls_record(22, fragment(12, b"b" * 10, offset=5))))
    assert assembler.conflicts == 1
    done = assembler.feed(as_record(dtls_record(22, fragment(11, b"a" * 10, offset=5))))
    assert [m.body for m in done] == [b"a" * 10]


def test_assembler_is_bounded() -> None:
    big = DtlsHandshakeAssembler()
    header = (bytes([11]) + (1 << 20).to_bytes(3, "big") + bytes(2) + bytes(3)
              + (4).to_bytes(3, "big"))
    assert big.feed(as_record(dtls_record(22, header + b"xxxx"))) == [] and big.overflowed
    many = DtlsHandshakeAssembler()
    for seq in range(DtlsHandshakeAssembler.MAX_PENDING + 1):
        many.feed(as_record(dtls_record(22, fragment(11, b"z" * 100, message_seq=seq, length=1))))
    assert many.overflowed
    held = DtlsHandshakeAssembler()
    body = bytes(60_000)
    for _ in range(200):  # a retransmitted fragment is held once
        held.feed(DtlsRecord(22, DTLS12, 0, 0, fragment(11, body, offset=0, length=1000)))
    assert not held.overflowed
    for seq in range(3):  # three large messages, each one fragment short of complete
        for offset in range(0, 59_000, 1000):
            held.feed(DtlsRecord(22, DTLS12, 0, 0, fragment(11, body, message_seq=seq,
                                                            offset=offset, length=1000)))
    assert held.overflowed


def test_malformed_handshake_fragment_raises() -> None:
    for bad in (b"\x01\x00\x00", fragment(1, b"abc")[:-1],
                bytes([1]) + (2).to_bytes(3, "big") + bytes(5) + (3).to_bytes(3, "big") + b"abc"):
        with pytest.raises(DecodeError):
            parse_handshake_fragments(bad)


# ---------------------------------------------------------------------------------------------
# Fuzz


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.none() | st.integers(0, 24))
def test_fuzz_records(data: bytes, cid_length: int | None) -> None:
    assert looks_like_dtls(data) in (True, False)
    assert looks_like_dtls13_ciphertext(data) in (True, False)
    with contextlib.suppress(DecodeError):
        for record in parse_dtls_records(data, cid_length=cid_length):
            assert len(record.fragment) <= len(data)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([20, 21, 22, 23]), st.integers(0, 2),
                          st.binary(max_size=80)), max_size=10))
def test_fuzz_assembler(records: list[tuple[int, int, bytes]]) -> None:
    assembler = DtlsHandshakeAssembler()
    for content_type, epoch, payload in records:
        with contextlib.suppress(DecodeError):
            assembler.feed(DtlsRecord(content_type, DTLS12, epoch, 0, payload))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), st.data())
def test_any_fragmentation_reassembles(body: bytes, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(body) - 1)), max_size=8)))
    bounds = [0, *[c for c in cuts if c < len(body)], len(body)]
    pieces = [fragment(HS_CERTIFICATE, body, message_seq=5, offset=a, length=b - a)
              for a, b in itertools.pairwise(bounds)] or [fragment(11, body)]
    order = data.draw(st.permutations(pieces + pieces[:1]))
    assembler = DtlsHandshakeAssembler()
    out = [m for p in order for m in assembler.feed(DtlsRecord(22, DTLS12, 0, 0, p))]
    assert [m.body for m in out] == [body]


# ---------------------------------------------------------------------------------------------
# Real captures, checked against tshark


def read_frames(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as handle:
        magic = handle.read(4)
        handle.seek(0)
        reader = dpkt.pcapng.Reader(handle) if magic == b"\n\r\r\n" else dpkt.pcap.Reader(handle)
        for number, (_, frame) in enumerate(reader, start=1):
            yield number, frame


def udp_datagrams(path: Path) -> Iterator[tuple[int, tuple[bytes, int, bytes, int], bytes]]:
    """(frame, direction, payload) of every top-level UDP datagram (tunnels are not opened)."""
    for number, frame in read_frames(path):
        ip = dpkt.ethernet.Ethernet(frame).data
        if isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6) and isinstance(ip.data, dpkt.udp.UDP):
            udp = ip.data
            yield number, (bytes(ip.src), udp.sport, bytes(ip.dst), udp.dport), bytes(udp.data)


Fields = dict[str, str]
Decoded = ClientHello | ServerHello | tuple[CertificateInfo, ...] | int


@functools.cache
def our_dtls(path: Path) -> tuple[dict[int, Fields], frozenset[int], dict[int, list[Decoded]]]:
    """Per frame the fields tshark prints; frames rejected as malformed; decoded messages."""
    assemblers: dict[tuple[bytes, int, bytes, int], DtlsHandshakeAssembler] = {}
    seen: dict[int, Fields] = {}
    decoded: dict[int, list[Decoded]] = {}
    rejected = set()
    for number, direction, payload in udp_datagrams(path):
        if not looks_like_dtls(payload):
            continue
        try:
            records = parse_dtls_records(payload)
        except DecodeError:
            rejected.add(number)
            continue
        assembler = assemblers.setdefault(direction, DtlsHandshakeAssembler())
        for record in records:
            for message in assembler.feed(record):
                fields = seen.setdefault(number, {})
                decoded.setdefault(number, []).append(_describe(message.msg_type, message.body,
                                                                fields))
    return {n: f for n, f in seen.items() if f}, frozenset(rejected), decoded


def _describe(msg_type: int, body: bytes, fields: Fields) -> Decoded:
    if msg_type == HS_CLIENT_HELLO:
        hello = parse_client_hello(body, dtls=True)
        fields["suites"] = ",".join(f"0x{c:04x}" for c in hello.cipher_suites)
        fields["srtp"] = ",".join(f"0x{p:04x}" for p in hello.use_srtp_profiles)
        return hello
    if msg_type == HS_SERVER_HELLO:
        server = parse_server_hello(body, dtls=True)
        fields["suites"] = f"0x{server.cipher_suite:04x}"
        profile = server.use_srtp_profile
        fields["srtp"] = "" if profile is None else f"0x{profile:04x}"
        return server
    if msg_type == HS_CERTIFICATE:
        certificates = parse_certificate_message(body)
        fields["certs"] = ",".join(c.hex() for c in certificates)
        return tuple(certificate_summary(c) for c in certificates)
    return msg_type


@functools.cache
def tshark_dtls(path: Path) -> dict[int, Fields]:
    out = subprocess.run(
        ["tshark", "-r", str(path), "-Y", "dtls.handshake.type && !gtp", "-T", "fields",
         "-e", "frame.number", "-e", "dtls.handshake.type", "-e", "dtls.handshake.ciphersuite",
         "-e", "dtls.use_srtp.protection_profile", "-e", "dtls.handshake.certificate"],
        capture_output=True, text=True, check=True, timeout=60).stdout
    seen: dict[int, Fields] = {}
    for line in out.splitlines():
        number, _, suites, profiles, certs = line.split("\t")
        fields: Fields = {}
        if suites:
            fields["suites"] = ",".join(s for s in suites.split(",") if not is_grease(int(s, 16)))
            fields["srtp"] = profiles
        if certs:
            fields["certs"] = certs
        if fields:
            seen[int(number)] = fields
    return seen


DTLS_CAPTURES = ["dtls.pcap", "dtls2.pcap", "dtls_certificate_fragments.pcap", "stun.pcap",
                 "dtls_old_version.pcapng", "stun_dtls_rtp.pcapng", "stun_zoom.pcapng"]


def need_capture(name: str) -> Path:
    path = NDPI / name
    if not path.exists():
        pytest.skip(f"corpus capture {name} not present")
    return path


@pytest.mark.parametrize("name", DTLS_CAPTURES)
def test_dtls_handshakes_match_tshark(name: str) -> None:
    path = need_capture(name)
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    ours, rejected, _ = our_dtls(path)
    theirs = tshark_dtls(path)
    assert ours and theirs
    for number, fields in ours.items():
        assert theirs.get(number) == fields, f"frame {number}"
    # tshark decodes every retransmitted copy of a flight; we report a message once.
    for number in theirs.keys() - ours.keys():
        assert theirs[number] in ours.values(), f"frame {number} is not a retransmission"
    # stun.pcap frame 196 starts like a DTLS ClientHello but its record and handshake lengths
    # are garbage (its bytes match frame 198's ClientHello from byte 11 on); tshark does not
    # decode it as DTLS either.
    assert rejected == ({196} if name == "stun.pcap" else set())


def decoded_of(name: str, kind: type) -> list:
    _, _, decoded = our_dtls(need_capture(name))
    return [m for items in decoded.values() for m in items if isinstance(m, kind)]


def certificate_names(name: str) -> list[list[str | None]]:
    return [[c.subject_cn for c in chain] for chain in decoded_of(name, tuple)]


def test_real_certificates_fragmented_across_datagrams() -> None:
    # Certificate split over two datagrams (frames 4-5), and over four (stun_zoom frames 15-18).
    assert certificate_names("dtls_certificate_fragments.pcap")[0] == ["*.opera-mini.net"]
    zoom = certificate_names("stun_zoom.pcapng")
    assert zoom[0] == ["*.cloud.zoom.us", "DigiCert TLS RSA SHA256 2020 CA1",
                       "DigiCert Global Root CA"]
    # Google's media server answers with CN=hangouts, Chrome with CN=WebRTC (protocols.md §3).
    # The client sends its flight twice (frames 6 and 10): reported once.
    assert certificate_names("stun_dtls_rtp.pcapng") == [["hangouts"], ["WebRTC"]]


def test_real_srtp_negotiation() -> None:
    # protocols.md §3: Chrome offers 0x0001, 0x0008, 0x0007; Google picks AEAD_AES_256_GCM.
    (client,) = decoded_of("stun_dtls_rtp.pcapng", ClientHello)
    (server,) = decoded_of("stun_dtls_rtp.pcapng", ServerHello)
    assert client.use_srtp_profiles == (0x0001, 0x0008, 0x0007)
    assert (server.use_srtp_profile, server.cipher_suite) == (0x0008, 0xC02F)
    # Zoom's client offers SRTP profiles, but its DTLS server on 8801 answers without use_srtp:
    # no DTLS-SRTP is negotiated there (tshark agrees: no protection profile in the answer).
    zoom_clients = decoded_of("stun_zoom.pcapng", ClientHello)
    zoom_servers = decoded_of("stun_zoom.pcapng", ServerHello)
    assert all(c.use_srtp_profiles == (7, 8, 1, 2) for c in zoom_clients)
    assert zoom_servers and all(s.use_srtp_profile is None for s in zoom_servers)


def test_real_old_versions_and_dtls13() -> None:
    (old,) = decoded_of("dtls_old_version.pcapng", ServerHello)
    assert old.legacy_version == 0x0100  # OpenSSL's pre-RFC DTLS 1.0 number
    # dtls.pcap frames 7-10: a DTLS 1.3 HelloRetryRequest, then the real ServerHello; the
    # encrypted flight after it uses unified headers.
    answers = [s for s in decoded_of("dtls.pcap", ServerHello) if s.cipher_suite == 0x1301]
    assert [(s.version, s.is_hello_retry_request) for s in answers] == [
        (0xFEFC, True), (0xFEFC, False)]


def test_mid_session_capture_has_only_encrypted_records() -> None:
    assemblers: dict[tuple[bytes, int, bytes, int], DtlsHandshakeAssembler] = {}
    datagrams = 0
    for _, direction, payload in udp_datagrams(need_capture("dtls_mid_sessions.pcapng")):
        assert looks_like_dtls(payload)
        datagrams += 1
        for record in parse_dtls_records(payload):
            assert assemblers.setdefault(direction, DtlsHandshakeAssembler()).feed(record) == []
    assert datagrams == 91 and all(a.encrypted_seen for a in assemblers.values())
