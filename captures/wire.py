"""Byte builders for the protocols in the sample captures (written from the RFCs and the notes in
shared/docs/protocols.md; no code taken from elsewhere).

Each builder returns the bytes of one message as it travels in a UDP payload or a TCP stream.
TLS, DTLS and QUIC live in `captures.tlswire`, SRTP in `captures.srtp`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from scapy.layers.dns import DNS, DNSQR, DNSRR

# --------------------------------------------------------------------------------------------
# STUN (RFC 5389 / 8489), classic STUN (RFC 3489), TURN (RFC 5766 / 8656), MS-TURN
# --------------------------------------------------------------------------------------------

STUN_MAGIC_COOKIE = 0x2112A442
STUN_FINGERPRINT_XOR = 0x5354554E
STUN_HEADER_LEN = 20
MESSAGE_INTEGRITY_LEN = 20
MS_TURN_MULTIPLEXED = 0xFF10


class StunMethod(IntEnum):
    BINDING = 0x001
    ALLOCATE = 0x003
    REFRESH = 0x004
    SEND = 0x006
    DATA = 0x007
    CREATE_PERMISSION = 0x008
    CHANNEL_BIND = 0x009


class StunClass(IntEnum):
    REQUEST = 0b00
    INDICATION = 0b01
    SUCCESS = 0b10
    ERROR = 0b11


class StunAttr(IntEnum):
    MAPPED_ADDRESS = 0x0001
    USERNAME = 0x0006
    MESSAGE_INTEGRITY = 0x0008
    ERROR_CODE = 0x0009
    CHANNEL_NUMBER = 0x000C
    LIFETIME = 0x000D
    MAGIC_COOKIE_MS = 0x000F
    XOR_PEER_ADDRESS = 0x0012
    DATA = 0x0013
    REALM = 0x0014
    NONCE = 0x0015
    XOR_RELAYED_ADDRESS = 0x0016
    REQUESTED_TRANSPORT = 0x0019
    XOR_MAPPED_ADDRESS = 0x0020
    PRIORITY = 0x0024
    USE_CANDIDATE = 0x0025
    ZOOM_CLASSIC_0101 = 0x0101  # seen in Zoom's classic STUN (protocols.md 1.2)
    MS_VERSION = 0x8008
    XOR_MAPPED_ADDRESS_MS = 0x8020
    SOFTWARE = 0x8022
    FINGERPRINT = 0x8028
    ICE_CONTROLLED = 0x8029
    ICE_CONTROLLING = 0x802A
    MS_SEQUENCE_NUMBER = 0x8050
    MS_SERVICE_QUALITY = 0x8055
    MS_IMPLEMENTATION_VERSION = 0x8070
    MS_MULTIPLEXED_TURN_SESSION_ID = 0x8095
    GOOG_NETWORK_INFO = 0xC057


def stun_type(method: int, cls: StunClass) -> int:
    """Interleave the 12 method bits with the 2 class bits (RFC 5389 section 6)."""
    c0, c1 = cls & 1, (cls >> 1) & 1
    return (method & 0x000F) | (c0 << 4) | ((method & 0x0070) << 1) | (c1 << 8) | (
        (method & 0x0F80) << 2
    )


def stun_attr(attr_type: int, value: bytes) -> bytes:
    """One TLV attribute, padded to a 4-byte boundary (the length field excludes the padding)."""
    return struct.pack("!HH", attr_type, len(value)) + value + b"\x00" * (-len(value) % 4)


def _xor_key(txid: bytes) -> bytes:
    return struct.pack("!I", STUN_MAGIC_COOKIE) + txid


def xor_address(ip: str, port: int, txid: bytes) -> bytes:
    """XOR-MAPPED-ADDRESS style value (RFC 5389 section 15.2) for IPv4 or IPv6."""
    addr = ipaddress.ip_address(ip)
    family = 0x01 if addr.version == 4 else 0x02
    key = _xor_key(txid)[: len(addr.packed)]
    xored = bytes(a ^ b for a, b in zip(addr.packed, key, strict=True))
    return struct.pack("!BBH", 0, family, port ^ (STUN_MAGIC_COOKIE >> 16)) + xored


def plain_address(ip: str, port: int) -> bytes:
    """MAPPED-ADDRESS value (RFC 3489 / 5389 section 15.1)."""
    addr = ipaddress.ip_address(ip)
    family = 0x01 if addr.version == 4 else 0x02
    return struct.pack("!BBH", 0, family, port) + addr.packed


def error_code(code: int, reason: str) -> bytes:
    return struct.pack("!HBB", 0, code // 100, code % 100) + reason.encode()


def long_term_key(username: str, realm: str, password: str) -> bytes:
    """RFC 5389 section 15.4: MD5(username ":" realm ":" password)."""
    return hashlib.md5(f"{username}:{realm}:{password}".encode()).digest()


def _stun_header(msg_type: int, length: int, txid: bytes) -> bytes:
    return struct.pack("!HHI", msg_type, length, STUN_MAGIC_COOKIE) + txid


def stun_message(
    msg_type: int,
    txid: bytes,
    attrs: Sequence[tuple[int, bytes]],
    integrity_key: bytes | None = None,
    fingerprint: bool = False,
) -> bytes:
    """An RFC 5389 message; MESSAGE-INTEGRITY and FINGERPRINT are computed, in that order."""
    if len(txid) != 12:
        raise ValueError("RFC 5389 transaction IDs are 12 bytes")
    body = b"".join(stun_attr(t, v) for t, v in attrs)
    if integrity_key is not None:
        length = len(body) + 4 + MESSAGE_INTEGRITY_LEN
        mac = hmac.new(integrity_key, _stun_header(msg_type, length, txid) + body, "sha1")
        body += stun_attr(StunAttr.MESSAGE_INTEGRITY, mac.digest())
    if fingerprint:
        head = _stun_header(msg_type, len(body) + 8, txid)
        crc = zlib.crc32(head + body) ^ STUN_FINGERPRINT_XOR
        body += stun_attr(StunAttr.FINGERPRINT, struct.pack("!I", crc))
    return _stun_header(msg_type, len(body), txid) + body


def classic_stun_message(msg_type: int, txid: bytes, attrs: Sequence[tuple[int, bytes]]) -> bytes:
    """An RFC 3489 message: 16-byte transaction ID and no magic cookie."""
    if len(txid) != 16:
        raise ValueError("RFC 3489 transaction IDs are 16 bytes")
    body = b"".join(stun_attr(t, v) for t, v in attrs)
    return struct.pack("!HH", msg_type, len(body)) + txid + body


def channel_data(channel: int, data: bytes, pad: bool = False) -> bytes:
    """TURN ChannelData (RFC 8656 section 12.4); padded to 4 bytes only over TCP."""
    padding = b"\x00" * (-len(data) % 4) if pad else b""
    return struct.pack("!HH", channel, len(data)) + data + padding


def ms_turn_multiplexed(session_id: bytes, data: bytes) -> bytes:
    """MS-TURN 2.2.3: 0xFF10, length of what follows the length field, 8-byte session ID, data."""
    if len(session_id) != 8:
        raise ValueError("MTURN_Session_ID is 8 bytes")
    return struct.pack("!HH", MS_TURN_MULTIPLEXED, 8 + len(data)) + session_id + data


# --------------------------------------------------------------------------------------------
# RTP / RTCP (RFC 3550, RFC 8285 header extensions)
# --------------------------------------------------------------------------------------------

RTP_VERSION = 2
ONE_BYTE_EXT_PROFILE = 0xBEDE
NTP_UNIX_OFFSET = 2208988800


class RtcpType(IntEnum):
    SR = 200
    RR = 201
    SDES = 202
    BYE = 203
    APP = 204


SDES_CNAME = 1


def one_byte_extension(elements: Sequence[tuple[int, bytes]]) -> bytes:
    """RFC 8285 one-byte header extension block, including the 0xBEDE profile and length."""
    data = b"".join(bytes([(ext_id << 4) | (len(v) - 1)]) + v for ext_id, v in elements)
    data += b"\x00" * (-len(data) % 4)
    return struct.pack("!HH", ONE_BYTE_EXT_PROFILE, len(data) // 4) + data


def rtp_header(pt: int, seq: int, ts: int, ssrc: int, marker: bool = False,
               extension: bytes = b"") -> bytes:
    """12-byte RTP header (no CSRCs), followed by an already-built extension block if given."""
    first = (RTP_VERSION << 6) | (0x10 if extension else 0)
    second = (0x80 if marker else 0) | pt
    return struct.pack("!BBHII", first, second, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + extension


def ntp_timestamp(unix_us: int) -> tuple[int, int]:
    """64-bit NTP timestamp (seconds, fraction) of a Unix time in microseconds."""
    sec, usec = divmod(unix_us, 1_000_000)
    return sec + NTP_UNIX_OFFSET, (usec << 32) // 1_000_000


def _rtcp(count: int, packet_type: int, body: bytes) -> bytes:
    if len(body) % 4:
        raise ValueError("RTCP bodies are whole 32-bit words")
    first = (RTP_VERSION << 6) | count
    return struct.pack("!BBH", first, packet_type, (len(body) + 4) // 4 - 1) + body


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """RFC 3550 section 6.4.1 reception report block."""

    ssrc: int
    fraction_lost: int
    cumulative_lost: int
    highest_seq: int
    jitter: int
    lsr: int = 0
    dlsr: int = 0

    def pack(self) -> bytes:
        lost = self.cumulative_lost & 0xFFFFFF
        return struct.pack("!IIIIII", self.ssrc, (self.fraction_lost << 24) | lost,
                           self.highest_seq, self.jitter, self.lsr, self.dlsr)


def rtcp_sr(ssrc: int, unix_us: int, rtp_ts: int, packets: int, octets: int,
            reports: Sequence[ReportBlock] = ()) -> bytes:
    ntp_sec, ntp_frac = ntp_timestamp(unix_us)
    body = struct.pack("!IIIIII", ssrc, ntp_sec, ntp_frac, rtp_ts & 0xFFFFFFFF, packets, octets)
    return _rtcp(len(reports), RtcpType.SR, body + b"".join(r.pack() for r in reports))


def rtcp_rr(ssrc: int, reports: Sequence[ReportBlock]) -> bytes:
    body = struct.pack("!I", ssrc) + b"".join(r.pack() for r in reports)
    return _rtcp(len(reports), RtcpType.RR, body)


def rtcp_sdes(ssrc: int, cname: str) -> bytes:
    """One SDES chunk with a CNAME item, null-terminated and padded to 32 bits."""
    text = cname.encode()
    chunk = struct.pack("!IBB", ssrc, SDES_CNAME, len(text)) + text + b"\x00"
    chunk += b"\x00" * (-len(chunk) % 4)
    return _rtcp(1, RtcpType.SDES, chunk)


def rtcp_bye(ssrc: int, reason: str = "") -> bytes:
    body = struct.pack("!I", ssrc)
    if reason:
        text = reason.encode()
        body += bytes([len(text)]) + text
        body += b"\x00" * (-len(body) % 4)
    return _rtcp(1, RtcpType.BYE, body)


# --------------------------------------------------------------------------------------------
# Zoom SFU and media encapsulations (protocols.md sections 1.3 to 1.9)
# --------------------------------------------------------------------------------------------


class ZoomSfuType(IntEnum):
    CLIENT_HELLO = 0x01
    SERVER_HELLO = 0x02
    KEEPALIVE = 0x03
    MEDIA = 0x05


class ZoomMediaType(IntEnum):
    SCREEN_SERVER = 13
    AUDIO = 15
    VIDEO = 16
    SCREEN_P2P = 30
    P2P_SETUP = 31
    RTCP = 34


ZOOM_TO_SERVER = 0x00
ZOOM_FROM_SERVER = 0x04
ZOOM_SCREEN_NESTED_FLAG = 0x1E
ZOOM_VIDEO_FRAME_INFO = 0x02

# Offset of the first RTP/RTCP byte in the media encapsulation, per type (protocols.md 1.6).
ZOOM_RTP_OFFSET = {
    ZoomMediaType.AUDIO: 19,
    ZoomMediaType.VIDEO: 24,
    ZoomMediaType.SCREEN_P2P: 20,
    ZoomMediaType.SCREEN_SERVER: 27,
    ZoomMediaType.RTCP: 16,
}


def zoom_sfu_header(seq: int, cookie: int, direction: int,
                    sfu_type: int = ZoomSfuType.MEDIA) -> bytes:
    """8-byte SFU encapsulation: type, sequence, per-flow cookie, direction (0x00 to, 0x04 from)."""
    return struct.pack("!BHIB", sfu_type, seq & 0xFFFF, cookie, direction)


@dataclass(frozen=True, slots=True)
class ZoomMediaHeader:
    """Common prefix of the media encapsulation: type, 8 opaque id bytes, sequence, timestamp."""

    media_type: int
    ids: bytes  # I[1..8]
    seq: int
    ts: int

    def pack(self) -> bytes:
        if len(self.ids) != 8:
            raise ValueError("Zoom media header id field is 8 bytes")
        return bytes([self.media_type]) + self.ids + struct.pack("!HI", self.seq & 0xFFFF,
                                                                  self.ts & 0xFFFFFFFF)


def zoom_audio(head: ZoomMediaHeader, rtp: bytes) -> bytes:
    """Type 15: 15-byte prefix, `00 01`, RTP length, RTP at I+19."""
    return head.pack() + struct.pack("!HH", 1, len(rtp)) + rtp


def zoom_video(head: ZoomMediaHeader, frame_no: int, pkts_in_frame: int, rtp: bytes) -> bytes:
    """Type 16 with frame fields: I[20] = 2, I[21..22] frame number, I[23] packets, RTP at I+24."""
    fields = struct.pack("!HHBBHB", 1, len(rtp) & 0xFFFF, 0, ZOOM_VIDEO_FRAME_INFO,
                         frame_no & 0xFFFF, pkts_in_frame)
    return head.pack() + fields + rtp


def zoom_screen_p2p(head: ZoomMediaHeader, rtp: bytes) -> bytes:
    """Type 30: 15-byte prefix, 5 opaque bytes, RTP at I+20."""
    return head.pack() + b"\x02\x00\xfb\x90\x17" + rtp


def zoom_screen_server(t13_ts: int, t13_seq: int, nested: ZoomMediaHeader, rtp: bytes) -> bytes:
    """Type 13 via the server: a complete type-30 header nested at I+7, so RTP sits at I+27."""
    outer = struct.pack("!BHHH", ZoomMediaType.SCREEN_SERVER, t13_ts & 0xFFFF, t13_seq & 0xFFFF, 0)
    return outer + zoom_screen_p2p(nested, rtp)


def zoom_rtcp(head: ZoomMediaHeader, direction_byte: int, rtcp: bytes) -> bytes:
    """Type 34: 15-byte prefix, one byte (0xff from the server, 0x00 to it), RTCP at I+16."""
    return head.pack() + bytes([direction_byte]) + rtcp


def zoom_sfu_client_hello(txid: bytes, echo: int, blob: bytes) -> bytes:
    """SFU type 1 (`01 00 03`, 16-byte transaction ID, fields, opaque blob), as in zoom2.pcap."""
    return (b"\x01\x00\x03" + txid + b"\x00" * 7 + b"\x02" + struct.pack("!II", echo, echo)
            + struct.pack("!I", 0x40) + blob)


def zoom_sfu_server_hello(txid: bytes, cookie: int, echo: int) -> bytes:
    """SFU type 2: echoes the transaction ID and hands out the cookie used in type-5 headers."""
    tail = bytes.fromhex("0000000000000000004000400003e00300")
    return b"\x02\x00\x03" + txid + struct.pack("!II", cookie, echo) + tail


def zoom_sfu_keepalive(count: int, ts: int, cookie: int) -> bytes:
    """SFU type 3: counter at 1..4, timestamp at 5..8, cookie at 9..12."""
    return struct.pack("!BIIIB", ZoomSfuType.KEEPALIVE, count, ts, cookie, 0)


def zoom_p2p_setup(ip_text: str, uuid_text: str, header_tail: bytes) -> bytes:
    """Type 0x1F: 24-byte header starting `1f 02 01`, length-prefixed ASCII IP and UUID, 4 zeros."""
    if len(header_tail) != 21:
        raise ValueError("the P2P setup header is 24 bytes")
    ip_raw, uuid_raw = ip_text.encode(), uuid_text.encode()
    return (b"\x1f\x02\x01" + header_tail + struct.pack("!I", len(ip_raw)) + ip_raw
            + struct.pack("!I", len(uuid_raw)) + uuid_raw + b"\x00" * 4)


# --------------------------------------------------------------------------------------------
# SIP / SDP (RFC 3261, RFC 4566, RFC 4568)
# --------------------------------------------------------------------------------------------


def sip_message(start_line: str, headers: Sequence[tuple[str, str]], body: str = "") -> bytes:
    """A SIP message with CRLF line ends; Content-Length is computed and added last."""
    encoded_body = body.encode()
    lines = [start_line, *(f"{name}: {value}" for name, value in headers)]
    lines.append(f"Content-Length: {len(encoded_body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + encoded_body


def sdp_body(lines: Sequence[str]) -> str:
    return "\r\n".join(lines) + "\r\n"


# --------------------------------------------------------------------------------------------
# DNS (RFC 1035), via scapy's DNS layer
# --------------------------------------------------------------------------------------------

DNS_TYPE_A = 1
DNS_TYPE_CNAME = 5
DNS_TYPE_AAAA = 28


def dns_query(txid: int, name: str, qtype: int = DNS_TYPE_A) -> bytes:
    return bytes(DNS(id=txid, rd=1, qd=DNSQR(qname=name, qtype=qtype)))


def dns_answer(txid: int, name: str, records: Sequence[tuple[str, int, str, int]],
               qtype: int = DNS_TYPE_A) -> bytes:
    """A response; records are (owner name, type, rdata, ttl), e.g. a CNAME chain then A."""
    answers = [DNSRR(rrname=owner, type=rtype, rdata=rdata, ttl=ttl)
               for owner, rtype, rdata, ttl in records]
    return bytes(DNS(id=txid, qr=1, rd=1, ra=1, qd=DNSQR(qname=name, qtype=qtype), an=answers))


# --------------------------------------------------------------------------------------------
# ZRTP (RFC 6189)
# --------------------------------------------------------------------------------------------

ZRTP_MAGIC = 0x5A525450
ZRTP_PREAMBLE = 0x505A
CRC32C_POLY = 0x82F63B78


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ CRC32C_POLY if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as RFC 6189 section 5 requires for the ZRTP packet CRC."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def zrtp_message(block_type: str, body: bytes) -> bytes:
    """Preamble, length in 32-bit words (whole message), 8-character type block, body."""
    if len(block_type) != 8 or len(body) % 4:
        raise ValueError("ZRTP type blocks are 8 characters and bodies whole words")
    words = (4 + 8 + len(body)) // 4
    return struct.pack("!HH", ZRTP_PREAMBLE, words) + block_type.encode() + body


def zrtp_packet(seq: int, ssrc: int, message: bytes) -> bytes:
    """RFC 6189 section 5: 0x10 0x00, sequence, magic "ZRTP", source id, message, CRC-32C.

    The CRC goes in the byte order SCTP uses for CRC-32C (RFC 4960 appendix B), which is what
    Wireshark's ZRTP dissector checks."""
    head = struct.pack("!BBHII", 0x10, 0x00, seq & 0xFFFF, ZRTP_MAGIC, ssrc)
    return head + message + struct.pack("<I", crc32c(head + message))
