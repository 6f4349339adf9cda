"""analyzer.decode.stun: spec-built messages, RFC 5769 vectors, real captures against tshark."""

from __future__ import annotations

import collections
import shutil
import socket
import struct
import subprocess
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import BinaryIO

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.decode.stun import (
    ServiceHint,
    StunMessage,
    looks_like_stun,
    parse_stun,
    service_hint,
)
from analyzer.decode.turn import looks_like_channel_data, parse_channel_data
from analyzer.errors import DecodeError

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
NDPI = CORPUS / "ndpi"
COOKIE = 0x2112A442
TID = bytes(range(1, 13))


def hexbytes(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# --------------------------------------------------------------------------- builders (RFC 8489)


def attr(attr_type: int, value: bytes, pad: bool = True) -> bytes:
    """TLV attribute, value padded with zeros to a multiple of 4 (RFC 8489 §14)."""
    padding = b"\0" * (-len(value) % 4) if pad else b""
    return struct.pack("!HH", attr_type, len(value)) + value + padding


def message(msg_type: int, *attrs: bytes, tid: bytes = TID, classic: bool = False) -> bytes:
    """Header (type, length, cookie, 96-bit id), or classic (type, length, 128-bit id)."""
    body = b"".join(attrs)
    if classic:
        return struct.pack("!HH16s", msg_type, len(body), tid) + body
    return struct.pack("!HHI12s", msg_type, len(body), COOKIE, tid) + body


def xor_address(ip: str, port: int, tid: bytes = TID) -> bytes:
    """XOR-MAPPED-ADDRESS value by RFC 8489 §14.2, written out independently of the decoder."""
    packed = socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)
    key = struct.pack("!I", COOKIE) + tid
    family = 2 if len(packed) == 16 else 1
    xored = bytes(b ^ key[i] for i, b in enumerate(packed))
    return struct.pack("!xBH", family, port ^ (COOKIE >> 16)) + xored


def plain_address(ip: str, port: int) -> bytes:
    packed = socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)
    return struct.pack("!xBH", 2 if len(packed) == 16 else 1, port) + packed


# --------------------------------------------------------------------------- RFC 5769 vectors

# RFC 5769 §2.1-2.3 as printed in the RFC (the same bytes appear in several independent public
# test suites). SOFTWARE/USERNAME padding in the RFC is 0x20, not 0x00, on purpose.
RFC5769_REQUEST = hexbytes("""
    00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
    00 24 00 04 6e 00 01 ff 80 29 00 08 93 2f f9 b1 51 26 3b 36
    00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
    00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
    80 28 00 04 e5 7a 3b cf""")
RFC5769_IPV4 = hexbytes("""
    01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 08 00 01 a1 47 e1 12 a6 43
    00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
    80 28 00 04 c0 7d 4c 96""")
RFC5769_IPV6 = hexbytes("""
    01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
    00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
    80 28 00 04 c8 fb 0b 4c""")
RFC5769_ALL = (RFC5769_REQUEST, RFC5769_IPV4, RFC5769_IPV6)


@pytest.mark.parametrize("vector", RFC5769_ALL)
def test_fingerprint_constant_is_the_rfc_one(vector: bytes) -> None:
    # CRC-32 of everything before the FINGERPRINT attribute, XOR 0x5354554E, is its value:
    # this checks the constant itself on the RFC's vectors, independently of the decoder.
    assert zlib.crc32(vector[:-8]) ^ 0x5354554E == int.from_bytes(vector[-4:], "big")
    assert parse_stun(vector).fingerprint_valid is True


def test_rfc5769_sample_request() -> None:
    msg = parse_stun(RFC5769_REQUEST)
    assert (msg.msg_type, msg.method, msg.msg_class, msg.classic) == (1, 1, "request", False)
    assert msg.transaction_id == hexbytes("b7 e7 a7 01 bc 34 d6 86 fa 87 df ae")
    assert msg.software == "STUN test client"
    assert msg.username == "evtj:h6vY"
    assert msg.has_message_integrity and msg.has_fingerprint
    assert [a.type for a in msg.attributes] == [0x8022, 0x0024, 0x8029, 0x0006, 0x0008, 0x8028]
    assert msg.attribute(0x0024) == hexbytes("6e 00 01 ff")  # PRIORITY


