"""Tests for analyzer.decode.tls and analyzer.decode.tls_registry.

Inputs are built from the RFC layouts (RFC 8446 §4, RFC 5246 §6.2, RFC 5764 §4.1.1), then the
decoders are checked on real TLS-over-TCP captures from the nDPI corpus against tshark's
decoding of the same frames.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import shutil
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import dpkt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.decode import tls
from analyzer.decode.tls import (
    HELLO_RETRY_REQUEST_RANDOM,
    HS_CERTIFICATE,
    HS_CLIENT_HELLO,
    HS_SERVER_HELLO,
    TlsStreamReader,
    certificate_summary,
    looks_like_tls_record,
    parse_certificate_message,
    parse_client_hello,
    parse_server_hello,
    version_name,
)
from analyzer.decode.tls_registry import (
    CIPHER_SUITES,
    cipher_suite_name,
    is_grease,
    srtp_profile_name,
    srtp_profile_properties,
    suite_properties,
)
from analyzer.errors import DecodeError

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
NDPI = CORPUS / "ndpi"

# ---------------------------------------------------------------------------------------------
# Builders following the RFC layouts


def vec(data: bytes, length_size: int) -> bytes:
    return len(data).to_bytes(length_size, "big") + data


def u16s(*values: int) -> bytes:
    return b"".join(v.to_bytes(2, "big") for v in values)


def ext(ext_type: int, data: bytes) -> bytes:
    return struct.pack("!HH", ext_type, len(data)) + data


def sni_ext(name: bytes) -> bytes:  # RFC 6066 §3
    return ext(0, vec(b"\x00" + vec(name, 2), 2))


def alpn_ext(*names: bytes) -> bytes:  # RFC 7301 §3.1
    return ext(16, vec(b"".join(vec(n, 1) for n in names), 2))


def client_hello_body(extensions: bytes | None, *, suites: tuple[int, ...] = (0x1301, 0xC02F),
                      cookie: bytes | None = None, session_id: bytes = b"\x11" * 32) -> bytes:
    body = u16s(0x0303) + bytes(range(32)) + vec(session_id, 1)
    if cookie is not None:
        body += vec(cookie, 1)
    body += vec(u16s(*suites), 2) + vec(b"\x00", 1)
    return body if extensions is None else body + vec(extensions, 2)


def server_hello_body(extensions: bytes, *, random: bytes = bytes(32),
                      suite: int = 0x1301) -> bytes:
    return u16s(0x0303) + random + vec(b"", 1) + u16s(suite) + b"\x00" + vec(extensions, 2)


def handshake(msg_type: int, body: bytes) -> bytes:
    return bytes([msg_type]) + len(body).to_bytes(3, "big") + body


def record(content_type: int, payload: bytes, version: int = 0x0303) -> bytes:
    return struct.pack("!BHH", content_type, version, len(payload)) + payload


FULL_CLIENT_EXTENSIONS = (
    ext(0x3A3A, b"")  # GREASE extension
    + sni_ext(b"meet.example.com")
    + alpn_ext(b"h2", b"http/1.1")
    + ext(43, vec(u16s(0x7A7A, 0x0304, 0x0303), 1))  # supported_versions with GREASE
    + ext(14, vec(u16s(0x0007, 0x0001), 2) + vec(b"\xAA", 1))  # use_srtp, MKI 0xAA
    + ext(57, b"\x01\x02\x00\x00")  # quic_transport_parameters
    + ext(0xFE0D, b"\x00\x01")  # encrypted_client_hello
)


# ---------------------------------------------------------------------------------------------
# ClientHello / ServerHello


def test_client_hello_decodes_every_extension_and_skips_grease() -> None:
    hello = parse_client_hello(client_hello_body(FULL_CLIENT_EXTENSIONS,
                                                 suites=(0x2A2A, 0x1301, 0xC02F)))
    assert hello.legacy_version == 0x0303
    assert hello.random == bytes(range(32))
    assert hello.session_id == b"\x11" * 32
    assert hello.cookie is None
    assert hello.cipher_suites == (0x1301, 0xC02F)
    assert hello.compression_methods == b"\x00"
    assert hello.extension_types == (0x3A3A, 0, 16, 43, 14, 57, 0xFE0D)
    assert hello.sni == "meet.example.com"
    assert hello.alpn == ("h2", "http/1.1")
    assert hello.supported_versions == (0x0304, 0x0303)
    assert hello.use_srtp_profiles == (0x0007, 0x0001)
    assert hello.use_srtp_mki == b"\xAA"
    assert hello.quic_transport_parameters and hello.ech


def test_client_hello_without_optional_extensions() -> None:
    hello = parse_client_hello(client_hello_body(sni_ext(b"a.example")))
    assert (hello.sni, hello.alpn, hello.supported_versions) == ("a.example", (), ())
    assert hello.use_srtp_profiles == () and not hello.ech and not hello.quic_transport_parameters


def test_ssl3_style_client_hello_without_extension_block() -> None:
    hello = parse_client_hello(client_hello_body(None))
    assert hello.extensions == () and hello.sni is None


def test_dtls_client_hello_has_a_cookie() -> None:
    body = client_hello_body(sni_ext(b"x"), cookie=b"\xC0\x0C\x1E", session_id=b"")
    assert parse_client_hello(body, dtls=True).cookie == b"\xC0\x0C\x1E"
    with pytest.raises(DecodeError):  # read as TLS, the cookie shifts every later field
        parse_client_hello(body)


def test_non_utf8_server_name_is_replaced_not_raised() -> None:
    hello = parse_client_hello(client_hello_body(sni_ext(b"bad\xff\xfe.example")))
    assert hello.sni == "bad\ufffd\ufffd.example"


def test_every_truncation_of_a_client_hello_raises_decode_error() -> None:
    body = client_hello_body(FULL_CLIENT_EXTENSIONS)
    for cut in range(len(body)):
        if cut == len(body) - len(FULL_CLIENT_EXTENSIONS) - 2:
            continue  # cutting exactly before the extensions block leaves a valid SSL 3 hello
        with pytest.raises(DecodeError):
            parse_client_hello(body[:cut])


def test_trailing_bytes_and_odd_suite_lists_are_rejected() -> None:
    with pytest.raises(DecodeError):
        parse_client_hello(client_hello_body(b"") + b"\x00")
    odd = u16s(0x0303) + bytes(32) + vec(b"", 1) + vec(b"\x13\x01\x13", 2) + vec(b"\x00", 1)
    with pytest.raises(DecodeError):
        parse_client_hello(odd)


def test_server_hello_tls13_takes_version_from_supported_versions() -> None:
    hello = parse_server_hello(server_hello_body(ext(43, u16s(0x0304)) + alpn_ext(b"h2")))
    assert (hello.legacy_version, hello.version) == (0x0303, 0x0304)
    assert hello.cipher_suite == 0x1301 and hello.alpn == "h2"
    assert not hello.is_hello_retry_request and hello.use_srtp_profile is None


def test_hello_retry_request_random_is_the_rfc_8446_value() -> None:
    rfc_8446_hrr = bytes.fromhex("CF 21 AD 74 E5 9A 61 11 BE 1D 8C 02 1E 65 B8 91"
                                 "C2 A2 11 16 7A BB 8C 5E 07 9E 09 E2 C8 A8 33 9C")
    assert rfc_8446_hrr == HELLO_RETRY_REQUEST_RANDOM
    hello = parse_server_hello(server_hello_body(ext(43, u16s(0x0304)), random=rfc_8446_hrr))
    assert hello.is_hello_retry_request


def test_dtls_server_hello_selects_one_srtp_profile() -> None:
    srtp = ext(14, vec(u16s(0x0008), 2) + vec(b"", 1))
    hello = parse_server_hello(server_hello_body(srtp, suite=0xC02F), dtls=True)
    assert (hello.use_srtp_profile, hello.version) == (0x0008, 0x0303)
    two = ext(14, vec(u16s(0x0008, 0x0001), 2) + vec(b"", 1))
    with pytest.raises(DecodeError):
        parse_server_hello(server_hello_body(two))


def test_version_names() -> None:
    assert version_name(0x0303) == "TLS 1.2" and version_name(0x0304) == "TLS 1.3"
    assert version_name(0x0300) == "SSL 3.0" and version_name(0xFEFD) == "DTLS 1.2"
    assert version_name(0xFEFF) == "DTLS 1.0" and version_name(0xFEFC) == "DTLS 1.3"
    assert version_name(0x7F1C) == "TLS 1.3 draft-28"
    assert version_name(0x9A9A) == "GREASE" and version_name(0x1234) == "0x1234"


# ---------------------------------------------------------------------------------------------
# Certificates


@functools.cache
def self_signed(common_name: str = "WebRTC", san: tuple[str, ...] = ("a.example",)) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Org")])
    start = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(1234)
               .not_valid_before(start).not_valid_after(start + dt.timedelta(days=30)))
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in san]), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def test_certificate_message_tls12_and_tls13_layouts() -> None:
    leaf, other = self_signed(), self_signed("Other CA", ())
    tls12 = vec(vec(leaf, 3) + vec(other, 3), 3)
    assert parse_certificate_message(tls12) == (leaf, other)
    entries = vec(leaf, 3) + vec(ext(5, b"\x01"), 2) + vec(other, 3) + vec(b"", 2)
    tls13 = vec(b"\x07", 1) + vec(entries, 3)
    assert parse_certificate_message(tls13, tls13=True) == (leaf, other)
    assert parse_certificate_message(vec(b"", 3)) == ()
    for bad in (tls12[:-1], tls12 + b"\x00", vec(vec(b"", 3), 3)):
        with pytest.raises(DecodeError):
            parse_certificate_message(bad)


def test_certificate_summary_fields() -> None:
    der = self_signed()
    info = certificate_summary(der)
    assert info.subject_cn == "WebRTC"
    assert info.subject == info.issuer == "O=Test Org,CN=WebRTC"
    assert info.san_dns == ("a.example",)
    assert info.not_before == dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert info.not_after - info.not_before == dt.timedelta(days=30)
    digest = hashlib.sha256(der).hexdigest().upper()
    assert info.sha256_fingerprint == ":".join(digest[i:i + 2] for i in range(0, 64, 2))
    assert certificate_summary(self_signed("x", ())).san_dns == ()


def test_a_certificate_seen_again_is_not_parsed_again() -> None:
    der = self_signed("cached.example")
    first = certificate_summary(der)
    assert certificate_summary(bytes(der)) is first  # equal bytes, another object
    assert certificate_summary(self_signed("other.example")) is not first


def test_certificate_summary_rejects_garbage() -> None:
    der = self_signed()
    for bad in (b"", b"\x30\x03\x02\x01\x01", der[:100], der[:-1]):
        with pytest.raises(DecodeError):
            certificate_summary(bad)


# ---------------------------------------------------------------------------------------------
# Stream reader


def client_flight() -> tuple[bytes, bytes]:
    """A ClientHello message and a stream of three records carrying it and an app-data record."""
    message = handshake(HS_CLIENT_HELLO, client_hello_body(FULL_CLIENT_EXTENSIONS))
    stream = (record(22, message[:40], 0x0301) + record(22, message[40:], 0x0303)
              + record(20, b"\x01") + record(22, handshake(20, b"\x00" * 12)))
    return message, stream


def test_stream_reader_handles_any_segmentation() -> None:
    message, stream = client_flight()
    for size in (1, 3, 7, 64, len(stream)):
        reader = TlsStreamReader()
        got = [m for i in range(0, len(stream), size) for m in reader.feed(stream[i:i + size])]
        assert [(m.msg_type, m.body) for m in got] == [(HS_CLIENT_HELLO, message[4:])]
        assert reader.encrypted_seen and not reader.overflowed and not reader.not_tls
        assert reader.record_versions == (0x0301, 0x0303)


def test_stream_reader_several_messages_in_one_record_and_alert() -> None:
    hello = handshake(HS_SERVER_HELLO, server_hello_body(b""))
    certificate = handshake(HS_CERTIFICATE, vec(vec(self_signed(), 3), 3))
    done = handshake(14, b"")
    reader = TlsStreamReader()
    messages = reader.feed(record(22, hello + certificate + done) + record(21, b"\x02\x28"))
    assert [m.msg_type for m in messages] == [HS_SERVER_HELLO, HS_CERTIFICATE, 14]
    assert reader.first_alert == (2, 40) and reader.alert_seen and not reader.encrypted_seen


def test_stream_reader_stops_at_application_data_and_on_non_tls() -> None:
    reader = TlsStreamReader()
    assert reader.feed(record(23, b"secret") + record(22, handshake(1, b""))) == []
    assert reader.encrypted_seen and reader.feed(record(22, handshake(1, b""))) == []
    http = TlsStreamReader()
    assert http.feed(b"GET / HTTP/1.1\r\n\r\n") == [] and http.not_tls


def test_stream_reader_is_bounded() -> None:
    reader = TlsStreamReader()
    huge = handshake(HS_CERTIFICATE, b"")[:1] + (200_000).to_bytes(3, "big")
    reader.feed(record(22, huge))
    assert reader.overflowed
    flood = TlsStreamReader()
    chunk = record(22, b"\x0b\x00\xff\xff" + bytes(16_000))
    for _ in range(6):
        flood.feed(chunk)
    assert flood.overflowed and flood.feed(chunk) == []


def test_looks_like_tls_record() -> None:
    assert looks_like_tls_record(record(22, b"\x01\x00\x00\x00", 0x0301))
    assert looks_like_tls_record(record(23, b"x", 0x0303))
    assert not looks_like_tls_record(record(22, b"x", 0xFEFD))  # DTLS version
    assert not looks_like_tls_record(record(30, b"x"))
    assert not looks_like_tls_record(b"\x16\x03\x01\x00")
    assert not looks_like_tls_record(struct.pack("!BHH", 22, 0x0303, 0))
    assert not looks_like_tls_record(b"GET / HTTP/1.1")


# ---------------------------------------------------------------------------------------------
# Registry


def test_registry_names_match_iana() -> None:
    assert cipher_suite_name(0x1301) == "TLS_AES_128_GCM_SHA256"
    assert cipher_suite_name(0xC02F) == "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
    assert cipher_suite_name(0xCCA8) == "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"
    assert cipher_suite_name(0x0035) == "TLS_RSA_WITH_AES_256_CBC_SHA"
    assert cipher_suite_name(0x4A4A) == "GREASE" and cipher_suite_name(0x1399) == "0x1399"
    assert all(name.startswith("TLS_") for name in CIPHER_SUITES.values())
    assert not any(is_grease(code) for code in CIPHER_SUITES)


@pytest.mark.parametrize(("code", "mode", "weak"), [
    (0x1301, "AEAD", ()),
    (0xC02F, "AEAD", ()),
    (0xCCA9, "AEAD", ()),
    (0xC013, "CBC", ("cbc-sha1",)),
    (0xC027, "CBC", ()),  # CBC with SHA-256 MAC
    (0x000A, "CBC", ("3des", "cbc-sha1")),
    (0x0005, "STREAM", ("rc4",)),
    (0x0003, "STREAM", ("export", "rc4", "md5")),
    (0x0002, "NULL", ("null-cipher",)),
    (0x0000, "NULL", ("anon", "null-cipher", "null-mac")),
    (0x0034, "CBC", ("anon", "cbc-sha1")),
    (0x0014, "CBC", ("export", "des", "cbc-sha1")),
])
def test_suite_properties(code: int, mode: str, weak: tuple[str, ...]) -> None:
    props = suite_properties(code)
    assert props is not None and props.name == CIPHER_SUITES[code]
    assert (props.mode, props.weak_reasons) == (mode, weak)


def test_suite_properties_details() -> None:
    tls13, rsa = suite_properties(0x1302), suite_properties(0x009C)
    assert tls13 is not None and rsa is not None
    assert (tls13.key_exchange, tls13.cipher, tls13.mac) == ("TLS13", "AES_256_GCM", "AEAD")
    assert tls13.forward_secrecy and not rsa.forward_secrecy
    assert suite_properties(0x00FF) is None and suite_properties(0x5600) is None  # SCSVs
    assert suite_properties(0x0A0A) is None
    every = [suite_properties(code) for code in CIPHER_SUITES]
    assert {p.mode for p in every if p} == {"AEAD", "CBC", "STREAM", "NULL"}


def test_srtp_profiles_match_protocols_md_table() -> None:
    # docs protocols.md §4.5, checked against the IANA srtp-protection registry (2023-02-03)
    assert srtp_profile_name(0x0001) == "SRTP_AES128_CM_HMAC_SHA1_80"
    assert srtp_profile_name(0x0007) == "SRTP_AEAD_AES_128_GCM"
    assert srtp_profile_name(0x0008) == "SRTP_AEAD_AES_256_GCM"
    assert srtp_profile_name(0x0010) == "SRTP_AEAD_ARIA_256_GCM"
    assert srtp_profile_name(0x0011) == "0x0011"
    for code in (0x0005, 0x0006):
        props = srtp_profile_properties(code)
        assert props is not None and props.null_cipher and not props.null_auth
    gcm, f8 = srtp_profile_properties(0x0008), srtp_profile_properties(0x0003)
    assert gcm is not None and (gcm.auth, gcm.null_cipher, gcm.at_iana) == ("AEAD", False, True)
    assert f8 is not None and not f8.at_iana
    assert srtp_profile_properties(0x0000) is None


# ---------------------------------------------------------------------------------------------
# Fuzz


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.booleans())
def test_fuzz_hello_and_certificate_parsers(data: bytes, flag: bool) -> None:
    for parse in (lambda d: parse_client_hello(d, dtls=flag),
                  lambda d: parse_server_hello(d, dtls=flag),
                  lambda d: parse_certificate_message(d, tls13=flag),
                  certificate_summary):
        with contextlib.suppress(DecodeError):
            parse(data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_mutated_client_hello(data: st.DataObject) -> None:
    body = bytearray(client_hello_body(FULL_CLIENT_EXTENSIONS))
    for _ in range(data.draw(st.integers(1, 4))):
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    with contextlib.suppress(DecodeError):
        parse_client_hello(bytes(body))


def test_grease_set_is_every_grease_value() -> None:
    assert {v for v in range(1 << 16) if is_grease(v)} == tls.GREASE


def _outcome(parse: Callable[[bytes], object], data: bytes) -> object:
    try:
        return parse(data)
    except DecodeError as exc:
        return ("error", str(exc))


def _server_name_extension(name: bytes, kind: int, extra: bytes) -> bytes:
    entry = bytes([kind]) + struct.pack("!H", len(name)) + name
    return struct.pack("!H", len(entry)) + entry + extra


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=40), st.sampled_from([0, 0, 0, 1]), st.sampled_from([b"", b"", b"x"]),
       st.lists(st.tuples(st.integers(0, 45), st.integers(0, 255)), max_size=2))
def test_extension_fast_paths_read_what_the_readers_read(name: bytes, kind: int, extra: bytes,
                                                         edits: list[tuple[int, int]]) -> None:
    """The in-place reading of the usual server_name and supported_versions extensions gives
    what the bounds-checked readers give, or the same error, on well-formed and broken ones."""
    versions = bytes([len(name)]) + name  # (odd lengths are malformed)
    for data, fast, slow in ((_server_name_extension(name, kind, extra),
                              tls._parse_server_name, tls._read_server_name),
                             (versions + extra, tls._parse_client_versions,
                              tls._read_client_versions)):
        edited = bytearray(data)
        for at, value in edits:
            if at < len(edited):
                edited[at] = value
        for sample in (data, bytes(edited)):
            assert _outcome(fast, sample) == _outcome(slow, sample)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_fuzz_stream_reader_random_bytes(chunks: list[bytes]) -> None:
    reader = TlsStreamReader()
    for chunk in chunks:
        reader.feed(chunk)
        assert looks_like_tls_record(chunk) in (True, False)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([20, 21, 22, 22, 22, 23]), st.binary(min_size=1,
                                                                               max_size=200)),
                max_size=6),
       st.lists(st.integers(1, 60), max_size=10), st.binary(max_size=40))
def test_fuzz_stream_reader_record_framing(records: list[tuple[int, bytes]], cuts: list[int],
                                           tail: bytes) -> None:
    # Valid record framing around random handshake bytes, cut anywhere: exercises reassembly.
    stream = b"".join(record(content_type, payload) for content_type, payload in records) + tail
    reader, position = TlsStreamReader(), 0
    for cut in [*cuts, len(stream)]:
        for message in reader.feed(stream[position:position + cut]):
            assert len(message.body) <= len(stream)
        position += cut


# ---------------------------------------------------------------------------------------------
# Real captures, checked against tshark


def read_frames(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as handle:
        magic = handle.read(4)
        handle.seek(0)
        reader = dpkt.pcapng.Reader(handle) if magic == b"\n\r\r\n" else dpkt.pcap.Reader(handle)
        for number, (_, frame) in enumerate(reader, start=1):
            yield number, frame


def tcp_directions(path: Path) -> dict[tuple[bytes, int, bytes, int], list[tuple[int, bytes]]]:
    """Payload of each TCP direction in sequence order as (frame, bytes), duplicates dropped."""
    segments: dict[tuple[bytes, int, bytes, int], list[tuple[int, int, bytes]]] = {}
    for number, frame in read_frames(path):
        ip = dpkt.ethernet.Ethernet(frame).data
        if isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6) and isinstance(ip.data, dpkt.tcp.TCP):
            tcp = ip.data
            if tcp.data:
                key = (bytes(ip.src), tcp.sport, bytes(ip.dst), tcp.dport)
                segments.setdefault(key, []).append((tcp.seq, number, bytes(tcp.data)))
    return {key: _in_order(parts) for key, parts in segments.items()}


def _in_order(parts: list[tuple[int, int, bytes]]) -> list[tuple[int, bytes]]:
    ordered, next_seq = [], None
    for seq, number, data in sorted(parts, key=lambda p: (p[0], p[1])):
        next_seq = seq if next_seq is None else next_seq
        if seq > next_seq:
            break  # a gap: the capture missed a segment
        fresh = data[next_seq - seq:]
        if fresh:
            ordered.append((number, fresh))
            next_seq += len(fresh)
    return ordered


Observed = dict[int, dict[str, str]]


def our_handshakes(path: Path) -> Observed:
    """Per frame, the fields tshark prints, as our decoders see them."""
    seen: Observed = {}
    for segments in tcp_directions(path).values():
        reader = TlsStreamReader()
        for number, data in segments:
            for message in reader.feed(data):
                _describe(message.msg_type, message.body, seen.setdefault(number, {}))
    return {n: fields for n, fields in seen.items() if fields}


def _describe(msg_type: int, body: bytes, fields: dict[str, str]) -> None:
    if msg_type == HS_CLIENT_HELLO:
        hello = parse_client_hello(body)
        fields["sni"] = hello.sni or ""
        fields["suites"] = ",".join(f"0x{c:04x}" for c in hello.cipher_suites)
        fields["alpn"] = ",".join(hello.alpn)
    elif msg_type == HS_SERVER_HELLO:
        fields["suites"] = f"0x{parse_server_hello(body).cipher_suite:04x}"
    elif msg_type == HS_CERTIFICATE:
        certificates = parse_certificate_message(body)
        fields["certs"] = ",".join(c.hex() for c in certificates)
        fields["cn"] = certificate_summary(certificates[0]).subject_cn or ""


@functools.cache
def tshark_handshakes(path: Path) -> Observed:
    out = subprocess.run(
        ["tshark", "-r", str(path), "-Y", "tcp && tls.handshake.type", "-T", "fields",
         "-e", "frame.number", "-e", "tls.handshake.type",
         "-e", "tls.handshake.extensions_server_name", "-e", "tls.handshake.ciphersuite",
         "-e", "tls.handshake.extensions_alpn_str", "-e", "tls.handshake.certificate"],
        capture_output=True, text=True, check=True, timeout=60).stdout
    seen: Observed = {}
    for line in out.splitlines():
        number, types, sni, suites, alpn, certs = line.split("\t")
        kinds = set(types.split(","))
        fields: dict[str, str] = {}
        if "1" in kinds:
            fields |= {"sni": sni, "alpn": alpn}
        if kinds & {"1", "2"}:
            fields["suites"] = ",".join(s for s in suites.split(",") if not is_grease(int(s, 16)))
        if "11" in kinds:
            fields["certs"] = certs
        if fields:
            seen[int(number)] = fields
    return seen


TLS_CAPTURES = ["zoom.pcap", "zoom2.pcap", "discord.pcap", "mumble.pcapng", "google_meet.pcapng",
                "lru_ipv6_caches.pcapng"]


def need_capture(name: str) -> Path:
    path = NDPI / name
    if not path.exists():
        pytest.skip(f"corpus capture {name} not present")
    return path


@pytest.mark.parametrize("name", TLS_CAPTURES)
def test_tcp_handshakes_match_tshark(name: str) -> None:
    path = need_capture(name)
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    ours = our_handshakes(path)
    theirs = tshark_handshakes(path)
    assert theirs, "tshark found no TLS handshake: wrong capture?"
    assert set(ours) == set(theirs)
    for number, fields in theirs.items():
        assert {k: ours[number][k] for k in fields} == fields, f"frame {number}"


def test_real_certificates_and_ech() -> None:
    zoom = our_handshakes(need_capture("zoom.pcap"))
    assert {fields["cn"] for fields in zoom.values() if "cn" in fields} == {"*.zoom.us"}
    cloudflare = our_handshakes(need_capture("lru_ipv6_caches.pcapng"))
    assert {f["cn"] for f in cloudflare.values() if "cn" in f} == {"sni.cloudflaressl.com"}
    # Chrome's ClientHello to meet.google.com carries encrypted_client_hello (ECH or its
    # GREASE form): the SNI we report is the outer one. The server answers TLS 1.3 and turns to
    # encrypted records right after its ServerHello.
    encrypted = []
    for segments in tcp_directions(need_capture("google_meet.pcapng")).values():
        reader = TlsStreamReader()
        for _, data in segments:
            for message in reader.feed(data):
                if message.msg_type == HS_CLIENT_HELLO:
                    hello = parse_client_hello(message.body)
                    assert hello.ech and hello.sni == "meet.google.com"
                    assert hello.supported_versions == (0x0304, 0x0303)
                elif message.msg_type == HS_SERVER_HELLO:
                    assert parse_server_hello(message.body).version == 0x0304
        encrypted.append(reader.encrypted_seen)
    assert sorted(encrypted) == [False, True]
