"""SDP (RFC 8866, formerly RFC 4566) session descriptions, as carried in SIP bodies.

Only what confscope needs to rate media encryption is kept: the origin, the connection
addresses, and per media section its port, transport profile, payload formats, `a=rtpmap`,
SDES keys (`a=crypto`, RFC 4568), DTLS-SRTP parameters (`a=fingerprint`, `a=setup`, RFC 8122 /
RFC 5763), ICE ufrag, RTCP port and multiplexing, and the media direction. Unknown lines and
attributes are ignored; a malformed `m=` line or a missing `v=` line raises `DecodeError`.
Line endings may be CRLF or bare LF.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from analyzer.errors import DecodeError

# Transport profile components that mean SRTP (RFC 3711 SAVP, RFC 5124 SAVPF,
# RFC 5764 UDP/TLS/RTP/SAVP[F], RFC 7850 TCP/DTLS/RTP/SAVPF).
SRTP_PROFILE_PARTS = frozenset({"SAVP", "SAVPF"})
DIRECTIONS = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})
MAX_PORT = 65535


class RtpMap(NamedTuple):
    """`a=rtpmap:<pt> <encoding>/<clock rate>[/<channels>]`; channels is None when absent."""

    encoding: str
    clock_rate: int
    channels: int | None


@dataclass(frozen=True, slots=True)
class SdesCrypto:
    """One `a=crypto` line (RFC 4568 §9.1 grammar).

    `key_params` is the raw text (it holds the SRTP master key and salt in base64);
    `key_bytes_len` is the length of the first decoded inline key||salt, None if undecodable.
    """

    tag: int
    suite: str
    key_params: str
    key_bytes_len: int | None
    lifetime: str | None
    mki: str | None
    session_params: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Origin:
    """`o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>`."""

    username: str
    session_id: str
    session_version: str
    nettype: str
    addrtype: str
    address: str


@dataclass(frozen=True, slots=True)
class MediaDescription:
    """One `m=` section with the attributes confscope uses (session-level values inherited)."""

    media: str
    port: int
    port_count: int
    proto: str
    formats: tuple[str, ...]
    connection_address: str | None
    rtpmap: dict[int, RtpMap]
    crypto: tuple[SdesCrypto, ...]
    fingerprint: tuple[str, str] | None
    setup: str | None
    ice_ufrag: str | None
    rtcp_port: int | None
    rtcp_mux: bool
    direction: str | None

    @property
    def is_srtp_profile(self) -> bool:
        """True for RTP/SAVP, RTP/SAVPF and their UDP/TLS or TCP/DTLS forms."""
        return any(part in SRTP_PROFILE_PARTS for part in self.proto.upper().split("/"))

    @property
    def payload_types(self) -> tuple[int, ...]:
        """The numeric formats (RTP payload types); non-numeric ones such as `t38` skipped."""
        return tuple(int(fmt) for fmt in self.formats if _is_payload_type(fmt))


@dataclass(frozen=True, slots=True)
class SessionDescription:
    """A parsed SDP body."""

    version: int
    origin: Origin | None
    session_name: str
    connection_address: str | None
    fingerprint: tuple[str, str] | None
    setup: str | None
    ice_ufrag: str | None
    direction: str | None
    media: tuple[MediaDescription, ...]

    @property
    def crypto(self) -> tuple[SdesCrypto, ...]:
        """Every `a=crypto` line of every media section, in order."""
        return tuple(line for m in self.media for line in m.crypto)


class _Attributes:
    """Attribute values collected for one level (session or one media section)."""

    def __init__(self) -> None:
        self.connection: str | None = None
        self.rtpmap: dict[int, RtpMap] = {}
        self.crypto: list[SdesCrypto] = []
        self.fingerprint: tuple[str, str] | None = None
        self.setup: str | None = None
        self.ice_ufrag: str | None = None
        self.rtcp_port: int | None = None
        self.rtcp_mux = False
        self.direction: str | None = None


_Handler = Callable[[_Attributes, str], None]


def parse_sdp(data: bytes) -> SessionDescription:
    """Parse an SDP body; raise DecodeError unless it starts with a `v=` line."""
    lines = _sdp_lines(data)
    if not lines or lines[0][0] != "v":
        raise DecodeError("SDP: first line is not v=")
    version = _parse_int(lines[0][1], "v=")
    session, origin, name = _Attributes(), None, ""
    media: list[tuple[tuple[str, int, int, str, tuple[str, ...]], _Attributes]] = []
    for kind, value in lines[1:]:
        if kind == "m":
            media.append((_parse_media_line(value), _Attributes()))
        elif not media and kind == "o":
            origin = _parse_origin(value)
        elif not media and kind == "s":
            name = value
        else:
            _apply_line(media[-1][1] if media else session, kind, value)
    sections = tuple(_media_description(m, attrs, session) for m, attrs in media)
    return SessionDescription(
        version=version,
        origin=origin,
        session_name=name,
        connection_address=session.connection,
        fingerprint=session.fingerprint,
        setup=session.setup,
        ice_ufrag=session.ice_ufrag,
        direction=session.direction,
        media=sections,
    )


def _sdp_lines(data: bytes) -> list[tuple[str, str]]:
    """`<type>=<value>` lines (type a single character); blank and other lines skipped."""
    text = data.decode("utf-8", errors="replace")
    pairs = []
    for raw in text.split("\n"):
        line = raw.rstrip("\r")
        if len(line) >= 2 and line[1] == "=":
            pairs.append((line[0], line[2:].strip()))
    return pairs


def _parse_int(text: str, what: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        raise DecodeError(f"SDP: {what} is not a number: {text[:20]!r}")
    return int(text)


def _parse_origin(value: str) -> Origin | None:
    fields = value.split()
    return Origin(*fields) if len(fields) == 6 else None


def _parse_media_line(value: str) -> tuple[str, int, int, str, tuple[str, ...]]:
    """`m=<media> <port>[/<number of ports>] <proto> <fmt> ...`."""
    fields = value.split()
    if len(fields) < 3:
        raise DecodeError(f"SDP: short m= line {value[:40]!r}")
    port_text, _, count_text = fields[1].partition("/")
    port = _parse_int(port_text, "m= port")
    count = _parse_int(count_text, "m= port count") if count_text else 1
    if port > MAX_PORT:
        raise DecodeError(f"SDP: m= port {port} out of range")
    return fields[0], port, count, fields[2], tuple(fields[3:])


def _apply_line(attrs: _Attributes, kind: str, value: str) -> None:
    if kind == "c":
        attrs.connection = _connection_address(value)
    elif kind == "a":
        name, _, arg = value.partition(":")
        handler = _ATTRIBUTE_HANDLERS.get(name.strip().lower())
        if handler is not None:
            handler(attrs, arg.strip())


def _connection_address(value: str) -> str | None:
    """`c=IN IP4 <address>[/ttl[/count]]` -> the address alone."""
    fields = value.split()
    return fields[2].split("/")[0] if len(fields) >= 3 else None


def _on_rtpmap(attrs: _Attributes, arg: str) -> None:
    pt_text, _, encoding = arg.partition(" ")
    parts = encoding.strip().split("/")
    if not _is_payload_type(pt_text) or len(parts) < 2:
        return
    clock, channels = parts[1], parts[2] if len(parts) > 2 else ""
    if not _is_small_number(clock) or (channels and not _is_small_number(channels)):
        return
    attrs.rtpmap[int(pt_text)] = RtpMap(parts[0], int(clock), int(channels) if channels else None)


def _is_small_number(text: str) -> bool:
    """ASCII digits only (str.isdigit alone also accepts e.g. superscripts)."""
    return text.isascii() and text.isdigit() and len(text) <= 10


def _is_payload_type(text: str) -> bool:
    return _is_small_number(text) and len(text) <= 3


def _on_crypto(attrs: _Attributes, arg: str) -> None:
    crypto = parse_crypto_attribute(arg)
    if crypto is not None:
        attrs.crypto.append(crypto)


def parse_crypto_attribute(arg: str) -> SdesCrypto | None:
    """`<tag> <crypto-suite> <key-params> [<session-param> ...]` (the part after `a=crypto:`).

    Returns None when the tag is not a number or a field is missing.
    """
    fields = arg.split()
    if len(fields) < 3 or not _is_small_number(fields[0]):
        return None
    first_key = fields[2].split(";")[0]
    method, _, key_info = first_key.partition(":")
    key_salt, lifetime, mki = _split_key_info(key_info)
    key_len = _base64_length(key_salt) if method.lower() == "inline" else None
    return SdesCrypto(
        tag=int(fields[0]),
        suite=fields[1],
        key_params=fields[2],
        key_bytes_len=key_len,
        lifetime=lifetime,
        mki=mki,
        session_params=tuple(fields[3:]),
    )


def _split_key_info(key_info: str) -> tuple[str, str | None, str | None]:
    """`key||salt ["|" lifetime] ["|" mki-value ":" mki-length]` (RFC 4568 §6.1)."""
    key_salt, *rest = key_info.split("|")
    lifetime = next((part for part in rest if ":" not in part), None)
    mki = next((part for part in rest if ":" in part), None)
    return key_salt, lifetime, mki


def _base64_length(text: str) -> int | None:
    padded = text + "=" * (-len(text) % 4)
    try:
        return len(base64.b64decode(padded, validate=True))
    except (binascii.Error, ValueError):
        return None


def _on_fingerprint(attrs: _Attributes, arg: str) -> None:
    """`a=fingerprint:<hash-func> <fingerprint>` (RFC 8122)."""
    fields = arg.split()
    if len(fields) == 2:
        attrs.fingerprint = (fields[0].lower(), fields[1])


def _on_setup(attrs: _Attributes, arg: str) -> None:
    attrs.setup = arg.lower() or None


def _on_ice_ufrag(attrs: _Attributes, arg: str) -> None:
    attrs.ice_ufrag = arg or None


def _on_rtcp(attrs: _Attributes, arg: str) -> None:
    """`a=rtcp:<port> [<nettype> <addrtype> <address>]` (RFC 3605)."""
    fields = arg.split()
    if fields and _is_small_number(fields[0]) and int(fields[0]) <= MAX_PORT:
        attrs.rtcp_port = int(fields[0])


def _on_rtcp_mux(attrs: _Attributes, _arg: str) -> None:
    attrs.rtcp_mux = True


def _direction_handler(direction: str) -> _Handler:
    def handle(attrs: _Attributes, _arg: str) -> None:
        attrs.direction = direction

    return handle


def _media_description(
    media_line: tuple[str, int, int, str, tuple[str, ...]],
    attrs: _Attributes,
    session: _Attributes,
) -> MediaDescription:
    media, port, count, proto, formats = media_line
    return MediaDescription(
        media=media,
        port=port,
        port_count=count,
        proto=proto,
        formats=formats,
        connection_address=attrs.connection or session.connection,
        rtpmap=dict(attrs.rtpmap),
        crypto=tuple(attrs.crypto),
        fingerprint=attrs.fingerprint or session.fingerprint,
        setup=attrs.setup or session.setup,
        ice_ufrag=attrs.ice_ufrag or session.ice_ufrag,
        rtcp_port=attrs.rtcp_port,
        rtcp_mux=attrs.rtcp_mux,
        direction=attrs.direction or session.direction,
    )


_ATTRIBUTE_HANDLERS: dict[str, _Handler] = {
    "rtpmap": _on_rtpmap,
    "crypto": _on_crypto,
    "fingerprint": _on_fingerprint,
    "setup": _on_setup,
    "ice-ufrag": _on_ice_ufrag,
    "rtcp": _on_rtcp,
    "rtcp-mux": _on_rtcp_mux,
    **{direction: _direction_handler(direction) for direction in DIRECTIONS},
}