def test_rfc5769_xor_mapped_ipv4_and_ipv6() -> None:
    assert parse_stun(RFC5769_IPV4).xor_mapped_address == ("192.0.2.1", 32853)
    assert parse_stun(RFC5769_IPV6).xor_mapped_address == (
        "2001:db8:1234:5678:11:2233:4455:6677", 32853)
    assert parse_stun(RFC5769_IPV4).msg_class == "success"


@pytest.mark.parametrize("offset", [0x20, 0x40, -9])
def test_fingerprint_detects_a_changed_byte(offset: int) -> None:
    corrupted = bytearray(RFC5769_REQUEST)
    corrupted[offset] ^= 0x01
    assert parse_stun(bytes(corrupted)).fingerprint_valid is False


def test_no_fingerprint_gives_none() -> None:
    msg = parse_stun(message(0x0001))
    assert (msg.has_fingerprint, msg.fingerprint_valid, msg.attributes) == (False, None, ())


# --------------------------------------------------------------------------- spec-built messages


@pytest.mark.parametrize(("msg_type", "method", "msg_class"), [
    (0x0001, 0x001, "request"),       # Binding request
    (0x0101, 0x001, "success"),       # Binding success
    (0x0111, 0x001, "error"),         # Binding error
    (0x0011, 0x001, "indication"),    # Binding indication
    (0x0003, 0x003, "request"),       # TURN Allocate
    (0x0113, 0x003, "error"),
    (0x0016, 0x006, "indication"),    # TURN Send indication
    (0x0017, 0x007, "indication"),    # TURN Data indication
    (0x0109, 0x009, "success"),       # ChannelBind success
    (0x000A, 0x00A, "request"),       # RFC 6062 Connect
    (0x0200, 0x080, "request"),       # GOOG-PING request (libwebrtc GOOG_PING_REQUEST)
    (0x0300, 0x080, "success"),       # GOOG_PING_RESPONSE
    (0x0310, 0x080, "error"),         # GOOG_PING_ERROR_RESPONSE
    (0x3EEF, 0xFFF, "request"),       # every method bit set, class bits clear
])
def test_method_and_class_bit_interleaving(msg_type: int, method: int, msg_class: str) -> None:
    msg = parse_stun(message(msg_type))
    assert (msg.method, msg.msg_class) == (method, msg_class)


@pytest.mark.parametrize(("ip", "port"), [
    ("192.0.2.1", 32853), ("203.0.113.250", 1), ("2001:db8::1", 3478),
    ("fe80::1234:5678:9abc:def0", 65535), ("::", 0),
])
def test_xor_addresses_ipv4_and_ipv6(ip: str, port: int) -> None:
    tid = bytes(range(0xA0, 0xAC))
    data = message(
        0x0103,
        attr(0x0016, xor_address(ip, port, tid)),   # XOR-RELAYED-ADDRESS
        attr(0x0020, xor_address(ip, port ^ 1, tid)),  # XOR-MAPPED-ADDRESS
        attr(0x0012, xor_address(ip, port ^ 2, tid)),  # XOR-PEER-ADDRESS
        attr(0x0001, plain_address(ip, port ^ 3)),     # MAPPED-ADDRESS, not XORed
        tid=tid,
    )
    msg = parse_stun(data)
    assert msg.xor_relayed_address == (ip, port)
    assert msg.xor_mapped_address == (ip, port ^ 1)
    assert msg.xor_peer_address == (ip, port ^ 2)
    assert msg.mapped_address == (ip, port ^ 3)


def test_microsoft_legacy_xor_mapped_address() -> None:
    msg = parse_stun(message(0x0101, attr(0x8020, xor_address("198.51.100.7", 50000))))
    assert msg.xor_mapped_address == ("198.51.100.7", 50000)


def test_odd_address_family_gives_none_not_an_error() -> None:
    bad = struct.pack("!xBH", 3, 1) + b"\0" * 4
    short = struct.pack("!xBH", 2, 1) + b"\0" * 4  # IPv6 family, IPv4 length
    msg = parse_stun(message(0x0101, attr(0x0020, bad), attr(0x0001, short)))
    assert (msg.xor_mapped_address, msg.mapped_address) == (None, None)


