"""STUN messages: RFC 5389/8489 with the magic cookie, classic RFC 3489 without it.

Sans-IO: `looks_like_stun` is a cheap check, `parse_stun` returns a `StunMessage` or raises
`DecodeError`, and `service_hint` names the conferencing service a message betrays through
vendor attributes, message types or REALM/SOFTWARE strings (the `_HINT_RULES` table).

Quirks seen on real traffic (nDPI test captures):

* Zoom sends classic STUN (no cookie, 16-byte transaction id) with vendor attributes 0x0101
  (the ASCII string "12345678901234567890") and 0x0103; its answer has message type 0x0002.
* WhatsApp sends Allocate requests and types 0x0800-0x0802 with a cookie and an unpadded
  last attribute (0x4000, length 102), so the message length is not a multiple of 4.
* MS-TURN (Skype for Business / Teams relays) numbers NONCE 0x0014 and REALM 0x0015, the
  reverse of RFC 5389; such messages carry MS MAGIC-COOKIE attribute 0x000F first.
"""

from __future__ import annotations

import ipaddress
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from analyzer.errors import DecodeError

MAGIC_COOKIE = 0x2112A442
# RFC 8489 §14.7 (same text in RFC 5389 §15.5): CRC-32 of the message up to FINGERPRINT, XORed
# with 0x5354554E ("STUN"). Checked against the RFC 5769 test vectors in tests/test_stun.py.
FINGERPRINT_XOR = 0x5354554E
MS_TURN_MAGIC_COOKIE = 0x72C64BC6  # value of MS-TURN's MAGIC-COOKIE attribute 0x000F

# Message header, RFC 8489 §5 (RFC 3489 §11.1 for classic STUN):
#   offset 0  size 2   message type: 2 zero bits, then 14 bits of method and class
#   offset 2  size 2   message length, excluding the 20-byte header
#   offset 4  size 4   magic cookie 0x2112A442      | classic: bytes 4..19 are one
#   offset 8  size 12  transaction id               | 128-bit transaction id
HEADER = struct.Struct("!HHI12s")
HEADER_LEN = HEADER.size
# Attribute header, RFC 8489 §14: type(2) length(2), value padded to a multiple of 4.
ATTR_HEADER = struct.Struct("!HH")
# (XOR-)MAPPED-ADDRESS value, RFC 8489 §14.1-14.2: reserved(1) family(1) port(2) address.
ADDRESS_HEADER = struct.Struct("!xBH")
ADDRESS_LEN = {0x01: 4, 0x02: 16}  # family -> address bytes (IPv4, IPv6)

# Message classes by the two class bits C1 (type bit 8) and C0 (type bit 4), RFC 8489 §5.
MESSAGE_CLASSES = ("request", "indication", "success", "error")

# Classic (cookie-less) message types accepted, as nDPI `is_stun()` and Wireshark list them:
# Binding, Shared Secret (RFC 3489), and old-TURN / MS-TURN Allocate, Send, Data, Set Active
# Destination.
CLASSIC_TYPES = frozenset({
    0x0001, 0x0101, 0x0111,
    0x0002, 0x0102, 0x0112,
    0x0003, 0x0103, 0x0113,
    0x0004, 0x0104, 0x0114,
    0x0115,
    0x0006, 0x0106, 0x0116,
})


class Attr(IntEnum):
    """Attribute types this module decodes (IANA STUN registry; MS-TURN for 0x000F/0x8020)."""

    MAPPED_ADDRESS = 0x0001
    USERNAME = 0x0006
    MESSAGE_INTEGRITY = 0x0008
    ERROR_CODE = 0x0009
    CHANNEL_NUMBER = 0x000C
    LIFETIME = 0x000D
    MS_MAGIC_COOKIE = 0x000F
    XOR_PEER_ADDRESS = 0x0012
    DATA = 0x0013
    REALM = 0x0014
    NONCE = 0x0015
    XOR_RELAYED_ADDRESS = 0x0016
    MESSAGE_INTEGRITY_SHA256 = 0x001C
    XOR_MAPPED_ADDRESS = 0x0020
    MS_XOR_MAPPED_ADDRESS = 0x8020
    SOFTWARE = 0x8022
    FINGERPRINT = 0x8028


Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class StunAttribute:
    type: int
    value: bytes


