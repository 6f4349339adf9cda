"""Tests for analyzer.decode.quic.

* RFC 9001 Appendix A and RFC 9369 Appendix A test vectors (keys, client and server Initial,
  Retry), copied from the RFC texts.
* Packets the test protects itself for what the RFCs give no vector for (draft-29, coalesced
  packets, ClientHellos split over several Initials). The test's protection path is its own:
  HKDF-Expand with the literal HkdfLabel bytes printed in RFC 9001 / RFC 9369 Appendix A.1.
* The Chrome-to-meet.google.com Initial in the nDPI capture google_meet.pcapng, compared with
  tshark's decryption of the same packet.
"""

from __future__ import annotations

import contextlib
import hmac
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dpkt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.decode.quic import (
    VERSION_1,
    VERSION_2,
    QuicInitialAssembler,
    contiguous_crypto,
    decrypt_client_initial,
    initial_keys,
    looks_like_quic_long_header,
    parse_initial_frames,
    parse_long_header,
    unprotect_packet,
    version_name,
)
from analyzer.decode.tls import parse_server_hello
from analyzer.decode.tls_registry import is_grease
from analyzer.errors import DecodeError

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
NDPI = CORPUS / "ndpi"
DRAFT_29 = 0xFF00001D


def unhex(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


RFC_DCID = unhex("8394c8f03e515708")

# RFC 9001 A.2 and RFC 9369 A.2: the same CRYPTO frame (a ClientHello) in both.
RFC_CLIENT_CRYPTO_FRAME = unhex("""
060040f1010000ed0303ebf8fa56f129 39b9584a3896472ec40bb863cfd3e868
04fe3a47f06a2b69484c000004130113 02010000c000000010000e00000b6578
616d706c652e636f6dff01000100000a 00080006001d00170018001000070005
04616c706e0005000501000000000033 00260024001d00209370b2c9caa47fba
baf4559fedba753de171fa71f50f1ce1 5d43e994ec74d748002b000302030400
0d0010000e0403050306030203080408 050806002d00020101001c0002400100
3900320408ffffffffffffffff050480 00ffff07048000ffff08011001048000
75300901100f088394c8f03e51570806 048000ffff
""")

RFC9001_CLIENT_INITIAL = unhex("""
c000000001088394c8f03e5157080000 449e7b9aec34d1b1c98dd7689fb8ec11
d242b123dc9bd8bab936b47d92ec356c 0bab7df5976d27cd449f63300099f399
1c260ec4c60d17b31f8429157bb35a12 82a643a8d2262cad67500cadb8e7378c
8eb7539ec4d4905fed1bee1fc8aafba1 7c750e2c7ace01e6005f80fcb7df6212
30c83711b39343fa028cea7f7fb5ff89 eac2308249a02252155e2347b63d58c5
457afd84d05dfffdb20392844ae81215 4682e9cf012f9021a6f0be17ddd0c208
4dce25ff9b06cde535d0f920a2db1bf3 62c23e596d11a4f5a6cf3948838a3aec
4e15daf8500a6ef69ec4e3feb6b1d98e 610ac8b7ec3faf6ad760b7bad1db4ba3
485e8a94dc250ae3fdb41ed15fb6a8e5 eba0fc3dd60bc8e30c5c4287e53805db
059ae0648db2f64264ed5e39be2e20d8 2df566da8dd5998ccabdae053060ae6c
7b4378e846d29f37ed7b4ea9ec5d82e7 961b7f25a9323851f681d582363aa5f8
9937f5a67258bf63ad6f1a0b1d96dbd4 faddfcefc5266ba6611722395c906556
be52afe3f565636ad1b17d508b73d874 3eeb524be22b3dcbc2c7468d54119c74
68449a13d8e3b95811a198f3491de3e7 fe942b330407abf82a4ed7c1b311663a
c69890f4157015853d91e923037c227a 33cdd5ec281ca3f79c44546b9d90ca00
f064c99e3dd97911d39fe9c5d0b23a22 9a234cb36186c4819e8b9c5927726632
291d6a418211cc2962e20fe47feb3edf 330f2c603a9d48c0fcb5699dbfe58964
25c5bac4aee82e57a85aaf4e2513e4f0 5796b07ba2ee47d80506f8d2c25e50fd
14de71e6c418559302f939b0e1abd576 f279c4b2e0feb85c1f28ff18f58891ff
ef132eef2fa09346aee33c28eb130ff2 8f5b766953334113211996d20011a198
e3fc433f9f2541010ae17c1bf202580f 6047472fb36857fe843b19f5984009dd
c324044e847a4f4a0ab34f719595de37 252d6235365e9b84392b061085349d73
203a4a13e96f5432ec0fd4a1ee65accd d5e3904df54c1da510b0ff20dcc0c77f
cb2c0e0eb605cb0504db87632cf3d8b4 dae6e705769d1de354270123cb11450e
fc60ac47683d7b8d0f811365565fd98c 4c8eb936bcab8d069fc33bd801b03ade
a2e1fbc5aa463d08ca19896d2bf59a07 1b851e6c239052172f296bfb5e724047
90a2181014f3b94a4e97d117b4381303 68cc39dbb2d198065ae3986547926cd2
162f40a29f0c3c8745c0f50fba3852e5 66d44575c29d39a03f0cda721984b6f4
40591f355e12d439ff150aab7613499d bd49adabc8676eef023b15b65bfc5ca0
6948109f23f350db82123535eb8a7433 bdabcb909271a6ecbcb58b936a88cd4e
8f2e6ff5800175f113253d8fa9ca8885 c2f552e657dc603f252e1a8e308f76f0
be79e2fb8f5d5fbbe2e30ecadd220723 c8c0aea8078cdfcb3868263ff8f09400
54da48781893a7e49ad5aff4af300cd8 04a6b6279ab3ff3afb64491c85194aab
760d58a606654f9f4400e8b38591356f bf6425aca26dc85244259ff2b19c41b9
f96f3ca9ec1dde434da7d2d392b905dd f3d1f9af93d1af5950bd493f5aa731b4
056df31bd267b6b90a079831aaf579be 0a39013137aac6d404f518cfd4684064
7e78bfe706ca4cf5e9c5453e9f7cfd2b 8b4c8d169a44e55c88d4a9a7f9474241
e221af44860018ab0856972e194cd934
""")

RFC_SERVER_PAYLOAD = unhex("""
02000000000600405a020000560303ee fce7f7b37ba1d1632e96677825ddf739
88cfc79825df566dc5430b9a045a1200 130100002e00330024001d00209d3c94
0d89690b84d08a60993c144eca684d10 81287c834d5311bcf32bb9da1a002b00
020304
""")

RFC9001_SERVER_INITIAL = unhex("""
cf000000010008f067a5502a4262b500 4075c0d95a482cd0991cd25b0aac406a
5816b6394100f37a1c69797554780bb3 8cc5a99f5ede4cf73c3ec2493a1839b3
dbcba3f6ea46c5b7684df3548e7ddeb9 c3bf9c73cc3f3bded74b562bfb19fb84
022f8ef4cdd93795d77d06edbb7aaf2f 58891850abbdca3d20398c276456cbc4
2158407dd074ee
""")

RFC9001_RETRY = unhex("ff000000010008f067a5502a4262b574 6f6b656e04a265ba2eff4d829058fb3f"
                      "0f2496ba")

RFC9369_CLIENT_INITIAL = unhex("""
d76b3343cf088394c8f03e5157080000 449ea0c95e82ffe67b6abcdb4298b485
dd04de806071bf03dceebfa162e75d6c 96058bdbfb127cdfcbf903388e99ad04
9f9a3dd4425ae4d0992cfff18ecf0fdb 5a842d09747052f17ac2053d21f57c5d
250f2c4f0e0202b70785b7946e992e58 a59ac52dea6774d4f03b55545243cf1a
12834e3f249a78d395e0d18f4d766004 f1a2674802a747eaa901c3f10cda5500
cb9122faa9f1df66c392079a1b40f0de 1c6054196a11cbea40afb6ef5253cd68
18f6625efce3b6def6ba7e4b37a40f77 32e093daa7d52190935b8da58976ff33
12ae50b187c1433c0f028edcc4c2838b 6a9bfc226ca4b4530e7a4ccee1bfa2a3
d396ae5a3fb512384b2fdd851f784a65 e03f2c4fbe11a53c7777c023462239dd
6f7521a3f6c7d5dd3ec9b3f233773d4b 46d23cc375eb198c63301c21801f6520
bcfb7966fc49b393f0061d974a2706df 8c4a9449f11d7f3d2dcbb90c6b877045
636e7c0c0fe4eb0f697545460c806910 d2c355f1d253bc9d2452aaa549e27a1f
ac7cf4ed77f322e8fa894b6a83810a34 b361901751a6f5eb65a0326e07de7c12
16ccce2d0193f958bb3850a833f7ae43 2b65bc5a53975c155aa4bcb4f7b2c4e5
4df16efaf6ddea94e2c50b4cd1dfe060 17e0e9d02900cffe1935e0491d77ffb4
fdf85290fdd893d577b1131a610ef6a5 c32b2ee0293617a37cbb08b847741c3b
8017c25ca9052ca1079d8b78aebd4787 6d330a30f6a8c6d61dd1ab5589329de7
14d19d61370f8149748c72f132f0fc99 f34d766c6938597040d8f9e2bb522ff9
9c63a344d6a2ae8aa8e51b7b90a4a806 105fcbca31506c446151adfeceb51b91
abfe43960977c87471cf9ad4074d30e1 0d6a7f03c63bd5d4317f68ff325ba3bd
80bf4dc8b52a0ba031758022eb025cdd 770b44d6d6cf0670f4e990b22347a7db
848265e3e5eb72dfe8299ad7481a4083 22cac55786e52f633b2fb6b614eaed18
d703dd84045a274ae8bfa73379661388 d6991fe39b0d93debb41700b41f90a15
c4d526250235ddcd6776fc77bc97e7a4 17ebcb31600d01e57f32162a8560cacc
7e27a096d37a1a86952ec71bd89a3e9a 30a2a26162984d7740f81193e8238e61
f6b5b984d4d3dfa033c1bb7e4f0037fe bf406d91c0dccf32acf423cfa1e70710
10d3f270121b493ce85054ef58bada42 310138fe081adb04e2bd901f2f13458b
3d6758158197107c14ebb193230cd115 7380aa79cae1374a7c1e5bbcb80ee23e
06ebfde206bfb0fcbc0edc4ebec30966 1bdd908d532eb0c6adc38b7ca7331dce
8dfce39ab71e7c32d318d136b6100671 a1ae6a6600e3899f31f0eed19e3417d1
34b90c9058f8632c798d4490da498730 7cba922d61c39805d072b589bd52fdf1
e86215c2d54e6670e07383a27bbffb5a ddf47d66aa85a0c6f9f32e59d85a44dd
5d3b22dc2be80919b490437ae4f36a0a e55edf1d0b5cb4e9a3ecabee93dfc6e3
8d209d0fa6536d27a5d6fbb17641cde2 7525d61093f1b28072d111b2b4ae5f89
d5974ee12e5cf7d5da4d6a31123041f3 3e61407e76cffcdcfd7e19ba58cf4b53
6f4c4938ae79324dc402894b44faf8af bab35282ab659d13c93f70412e85cb19
9a37ddec600545473cfb5a05e08d0b20 9973b2172b4d21fb69745a262ccde96b
a18b2faa745b6fe189cf772a9f84cbfc
""")

RFC9369_SERVER_INITIAL = unhex("""
dc6b3343cf0008f067a5502a4262b500 4075d92faaf16f05d8a4398c47089698
baeea26b91eb761d9b89237bbf872630 17915358230035f7fd3945d88965cf17
f9af6e16886c61bfc703106fbaf3cb4c fa52382dd16a393e42757507698075b2
c984c707f0a0812d8cd5a6881eaf21ce da98f4bd23f6fe1a3e2c43edd9ce7ca8
4bed8521e2e140
""")

RFC9369_RETRY = unhex("cf6b3343cf0008f067a5502a4262b574 6f6b656ec8646ce8bfe33952d9555436"
                      "65dcc7b6")


# ---------------------------------------------------------------------------------------------
# RFC test vectors


@pytest.mark.parametrize(("version", "sender", "key", "iv", "hp"), [
    (VERSION_1, "client", "1f369613dd76d5467730efcbe3b1a22d", "fa044b2f42a3fd3b46fb255c",
     "9f50449e04a0e810283a1e9933adedd2"),
    (VERSION_1, "server", "cf3a5331653c364c88f0f379b6067e37", "0ac1493ca1905853b0bba03e",
     "c206b8d9b9f0f37644430b490eeaa314"),
    (VERSION_2, "client", "8b1a0bc121284290a29e0971b5cd045d", "91f73e2351d8fa91660e909f",
     "45b95e15235d6f45a6b19cbcb0294ba9"),
    (VERSION_2, "server", "82db637861d55e1d011f19ea71d5d2a7", "dd13c276499c0249d3310652",
     "edf6d05c83121201b436e16877593c3a"),
])
def test_initial_keys_match_rfc(version: int, sender: str, key: str, iv: str, hp: str) -> None:
    keys = initial_keys(version, RFC_DCID, sender)
    assert (keys.key.hex(), keys.iv.hex(), keys.hp.hex()) == (key, iv, hp)


@pytest.mark.parametrize(("packet", "version", "first_byte"), [
    (RFC9001_CLIENT_INITIAL, VERSION_1, 0xC3),
    (RFC9369_CLIENT_INITIAL, VERSION_2, 0xD3),
])
def test_client_initial_vectors(packet: bytes, version: int, first_byte: int) -> None:
    header = parse_long_header(packet)
    assert (header.packet_type, header.version, header.dcid, header.scid) == (
        "initial", version, RFC_DCID, b"")
    assert (header.token, header.length, header.pn_offset, header.packet_end) == (
        b"", 1182, 18, len(packet))
    opened = unprotect_packet(packet, header, initial_keys(version, RFC_DCID))
    assert (opened.first_byte, opened.packet_number) == (first_byte, 2)
    # "plus enough PADDING frames to make a 1162-byte payload"
    assert opened.payload == RFC_CLIENT_CRYPTO_FRAME.ljust(1162, b"\x00")
    initial = decrypt_client_initial(packet)
    assert initial.crypto_frames == RFC_CLIENT_CRYPTO_FRAME[4:]  # after type, offset, length
    hello = initial.client_hello
    assert hello is not None
    assert (hello.sni, hello.alpn, hello.cipher_suites) == ("example.com", ("alpn",),
                                                            (0x1301, 0x1302))
    assert hello.supported_versions == (0x0304,) and hello.quic_transport_parameters
    assert not hello.ech


@pytest.mark.parametrize(("packet", "version"), [(RFC9001_SERVER_INITIAL, VERSION_1),
                                                 (RFC9369_SERVER_INITIAL, VERSION_2)])
def test_server_initial_vectors(packet: bytes, version: int) -> None:
    header = parse_long_header(packet)
    assert (header.packet_type, header.dcid, header.scid) == ("initial", b"",
                                                              unhex("f067a5502a4262b5"))
    opened = unprotect_packet(packet, header, initial_keys(version, RFC_DCID, "server"))
    assert (opened.packet_number, opened.payload) == (1, RFC_SERVER_PAYLOAD)
    ((offset, data),) = parse_initial_frames(opened.payload)  # the ACK frame is skipped
    server_hello = parse_server_hello(data[4:])
    assert (offset, server_hello.cipher_suite, server_hello.version) == (0, 0x1301, 0x0304)
    with pytest.raises(DecodeError):  # client keys do not open the server's packet
        decrypt_client_initial(packet)


@pytest.mark.parametrize(("packet", "version"), [(RFC9001_RETRY, VERSION_1),
                                                 (RFC9369_RETRY, VERSION_2)])
def test_retry_vectors(packet: bytes, version: int) -> None:
    header = parse_long_header(packet)
    assert (header.packet_type, header.version, header.token) == ("retry", version, b"token")
    assert header.scid == unhex("f067a5502a4262b5") and header.pn_offset is None
    with pytest.raises(DecodeError):
        decrypt_client_initial(packet)


def test_version_negotiation_and_unknown_versions() -> None:
    vn = b"\xAB" + bytes(4) + b"\x04abcd" + b"\x02xy" + unhex("00000001 6b3343cf 1a2a3a4a")
    header = parse_long_header(vn)
    assert (header.packet_type, header.dcid, header.scid) == ("version_negotiation", b"abcd",
                                                              b"xy")
    assert header.supported_versions == (VERSION_1, VERSION_2, 0x1A2A3A4A)
    assert looks_like_quic_long_header(vn)
    with pytest.raises(DecodeError):
        parse_long_header(vn[:-1])
    gquic = b"\xC3" + b"Q046" + b"\x08" + bytes(8) + b"\x00" + b"payload"
    assert parse_long_header(gquic).packet_type == "unknown"
    assert version_name(VERSION_2) == "QUIC v2" and version_name(DRAFT_29) == "draft-29"
    assert version_name(0x51303436) == "0x51303436"


def test_looks_like_quic_long_header() -> None:
    assert looks_like_quic_long_header(RFC9001_CLIENT_INITIAL)
    assert looks_like_quic_long_header(RFC9369_RETRY)
    assert not looks_like_quic_long_header(RFC9001_CLIENT_INITIAL[:6])
    assert not looks_like_quic_long_header(b"\x40" + RFC9001_CLIENT_INITIAL[1:])  # short header
    assert not looks_like_quic_long_header(b"\x80" + RFC9001_CLIENT_INITIAL[1:])  # no fixed bit
    too_long_cid = b"\xC0" + unhex("00000001") + b"\x15" + bytes(21) + b"\x00" + bytes(20)
    assert not looks_like_quic_long_header(too_long_cid)


# ---------------------------------------------------------------------------------------------
# Packets protected by the test itself (independent path: literal HkdfLabel bytes)

# HkdfLabel structures printed in RFC 9001 A.1 and RFC 9369 A.1.
LABEL_CLIENT_IN = unhex("00200f746c73313320636c69656e7420696e00")
LABELS = {
    "v1": (unhex("00100e746c7331332071756963206b657900"),
           unhex("000c0d746c733133207175696320697600"),
           unhex("00100d746c733133207175696320687000")),
    "v2": (unhex("001010746c73313320717569637632206b657900"),
           unhex("000c0f746c7331332071756963763220697600"),
           unhex("00100f746c7331332071756963763220687000")),
}
SALTS = {VERSION_1: "38762cf7f55934b34d179ae6a4c80cadccbb7f0a",
         VERSION_2: "0dede3def700a6db819381be6e269dcbf9bd2ed9",
         DRAFT_29: "afbfec289993d24c9e9786f19c6111e04390a899"}
TYPE_BITS = {VERSION_1: 0, VERSION_2: 1, DRAFT_29: 0}


def _expand(secret: bytes, info: bytes) -> bytes:
    return HKDFExpand(hashes.SHA256(), int.from_bytes(info[:2], "big"), info).derive(secret)


def varint(value: int) -> bytes:
    for size, prefix in ((1, 0), (2, 0x40), (4, 0x80), (8, 0xC0)):
        if value < 1 << (8 * size - 2):
            return (value | prefix << (8 * size - 8)).to_bytes(size, "big")
    raise ValueError(value)


def protect_initial(version: int, dcid: bytes, frames: bytes, *, pn: int = 0,
                    scid: bytes = b"\x01\x02\x03\x04", token: bytes = b"") -> bytes:
    """A client Initial with a 2-byte packet number, protected per RFC 9001 §5."""
    secret = _expand(hmac.new(bytes.fromhex(SALTS[version]), dcid, "sha256").digest(),
                     LABEL_CLIENT_IN)
    key, iv, hp = (_expand(secret, info) for info in LABELS["v2" if version == VERSION_2 else "v1"])
    frames = frames.ljust(max(len(frames), 40), b"\x00")  # room for the header protection sample
    first = 0xC0 | TYPE_BITS[version] << 4 | 0x01
    header = (bytes([first]) + version.to_bytes(4, "big") + bytes([len(dcid)]) + dcid
              + bytes([len(scid)]) + scid + varint(len(token)) + token
              + varint(2 + len(frames) + 16) + pn.to_bytes(2, "big"))
    nonce = (int.from_bytes(iv, "big") ^ pn).to_bytes(12, "big")
    sealed = AESGCM(key).encrypt(nonce, frames, header)
    sample = sealed[2:18]  # pn_offset + 4, with a 2-byte packet number
    encryptor = Cipher(algorithms.AES(hp), modes.ECB()).encryptor()
    mask = encryptor.update(sample) + encryptor.finalize()
    masked = bytes([header[0] ^ (mask[0] & 0x0F)]) + header[1:-2] + bytes(
        b ^ m for b, m in zip(header[-2:], mask[1:3], strict=True))
    return masked + sealed


def crypto_frame(offset: int, data: bytes) -> bytes:
    return b"\x06" + varint(offset) + varint(len(data)) + data


CH_MESSAGE = RFC_CLIENT_CRYPTO_FRAME[4:]  # a whole ClientHello handshake message


@pytest.mark.parametrize("version", [VERSION_1, VERSION_2, DRAFT_29])
def test_self_protected_initial_each_version(version: int) -> None:
    dcid = bytes(range(10, 18))
    packet = protect_initial(version, dcid, crypto_frame(0, CH_MESSAGE), pn=7, token=b"tok")
    initial = decrypt_client_initial(packet)
    assert (initial.version, initial.dcid, initial.packet_number) == (version, dcid, 7)
    assert initial.client_hello is not None and initial.client_hello.sni == "example.com"
    assert parse_long_header(packet).token == b"tok"


def test_frames_out_of_order_and_other_initial_frames() -> None:
    frames = (b"\x01"  # PING
              + b"\x02" + varint(5) + varint(0) + varint(1) + varint(0) + varint(1) + varint(2)
              + crypto_frame(100, CH_MESSAGE[100:]) + b"\x00" * 3
              + crypto_frame(0, CH_MESSAGE[:100]))
    initial = decrypt_client_initial(protect_initial(VERSION_1, b"\xAA" * 8, frames))
    assert [offset for offset, _ in initial.crypto_chunks] == [100, 0]
    assert initial.crypto_frames == CH_MESSAGE and initial.client_hello is not None


def test_stream_frames_are_not_allowed_in_initial() -> None:
    packet = protect_initial(VERSION_1, b"\xAA" * 8, b"\x08" + varint(0) + b"data")
    with pytest.raises(DecodeError):
        decrypt_client_initial(packet)


def test_coalesced_packets() -> None:
    initial = protect_initial(VERSION_1, b"\xBB" * 8, crypto_frame(0, CH_MESSAGE))
    # A Handshake packet (type 2) of 20 opaque bytes, before and after the Initial.
    handshake = (b"\xE1" + unhex("00000001") + b"\x08" + b"\xCC" * 8 + b"\x00" + varint(20)
                 + bytes(20))
    for datagram in (initial + handshake, handshake + initial, initial + bytes(50)):
        got = decrypt_client_initial(datagram)
        assert got.client_hello is not None and got.dcid == b"\xBB" * 8
    second = parse_long_header(handshake + initial, len(handshake))
    assert (second.packet_type, second.packet_start) == ("initial", len(handshake))
    with pytest.raises(DecodeError):
        decrypt_client_initial(handshake)


def test_assembler_collects_a_client_hello_split_over_initials() -> None:
    big_hello = CH_MESSAGE  # split in three CRYPTO ranges over three packets, sent out of order
    cut1, cut2 = 90, 180
    dcid = b"\x11" * 8
    packets = [protect_initial(VERSION_1, dcid, crypto_frame(0, big_hello[:cut1]), pn=0),
               protect_initial(VERSION_1, dcid, crypto_frame(cut1, big_hello[cut1:cut2]), pn=1),
               protect_initial(VERSION_1, dcid, crypto_frame(cut2, big_hello[cut2:]), pn=2)]
    other = protect_initial(VERSION_2, b"\x22" * 8, crypto_frame(0, big_hello))
    assert decrypt_client_initial(packets[0]).client_hello is None  # incomplete on its own
    assembler = QuicInitialAssembler()
    results = [assembler.feed(p) for p in (packets[2], packets[0], other, b"\x40junk",
                                           packets[1], packets[1])]
    assert [r is not None for r in results] == [False, False, True, False, True, False]
    done = results[4]
    assert done is not None and done.client_hello is not None
    assert (done.dcid, done.crypto_frames, done.client_hello.sni) == (dcid, big_hello,
                                                                      "example.com")
    assert assembler.undecryptable == 1


def test_assembler_bounds_and_bad_streams() -> None:
    assembler = QuicInitialAssembler()
    far = protect_initial(VERSION_1, b"\x33" * 8, crypto_frame(70_000, b"x" * 10))
    assert assembler.feed(far) is None and assembler.overflowed
    not_hello = protect_initial(VERSION_1, b"\x44" * 8, crypto_frame(0, b"\x02\x00\x00\x01\x00"))
    assert assembler.feed(not_hello) is None and assembler.malformed == 1
    with pytest.raises(DecodeError):
        decrypt_client_initial(not_hello)


def test_contiguous_crypto() -> None:
    assert contiguous_crypto(((3, b"def"), (0, b"abc"), (8, b"z"))) == b"abcdef"
    assert contiguous_crypto(((0, b"abcd"), (2, b"cdef"))) == b"abcdef"
    assert contiguous_crypto(((1, b"x"),)) == b""


# ---------------------------------------------------------------------------------------------
# Fuzz


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_header_and_decrypt(data: bytes) -> None:
    assert looks_like_quic_long_header(data) in (True, False)
    for parse in (parse_long_header, decrypt_client_initial, parse_initial_frames):
        with contextlib.suppress(DecodeError):
            parse(data)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_decrypted_frames(frames: bytes) -> None:
    # Random plaintext behind valid protection exercises the frame and ClientHello parsers.
    packet = protect_initial(VERSION_1, b"\x55" * 8, frames)
    with contextlib.suppress(DecodeError):
        decrypt_client_initial(packet)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_fuzz_mutated_rfc_packet(data: st.DataObject) -> None:
    packet = bytearray(RFC9001_CLIENT_INITIAL)
    packet[data.draw(st.integers(0, 40))] ^= data.draw(st.integers(1, 255))
    with contextlib.suppress(DecodeError):
        decrypt_client_initial(bytes(packet))
    assembler = QuicInitialAssembler()
    assembler.feed(bytes(packet))


# ---------------------------------------------------------------------------------------------
# Real capture: Chrome to meet.google.com over QUIC (nDPI google_meet.pcapng)


def udp_payloads(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as handle:
        magic = handle.read(4)
        handle.seek(0)
        reader = dpkt.pcapng.Reader(handle) if magic == b"\n\r\r\n" else dpkt.pcap.Reader(handle)
        for number, (_, frame) in enumerate(reader, start=1):
            ip = dpkt.ethernet.Ethernet(frame).data
            if isinstance(ip.data, dpkt.udp.UDP):
                yield number, bytes(ip.data.data)


def test_google_meet_initial_matches_tshark() -> None:
    path = NDPI / "google_meet.pcapng"
    if not path.exists():
        pytest.skip("corpus capture google_meet.pcapng not present")
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    decrypted = {}
    for number, payload in udp_payloads(path):
        assert looks_like_quic_long_header(payload)
        with contextlib.suppress(DecodeError):
            decrypted[number] = decrypt_client_initial(payload)
    out = subprocess.run(
        ["tshark", "-r", str(path), "-Y", "quic && tls.handshake.type == 1", "-T", "fields",
         "-e", "frame.number", "-e", "quic.dcid", "-e", "tls.handshake.extensions_server_name",
         "-e", "tls.handshake.ciphersuite", "-e", "tls.handshake.extensions_alpn_str"],
        capture_output=True, text=True, check=True, timeout=60).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    assert [int(row[0]) for row in rows] == sorted(decrypted)  # only the client Initial opens
    for frame, dcid, sni, suites, alpn in rows:
        initial = decrypted[int(frame)]
        hello = initial.client_hello
        assert hello is not None
        assert initial.dcid.hex() == dcid.replace(":", "")
        assert hello.sni == sni and ",".join(hello.alpn) == alpn
        expected = tuple(int(s, 16) for s in suites.split(",") if not is_grease(int(s, 16)))
        assert hello.cipher_suites == expected
        # Chrome shuffles CRYPTO frames: offset 505 comes before offset 0 in the packet.
        assert [offset for offset, _ in initial.crypto_chunks] == [505, 0]
        # The outer SNI is meet.google.com; encrypted_client_hello (ECH, or Chrome's GREASE
        # of it) is present, so the name a user really asked for may be hidden.
        assert hello.ech and hello.quic_transport_parameters