def test_turn_fields() -> None:
    data = message(
        0x0119,
        attr(0x0009, struct.pack("!HBB", 0, 4, 38) + b"Stale Nonce"),  # ERROR-CODE 438
        attr(0x000C, struct.pack("!HH", 0x4001, 0)),  # CHANNEL-NUMBER
        attr(0x000D, struct.pack("!I", 600)),          # LIFETIME
        attr(0x0014, b"example.org"),                  # REALM
        attr(0x0015, b"obMatJos2gAAAadl7W7PeDU4hKE72jda"),  # NONCE
        attr(0x0013, b"\x80\x00payload"),              # DATA
    )
    msg = parse_stun(data)
    assert (msg.method, msg.msg_class, msg.error_code) == (9, "error", 438)
    assert (msg.channel_number, msg.lifetime) == (0x4001, 600)
    assert (msg.realm, msg.nonce) == ("example.org", "obMatJos2gAAAadl7W7PeDU4hKE72jda")
    assert msg.data == b"\x80\x00payload"


def test_ms_turn_numbers_nonce_and_realm_the_other_way_round() -> None:
    # MS-TURN §2.2.2: MAGIC-COOKIE 0x000F (0x72C64BC6) first; 0x0014 is Nonce, 0x0015 Realm.
    data = message(0x0003, attr(0x000F, struct.pack("!I", 0x72C64BC6)),
                   attr(0x0014, b"nonce-value"), attr(0x0015, b"contoso.com"),
                   tid=bytes(16), classic=True)
    msg = parse_stun(data)
    assert (msg.classic, msg.realm, msg.nonce) == (True, "contoso.com", "nonce-value")
    assert service_hint(msg) == ServiceHint(
        "teams", "STUN attribute 0x000f MS-TURN MAGIC-COOKIE (Microsoft)")


def test_hostile_text_is_decoded_with_replacement() -> None:
    msg = parse_stun(message(0x0101, attr(0x8022, b"ice\xff\xfe4j"), attr(0x0006, b"\xc3")))
    assert msg.software == "ice\ufffd\ufffd4j"
    assert msg.username == "\ufffd"


def test_zoom_classic_stun_as_zoom_sends_it() -> None:
    # protocols.md §1.2: type 0x0001, length 0x0018, 16-byte id, attribute 0x0101 (len 0x14).
    tid = bytes.fromhex("c15dae63585d14392e582c260403bf30")
    data = struct.pack("!HH16s", 0x0001, 0x18, tid) + struct.pack("!HH", 0x0101, 0x14) \
        + b"12345678901234567890"
    assert looks_like_stun(data)
    msg = parse_stun(data)
    assert (msg.classic, msg.transaction_id, msg.length) == (True, tid, 24)
    assert msg.attribute(0x0101) == b"12345678901234567890"
    assert service_hint(msg) == ServiceHint("zoom", "STUN attribute 0x0101 (Zoom)")


def test_whatsapp_unpadded_last_attribute() -> None:
    # whatsapp_voice_and_message.pcap: Allocate with attribute 0x4000 of length 102, no padding.
    data = message(0x0003, attr(0x4000, bytes(102), pad=False))
    assert len(data) == 20 + 106
    assert looks_like_stun(data)
    assert parse_stun(data).attribute(0x4000) == bytes(102)
    # Only the last attribute may lack its padding.
    broken = message(0x0003, attr(0x4000, bytes(102), pad=False), attr(0x0020, bytes(8)))
    assert not looks_like_stun(broken)
    with pytest.raises(DecodeError):
        parse_stun(broken)