@dataclass(frozen=True, slots=True)
class StunMessage:
    msg_type: int
    method: int
    msg_class: str
    length: int
    classic: bool
    transaction_id: bytes
    attributes: tuple[StunAttribute, ...]
    mapped_address: Address | None
    xor_mapped_address: Address | None
    xor_relayed_address: Address | None
    xor_peer_address: Address | None
    software: str | None
    realm: str | None
    username: str | None
    nonce: str | None
    error_code: int | None
    channel_number: int | None
    lifetime: int | None
    data: bytes | None
    has_message_integrity: bool
    has_fingerprint: bool
    fingerprint_valid: bool | None

    def attribute(self, attr_type: int) -> bytes | None:
        """Value of the first attribute of this type, or None."""
        return next((a.value for a in self.attributes if a.type == attr_type), None)

    def has_attribute(self, attr_type: int) -> bool:
        return any(a.type == attr_type for a in self.attributes)


@dataclass(frozen=True, slots=True)
class ServiceHint:
    service: str
    evidence: str


# --------------------------------------------------------------------------- header


def method_of(msg_type: int) -> int:
    """The 12-bit method, with the class bits C1 (bit 8) and C0 (bit 4) squeezed out."""
    return (msg_type & 0x000F) | ((msg_type & 0x00E0) >> 1) | ((msg_type & 0x3E00) >> 2)


def class_of(msg_type: int) -> str:
    return MESSAGE_CLASSES[((msg_type >> 7) & 0b10) | ((msg_type >> 4) & 0b01)]


def _padded(length: int) -> int:
    return (length + 3) & ~3


def _walk_attributes(body: bytes) -> list[tuple[int, int, int]]:
    """(type, value offset, value length) of each attribute; the last may lack its padding."""
    found, offset = [], 0
    while offset < len(body):
        if offset + ATTR_HEADER.size > len(body):
            raise DecodeError(f"STUN: truncated attribute header at offset {HEADER_LEN + offset}")
        attr_type, length = ATTR_HEADER.unpack_from(body, offset)
        start = offset + ATTR_HEADER.size
        if start + length > len(body):
            raise DecodeError(f"STUN: attribute 0x{attr_type:04x} overruns the message")
        found.append((attr_type, start, length))
        offset = min(start + _padded(length), len(body))
    return found


def _attributes_fit(body: bytes) -> bool:
    try:
        _walk_attributes(body)
    except DecodeError:
        return False
    return True


def looks_like_stun(data: bytes) -> bool:
    """A STUN (cookie) or classic STUN message starts `data`. Never raises.

    Checks the header and walks the attribute headers (a few steps), so whenever this is
    true `parse_stun(data, strict=False)` succeeds. Classic messages need a known type and a
    length that is a multiple of 4; cookie messages may leave their last attribute unpadded,
    as WhatsApp does.
    """
    if len(data) < HEADER_LEN or data[0] & 0xC0:
        return False
    msg_type, length, cookie, _ = HEADER.unpack_from(data)
    if HEADER_LEN + length > len(data):
        return False
    if cookie != MAGIC_COOKIE and (msg_type not in CLASSIC_TYPES or length % 4):
        return False
    return _attributes_fit(data[HEADER_LEN:HEADER_LEN + length])


# --------------------------------------------------------------------------- attributes


def _address(value: bytes, xor_key: bytes | None) -> Address | None:
    """(ip, port) of a (XOR-)MAPPED-ADDRESS style value; None if the family/length is odd."""
    if len(value) < ADDRESS_HEADER.size:
        return None
    family, port = ADDRESS_HEADER.unpack_from(value)
    raw = value[ADDRESS_HEADER.size:]
    if ADDRESS_LEN.get(family) != len(raw):
        return None
    if xor_key is not None:
        port ^= MAGIC_COOKIE >> 16
        raw = bytes(a ^ k for a, k in zip(raw, xor_key, strict=False))
    return str(ipaddress.ip_address(raw)), port