def test_trailing_bytes_need_strict_false() -> None:
    data = RFC5769_IPV4 + b"\0\0\0\0"
    assert looks_like_stun(data)
    with pytest.raises(DecodeError, match="after the message"):
        parse_stun(data)
    assert parse_stun(data, strict=False) == parse_stun(RFC5769_IPV4)


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "shorter"),
    (RFC5769_IPV4[:19], "shorter"),
    (b"\x40" + RFC5769_IPV4[1:], "first two bits"),
    (b"\x80" + RFC5769_IPV4[1:], "first two bits"),
    (RFC5769_IPV4[:-1], "exceeds"),
    (message(0x0101, attr(0x0020, bytes(8)))[:-4] + b"\0\0\0\0\0\0\0\0", "after the message"),
    (message(0x0101, struct.pack("!HH", 0x0020, 12) + bytes(8)), "overruns"),
    (message(0x0101, b"\0\x20"), "truncated"),
    (message(0x0005, tid=bytes(16), classic=True), "no classic STUN type"),
    (message(0x0001, attr(0x0101, b"12345", pad=False), tid=bytes(16), classic=True),
     "multiple of 4"),
])
def test_malformed_messages_raise_decode_error(data: bytes, reason: str) -> None:
    assert not looks_like_stun(data) or reason == "after the message"
    with pytest.raises(DecodeError, match=reason):
        parse_stun(data)


@pytest.mark.parametrize("payload", [
    bytes.fromhex("80c90001734e7b28800000051150ddd7bafeb9cbd7ce"),  # RTCP RR (lru_ipv6_caches)
    bytes.fromhex("16fefd0000000000000000004c010000400000"),       # DTLS record header
    bytes(20),                                                        # all zero, no cookie
])
def test_other_protocols_are_not_stun(payload: bytes) -> None:
    assert not looks_like_stun(payload)


# --------------------------------------------------------------------------- service hints


@pytest.mark.parametrize(("data", "service", "evidence"), [
    (message(0x0800, attr(0x4000, bytes(6))), "whatsapp", "STUN message type 0x0800 (WhatsApp)"),
    (message(0x0003, attr(0x4002, bytes(8))), "whatsapp", "STUN attribute 0x4002 (WhatsApp)"),
    (message(0x0001, attr(0x0103, bytes(8))), "zoom", "STUN attribute 0x0103 (Zoom)"),
    (message(0x0001, attr(0x8055, bytes(4))), "teams",
     "STUN attribute 0x8055 MS-SERVICE-QUALITY (Microsoft)"),
    (message(0x0101, attr(0x8095, bytes(8))), "teams",
     "STUN attribute 0x8095 MS-MULTIPLEXED-TURN-SESSION-ID (Microsoft)"),
    (message(0x0003, attr(0x8008, struct.pack("!I", 6))), "teams",
     "STUN attribute 0x8008 MS-VERSION (Microsoft)"),
    (message(0x0001, attr(0x24DF, bytes(4))), "teams",
     "STUN attribute 0x24df undocumented (Microsoft Teams/Skype)"),
    (message(0x0003, attr(0xFF03, bytes(4))), "google-meet", "STUN attribute 0xff03 (Google)"),
    (message(0x0113, attr(0x0014, b"turn.l.google.com")), "google-meet",
     "STUN REALM 'turn.l.google.com' (Google)"),
    (message(0x0008, attr(0x0014, b"signal.org")), "signal", "STUN REALM 'signal.org' (Signal)"),
    (message(0x0008, attr(0x0014, b"turn.WhisperSystems.org")), "signal",
     "STUN REALM 'turn.WhisperSystems.org' (Signal)"),
    (message(0x0003, attr(0x0014, b"turner.facebook")), "messenger",
     "STUN REALM 'turner.facebook' (Meta Messenger)"),
    (message(0x0003, attr(0x0014, b"telegram.org")), "telegram",
     "STUN REALM 'telegram.org' (Telegram)"),
    (message(0x0001, attr(0x8022, b"ice4j.org")), "jitsi", "STUN SOFTWARE 'ice4j.org' (Jitsi)"),
])
def test_service_hint_rules(data: bytes, service: str, evidence: str) -> None:
    assert service_hint(parse_stun(data)) == ServiceHint(service, evidence)


@pytest.mark.parametrize("data", [
    RFC5769_REQUEST,
    # libwebrtc's GOOG-NETWORK-INFO: WhatsApp sends it too (lru_ipv6_caches.pcapng frame 8).
    message(0x0001, attr(0xC057, bytes(4)), attr(0x0024, bytes(4))),
    message(0x0200),  # GOOG-PING: any libwebrtc peer
    # nDPI reads REALM only; a NONCE is an opaque server value.
    message(0x0003, attr(0x0015, b"signal.org")),
    message(0x0003, attr(0x000F, b"\0\0\0\0")),  # MAGIC-COOKIE with a wrong value
    message(0x0101, attr(0x8022, b"Coturn-4.5.0.5 'dan Eider'")),
])
def test_no_service_hint(data: bytes) -> None:
    assert service_hint(parse_stun(data)) is None


def test_whatsapp_message_type_outranks_other_rules() -> None:
    msg = parse_stun(message(0x0801, attr(0x8070, bytes(4)), attr(0x0014, b"signal.org")))
    assert service_hint(msg) == ServiceHint("whatsapp", "STUN message type 0x0801 (WhatsApp)")


def test_long_realm_is_cut_in_evidence() -> None:
    hint = service_hint(parse_stun(message(0x0003, attr(0x0014, b"x" * 300 + b".signal.org"))))
    assert hint is not None and len(hint.evidence) < 100


# --------------------------------------------------------------------------- fuzzing


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_parse_raises_only_decode_error(data: bytes) -> None:
    ok = looks_like_stun(data)
    try:
        parse_stun(data, strict=False)
    except DecodeError:
        assert not ok
    try:
        msg = parse_stun(data)
    except DecodeError:
        return
    service_hint(msg)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 0x3FFF), st.booleans(), st.binary(max_size=120))
def test_fuzz_attribute_walk(msg_type: int, cookie: bool, body: bytes) -> None:
    """Valid headers over random bodies, so the attribute walk and decoders get exercised."""
    head = struct.pack("!HHI12s", msg_type, len(body), COOKIE if cookie else 0, TID)
    data = head + body
    try:
        msg = parse_stun(data)
    except DecodeError:
        assert not looks_like_stun(data)
        return
    assert looks_like_stun(data)
    assert sum(4 + len(a.value) for a in msg.attributes) <= len(body)
    service_hint(msg)


# --------------------------------------------------------------------------- real captures

needs_corpus = pytest.mark.skipif(not NDPI.is_dir(), reason="shared corpus absent")
needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark absent")

Endpoint = tuple[str, int]


def _reader(f: BinaryIO) -> dpkt.pcap.Reader | dpkt.pcapng.Reader:
    magic = f.read(4)
    f.seek(0)
    return dpkt.pcapng.Reader(f) if magic == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(f)


def udp_payloads(path: Path) -> Iterator[tuple[int, Endpoint, Endpoint, bytes]]:
    """(frame number, source, destination, UDP payload) of each Ethernet UDP packet."""
    with path.open("rb") as f:
        for number, (_, frame) in enumerate(_reader(f), 1):
            ip = dpkt.ethernet.Ethernet(frame).data
            if isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6) and isinstance(ip.data, dpkt.udp.UDP):
                family = socket.AF_INET if isinstance(ip, dpkt.ip.IP) else socket.AF_INET6
                src = (socket.inet_ntop(family, ip.src), ip.data.sport)
                dst = (socket.inet_ntop(family, ip.dst), ip.data.dport)
                yield number, src, dst, bytes(ip.data.data)


def stun_messages(path: Path) -> Iterator[tuple[int, Endpoint, Endpoint, StunMessage]]:
    """STUN in UDP payloads, directly or inside TURN ChannelData."""
    for number, src, dst, payload in udp_payloads(path):
        if looks_like_channel_data(payload):
            payload = parse_channel_data(payload).data
        if looks_like_stun(payload):
            yield number, src, dst, parse_stun(payload)


TSHARK_FILES = [
    "stun.pcap", "stun_msteams_unidir.pcapng", "skype-conference-call.pcap", "stun_zoom.pcapng",
    "whatsapp_voice_and_message.pcap", "stun_dtls_rtp.pcapng", "stun_dtls_rtp_unidir.pcapng",
    "lru_ipv6_caches.pcapng",
]

ADDRESS_FIELDS = {  # attribute type -> StunMessage field
    0x0001: "mapped_address", 0x0020: "xor_mapped_address", 0x8020: "xor_mapped_address",
    0x0016: "xor_relayed_address", 0x0012: "xor_peer_address",
}