def _xor_key(transaction_id: bytes) -> bytes:
    """RFC 8489 §14.2: IPv4 XORs with the cookie, IPv6 with cookie || 96-bit transaction id."""
    return MAGIC_COOKIE.to_bytes(4, "big") + transaction_id[-12:]


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", errors="replace")


def _uint(value: bytes | None, size: int) -> int | None:
    return None if value is None or len(value) < size else int.from_bytes(value[:size], "big")


def _error_code(value: bytes | None) -> int | None:
    """RFC 8489 §14.8: 21 reserved bits, class (3 bits, hundreds), number (8 bits)."""
    if value is None or len(value) < 4:
        return None
    return (value[2] & 0x07) * 100 + value[3]


def _fingerprint_valid(data: bytes, spans: list[tuple[int, int, int]]) -> bool | None:
    """CRC-32 over everything before FINGERPRINT, XOR 0x5354554E, equals its value."""
    for attr_type, start, length in spans:
        if attr_type == Attr.FINGERPRINT:
            value_at = HEADER_LEN + start
            covered = data[:value_at - ATTR_HEADER.size]
            value = data[value_at:value_at + length]
            return length == 4 and zlib.crc32(covered) ^ FINGERPRINT_XOR == int.from_bytes(
                value, "big")
    return None


def _is_ms_turn(attributes: tuple[StunAttribute, ...]) -> bool:
    """MS-TURN §2.2.2: MAGIC-COOKIE 0x000F (value 0x72C64BC6) is the first attribute.

    Such messages number NONCE 0x0014 and REALM 0x0015 (MS-TURN §2.2.2 attribute list, after
    the old TURN draft-08), the reverse of RFC 8489.
    """
    return bool(attributes) and attributes[0] == StunAttribute(
        Attr.MS_MAGIC_COOKIE, MS_TURN_MAGIC_COOKIE.to_bytes(4, "big"))


# --------------------------------------------------------------------------- parser


def _check_header(data: bytes, strict: bool) -> tuple[int, int, bool]:
    if len(data) < HEADER_LEN:
        raise DecodeError(f"STUN: {len(data)} bytes, shorter than the 20-byte header")
    if data[0] & 0xC0:
        raise DecodeError(f"STUN: first two bits must be 0 (first byte 0x{data[0]:02x})")
    msg_type, length, cookie, _ = HEADER.unpack_from(data)
    if HEADER_LEN + length > len(data):
        raise DecodeError(f"STUN: length {length} exceeds the {len(data) - HEADER_LEN} bytes left")
    if strict and HEADER_LEN + length != len(data):
        raise DecodeError(f"STUN: {len(data) - HEADER_LEN - length} bytes after the message")
    classic = cookie != MAGIC_COOKIE
    if classic and msg_type not in CLASSIC_TYPES:
        raise DecodeError(f"STUN: no magic cookie and 0x{msg_type:04x} is no classic STUN type")
    if classic and length % 4:
        raise DecodeError(f"classic STUN: length {length} is not a multiple of 4")
    return msg_type, length, classic


def parse_stun(data: bytes, strict: bool = True) -> StunMessage:
    """Decode one STUN message; `strict=False` ignores bytes after the declared length."""
    msg_type, length, classic = _check_header(data, strict)
    data = bytes(data[:HEADER_LEN + length])
    transaction_id = data[4:HEADER_LEN] if classic else data[8:HEADER_LEN]
    body = data[HEADER_LEN:]
    spans = _walk_attributes(body)
    attributes = tuple(StunAttribute(t, body[s:s + n]) for t, s, n in spans)
    return _build(msg_type, length, classic, transaction_id, attributes,
                  _fingerprint_valid(data, spans))