@cache
def tshark_stun(name: str) -> dict[int, dict[str, object]]:
    """Per frame, what tshark decoded in the first STUN PDU over UDP (PDML)."""
    out = subprocess.run(["tshark", "-r", str(NDPI / name), "-Y", "stun and udp", "-T", "pdml"],
                         capture_output=True, check=True).stdout
    frames: dict[int, dict[str, object]] = {}
    for packet in ET.fromstring(out).iter("packet"):
        number = int(_show(packet, "proto[@name='geninfo']/field[@name='num']"))
        stun = packet.find("proto[@name='stun']")
        if stun is not None:
            frames[number] = _tshark_fields(stun)
    return frames


def _show(element: ET.Element, path: str) -> str:
    found = element.find(path)
    assert found is not None, path
    return found.get("show", "")


def _tshark_fields(stun: ET.Element) -> dict[str, object]:
    fields: dict[str, object] = {"length": int(_show(stun, "field[@name='stun.length']"))}
    for attribute in stun.iter("field"):
        if attribute.get("name") != "stun.attribute":
            continue
        attr_type = int(attribute.get("show", ""), 16)
        values = {f.get("name"): f.get("show", "") for f in attribute.iter("field")}
        ip = values.get("stun.att.ipv4") or values.get("stun.att.ipv6")
        if attr_type in ADDRESS_FIELDS and ip:
            fields.setdefault(ADDRESS_FIELDS[attr_type], (ip, int(values["stun.att.port"])))
        for key in ("software", "realm"):
            if f"stun.att.{key}" in values:
                fields.setdefault(key, values[f"stun.att.{key}"])
        if "stun.att.crc32.status" in values:
            fields["fingerprint_valid"] = values["stun.att.crc32.status"] == "1"
    return fields


@needs_corpus
@needs_tshark
@pytest.mark.parametrize("name", TSHARK_FILES)
def test_real_stun_agrees_with_tshark(name: str) -> None:
    expected = tshark_stun(name)
    compared = 0
    for number, _, _, payload in udp_payloads(NDPI / name):
        if number not in expected or not looks_like_stun(payload):
            continue
        msg = parse_stun(payload)
        want = expected[number]
        assert want["length"] == msg.length, number
        for field in ("mapped_address", "xor_mapped_address", "xor_relayed_address",
                      "xor_peer_address", "software", "realm", "fingerprint_valid"):
            assert getattr(msg, field) == want.get(field), (number, field)
        compared += 1
    # every UDP frame tshark calls STUN and that starts with STUN was compared
    direct = {n for n, _, _, p in udp_payloads(NDPI / name) if n in expected and p[:1] < b"\x40"}
    assert compared == len(direct) > 0


@needs_corpus
def test_real_fingerprints_and_the_one_bad_crc() -> None:
    """stun.pcap: tshark marks one FINGERPRINT bad (crc32.status 0); so must we."""
    verdicts = collections.Counter(
        m.fingerprint_valid for *_, m in stun_messages(NDPI / "stun.pcap") if m.has_fingerprint)
    assert verdicts[False] == 1 and verdicts[True] > 10


@needs_corpus
@needs_tshark
def test_real_classic_stun_agrees_with_tshark() -> None:
    out = subprocess.run(
        ["tshark", "-r", str(NDPI / "stun_classic.pcap"), "-Y", "classicstun", "-T", "fields",
         "-e", "frame.number", "-e", "classicstun.type", "-e", "classicstun.att.ipv4",
         "-e", "classicstun.att.port"], capture_output=True, text=True, check=True).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    messages = {n: m for n, _, _, m in stun_messages(NDPI / "stun_classic.pcap")}
    assert len(rows) == 2
    for number, msg_type, ip, port in rows:
        msg = messages[int(number)]
        assert msg.classic and len(msg.transaction_id) == 16
        assert msg.msg_type == int(msg_type, 16)
        assert msg.mapped_address == ((ip, int(port)) if ip else None)