def _build(msg_type: int, length: int, classic: bool, transaction_id: bytes,
           attributes: tuple[StunAttribute, ...], fingerprint_valid: bool | None) -> StunMessage:
    first: dict[int, bytes] = {}
    for attribute in reversed(attributes):
        first[attribute.type] = attribute.value
    realm_type, nonce_type = (Attr.NONCE, Attr.REALM) if _is_ms_turn(attributes) else (
        Attr.REALM, Attr.NONCE)
    key = _xor_key(transaction_id)
    xor_mapped = first.get(Attr.XOR_MAPPED_ADDRESS, first.get(Attr.MS_XOR_MAPPED_ADDRESS))
    return StunMessage(
        msg_type=msg_type,
        method=method_of(msg_type),
        msg_class=class_of(msg_type),
        length=length,
        classic=classic,
        transaction_id=transaction_id,
        attributes=attributes,
        mapped_address=_optional_address(first.get(Attr.MAPPED_ADDRESS), None),
        xor_mapped_address=_optional_address(xor_mapped, key),
        xor_relayed_address=_optional_address(first.get(Attr.XOR_RELAYED_ADDRESS), key),
        xor_peer_address=_optional_address(first.get(Attr.XOR_PEER_ADDRESS), key),
        software=_text(first.get(Attr.SOFTWARE)),
        realm=_text(first.get(realm_type)),
        username=_text(first.get(Attr.USERNAME)),
        nonce=_text(first.get(nonce_type)),
        error_code=_error_code(first.get(Attr.ERROR_CODE)),
        channel_number=_uint(first.get(Attr.CHANNEL_NUMBER), 2),
        lifetime=_uint(first.get(Attr.LIFETIME), 4),
        data=first.get(Attr.DATA),
        has_message_integrity=Attr.MESSAGE_INTEGRITY in first
        or Attr.MESSAGE_INTEGRITY_SHA256 in first,
        has_fingerprint=Attr.FINGERPRINT in first,
        fingerprint_valid=fingerprint_valid,
    )


def _optional_address(value: bytes | None, xor_key: bytes | None) -> Address | None:
    return None if value is None else _address(value, xor_key)


# --------------------------------------------------------------------------- service hints


@dataclass(frozen=True, slots=True)
class _HintRule:
    """One row of `_HINT_RULES`: a test on a message, the service, the evidence it gives."""

    service: str
    matches: Callable[[StunMessage], str | None]  # evidence phrase, or None
    needs: int | None = None  # the attribute type without which it cannot match


def _attribute_rule(service: str, attr_type: int, name: str, vendor: str,
                    value: bytes | None = None) -> _HintRule:
    return _HintRule(service, _attribute(attr_type, name, vendor, value), attr_type)


def _message_type(types: frozenset[int], label: str) -> Callable[[StunMessage], str | None]:
    def match(msg: StunMessage) -> str | None:
        return f"STUN message type 0x{msg.msg_type:04x} ({label})" if msg.msg_type in types \
            else None
    return match


def _attribute(attr_type: int, name: str, vendor: str,
               value: bytes | None = None) -> Callable[[StunMessage], str | None]:
    def match(msg: StunMessage) -> str | None:
        found = msg.attribute(attr_type)
        if found is None or (value is not None and found != value):
            return None
        return " ".join(filter(None, ("STUN attribute", f"0x{attr_type:04x}", name, f"({vendor})")))
    return match


def _contains(field: str, needle: str, vendor: str) -> Callable[[StunMessage], str | None]:
    def match(msg: StunMessage) -> str | None:
        text = getattr(msg, field)
        if text is None or needle not in text.lower():
            return None
        return f"STUN {field.upper()} {text[:64]!r} ({vendor})"
    return match


_WHATSAPP_TYPES = frozenset({0x0800, 0x0801, 0x0802, 0x0804, 0x0805})

# Rules in priority order; the first that matches wins. Sources:
#   [nDPI]  ntop/nDPI src/lib/protocols/stun.c, `is_stun()` (2024 version): message types
#           0x0800-0x0805 -> WhatsApp; attributes 0x0101/0x0103 -> Zoom; 0x4000-0x4004, 0x4007
#           -> WhatsApp; 0x8054, 0x24DF, 0x3802, 0x8036, 0x8095, 0x0800, 0x8006, 0x8070, 0x8055
#           -> Teams; 0xFF03 -> Google; REALM containing google.com, whispersystems.org or
#           signal.org, facebook, telegram. nDPI checks REALM only, never NONCE.
#   [WS]    wireshark epan/dissectors/packet-stun.c attribute table (MS-TURN, MS-ICE2 names).
#   [MS]    MS-TURN §2.2.2 (MAGIC-COOKIE 0x000F = 0x72C64BC6, MS-VERSION 0x8008).
#   [ice4j] jitsi/ice4j Agent.java / AgentConfig.kt: SOFTWARE defaults to "ice4j.org".
# Deliberately absent: Google's GOOG-* attributes (0xC057-0xC060) and GOOG-PING (method 0x080)
# come from libwebrtc and are sent by every WebRTC app (WhatsApp's 0xC057 in nDPI's
# lru_ipv6_caches.pcapng); MS legacy XOR-MAPPED-ADDRESS 0x8020 was also an early IETF draft
# number. No STUN-level marker is known for Discord, FaceTime or Webex.
_HINT_RULES: tuple[_HintRule, ...] = (
    _HintRule("whatsapp", _message_type(_WHATSAPP_TYPES, "WhatsApp")),  # [nDPI]
    _attribute_rule("zoom", 0x0101, "", "Zoom"),  # [nDPI]
    _attribute_rule("zoom", 0x0103, "", "Zoom"),  # [nDPI]
    *(_attribute_rule("whatsapp", a, "", "WhatsApp")  # [nDPI]
      for a in (0x4000, 0x4001, 0x4002, 0x4003, 0x4004, 0x4007)),
    _attribute_rule("teams", Attr.MS_MAGIC_COOKIE, "MS-TURN MAGIC-COOKIE", "Microsoft",
                    MS_TURN_MAGIC_COOKIE.to_bytes(4, "big")),  # [MS]
    _attribute_rule("teams", 0x8008, "MS-VERSION", "Microsoft"),  # [MS][WS]
    _attribute_rule("teams", 0x8037, "MS-APP-ID", "Microsoft"),  # [WS]
    _attribute_rule("teams", 0x8050, "MS-SEQUENCE-NUMBER", "Microsoft"),  # [WS]
    _attribute_rule("teams", 0x8054, "MS-CANDIDATE-IDENTIFIER", "Microsoft"),  # [nDPI]
    _attribute_rule("teams", 0x8055, "MS-SERVICE-QUALITY", "Microsoft"),  # [nDPI]
    _attribute_rule("teams", 0x8070, "MS-IMPLEMENTATION-VERSION", "Microsoft"),  # [nDPI]
    _attribute_rule("teams", 0x8095, "MS-MULTIPLEXED-TURN-SESSION-ID",
                    "Microsoft"),  # [nDPI][WS]
    *(_attribute_rule("teams", a, "undocumented", "Microsoft Teams/Skype")  # [nDPI]
      for a in (0x8006, 0x24DF, 0x3802, 0x8036, 0x0800)),
    _attribute_rule("google-meet", 0xFF03, "", "Google"),  # [nDPI]
    _HintRule("signal", _contains("realm", "signal.org", "Signal")),  # [nDPI]
    _HintRule("signal", _contains("realm", "whispersystems.org", "Signal")),  # [nDPI]
    _HintRule("messenger", _contains("realm", "facebook", "Meta Messenger")),  # [nDPI]
    _HintRule("telegram", _contains("realm", "telegram", "Telegram")),  # [nDPI]
    _HintRule("google-meet", _contains("realm", "google.com", "Google")),  # [nDPI]
    _HintRule("jitsi", _contains("software", "ice4j.org", "Jitsi")),  # [ice4j]
)


def service_hint(msg: StunMessage) -> ServiceHint | None:
    """The first rule of `_HINT_RULES` this message matches, as (service, evidence)."""
    present = {attribute.type for attribute in msg.attributes}
    for rule in _HINT_RULES:
        if rule.needs is not None and rule.needs not in present:
            continue  # (most rules look for one attribute: most messages lack it)
        evidence = rule.matches(msg)
        if evidence is not None:
            return ServiceHint(rule.service, evidence)
    return None