@needs_corpus
def test_real_zoom_classic_stun() -> None:
    found = [(n, m) for n, _, _, m in stun_messages(NDPI / "zoom.pcap")]
    assert found and all(m.classic and len(m.transaction_id) == 16 for _, m in found)
    requests = [m for _, m in found if m.msg_type == 0x0001]
    # Here the value is "1234567890123456789" plus a NUL, not the 20 digits protocols.md quotes
    # from zoom_p2p.pcapng; the answers are type 0x0002 with an address-like attribute 0x0103.
    assert requests and all(m.attribute(0x0101) == b"1234567890123456789\0" for m in requests)
    answers = [m for _, m in found if m.msg_type != 0x0001]
    assert answers and {m.msg_type for m in answers} == {0x0002}
    assert {service_hint(m).service for _, m in found} == {"zoom"}  # type: ignore[union-attr]


# nDPI labels (labels.tsv, default config) per flow, and what service_hint says from STUN alone.
# Where they differ nDPI used something other than STUN content; the reason is given.
SERVICE_OF_NDPI_APP = {"WhatsAppCall": "whatsapp", "Skype_TeamsCall": "teams",
                       "GoogleCall": "google-meet", "FacebookVoip": "messenger", "Zoom": "zoom"}
NOT_FROM_STUN = {
    # nDPI: ports 19302-19309/3478 with server in 142.250.82.0/24 -> GoogleCall (stun.c,
    # ndpi_int_stun_add_connection); the STUN itself carries only libwebrtc attributes.
    ("stun_dtls_rtp.pcapng", 19305): "Google IP prefix and port",
    ("stun.pcap", 49153): "Google IP prefix and port",
    # nDPI labels 134.224.90.111:8801 DTLS.Zoom from Zoom's port/addresses, not from STUN (the
    # ICE checks there are plain RFC 8445 ones).
    ("stun_zoom.pcapng", 53065): "Zoom port 8801",
    ("stun_zoom.pcapng", 48854): "Zoom port 8801",
}


def _ndpi_labels(name: str) -> dict[frozenset[Endpoint], str]:
    """UDP flows of `name` (default config) -> nDPI's label, e.g. '78.45/STUN.WhatsAppCall'."""
    labels: dict[frozenset[Endpoint], str] = {}
    for line in (CORPUS / "labels.tsv").read_text().splitlines()[1:]:
        cols = line.split("\t")
        if cols[0] == f"ndpi/{name}" and cols[1] == "default" and cols[3] == "UDP":
            labels[frozenset(_canon(_endpoint(c)) for c in (cols[4], cols[6]))] = cols[7]
    return labels


def _endpoint(text: str) -> Endpoint:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


@needs_corpus
@pytest.mark.parametrize("name", [
    "stun.pcap", "stun_msteams_unidir.pcapng", "skype-conference-call.pcap", "zoom.pcap",
    "whatsapp_voice_and_message.pcap", "stun_dtls_rtp.pcapng", "lru_ipv6_caches.pcapng",
    "stun_zoom.pcapng", "stun_classic.pcap",
])
def test_service_hints_match_ndpi_labels(name: str) -> None:
    seen: dict[frozenset[Endpoint], set[str | None]] = collections.defaultdict(set)
    for _, src, dst, msg in stun_messages(NDPI / name):
        hint = service_hint(msg)
        seen[frozenset((_canon(src), _canon(dst)))].add(hint.service if hint else None)
    checked = 0
    for ends, label in _ndpi_labels(name).items():
        if ("2600:1900:4160:5999::19::", 3478) in ends:
            continue  # nDPI printed an impossible IPv6 text (two '::'), ours 2600:...:0:19::
        if ends not in seen:
            assert "STUN" not in label, f"nDPI saw STUN in {set(ends)}, we did not"
            continue  # no STUN in this flow: Zoom SFU media, TLS, DNS...
        got = seen[ends] - {None}
        app = label.replace(".", "/").split("/")[-1]
        if any((name, port) in NOT_FROM_STUN for _, port in ends):
            assert not got, (ends, got)
        else:
            assert got == {SERVICE_OF_NDPI_APP[app]} if app in SERVICE_OF_NDPI_APP else not got, (
                ends, label, got)
        checked += 1
    assert checked > 0


def _canon(endpoint: Endpoint) -> Endpoint:
    """One text per address (nDPI and inet_ntop compress IPv6 zeros differently)."""
    host, port = endpoint
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.inet_ntop(family, socket.inet_pton(family, host)), port
    except OSError:
        return host, port
