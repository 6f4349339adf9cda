"""SIP messages (RFC 3261) over UDP or TCP, with their SDP bodies.

`looks_like_sip` checks the start line only. `parse_sip` returns the start line, every header
(compact names expanded, folded lines joined) and the convenience fields confscope reports
(Call-ID, From/To URIs and tags, CSeq, Via, Contact, User-Agent, Server, the body and its SDP).
`SipStreamSplitter` cuts one TCP direction into messages (RFC 3261 §18.3: header end, then
Content-Length bytes of body). All header text is hostile: decoded with errors="replace" and
never interpreted beyond splitting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from analyzer.decode.sdp import SessionDescription, parse_sdp
from analyzer.errors import DecodeError

SIP_VERSION = "SIP/2.0"
# RFC 3261 methods and the extensions: PRACK 3262, SUBSCRIBE/NOTIFY 6665, PUBLISH 3903,
# INFO 6086, REFER 3515, MESSAGE 3428, UPDATE 3311.
METHODS = frozenset(
    {
        "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE",
        "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE",
    }
)  # fmt: skip
# Compact header names (IANA "Header Field Parameters and Parameter Values" registry).
COMPACT_FORMS = {
    "a": "Accept-Contact", "b": "Referred-By", "c": "Content-Type", "d": "Request-Disposition",
    "e": "Content-Encoding", "f": "From", "i": "Call-ID", "j": "Reject-Contact",
    "k": "Supported", "l": "Content-Length", "m": "Contact", "n": "Identity-Info",
    "o": "Event", "r": "Refer-To", "s": "Subject", "t": "To", "u": "Allow-Events",
    "v": "Via", "x": "Session-Expires", "y": "Identity",
}  # fmt: skip
URI_SCHEMES = ("sip:", "sips:", "tel:")
SDP_TYPE = "application/sdp"
START_LINE_LIMIT = 2048  # bytes searched for the end of the start line by looks_like_sip
_STATUS_LINE = re.compile(r"SIP/2\.0 ([1-6][0-9][0-9])(?: (.*))?")
_LINE_BREAK = re.compile(rb"\r?\n")
_HEADER_END = re.compile(rb"\r?\n\r?\n")


@dataclass(frozen=True, slots=True)
class SipMessage:
    """One SIP request or response.

    `headers` keeps every header in order, compact names expanded (`i` -> `Call-ID`) and
    folded lines joined with one space. The convenience fields take the first header of their
    name. `body` is cut to Content-Length (all remaining bytes when it is absent). `sdp` is
    None when there is no application/sdp body or part, or when it does not parse.
    """

    is_request: bool
    method: str | None
    request_uri: str | None
    status_code: int | None
    reason: str | None
    headers: tuple[tuple[str, str], ...]
    call_id: str | None
    from_uri: str | None
    to_uri: str | None
    from_tag: str | None
    to_tag: str | None
    cseq: tuple[int, str] | None
    via: tuple[str, ...]
    contact: str | None
    user_agent: str | None
    server: str | None
    content_type: str | None
    body: bytes
    sdp: SessionDescription | None

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive, compact forms accepted)."""
        values = self.header_values(name)
        return values[0] if values else None

    def header_values(self, name: str) -> tuple[str, ...]:
        """Every value of header `name`, in order."""
        wanted = _canonical_name(name).lower()
        return tuple(value for key, value in self.headers if key.lower() == wanted)


def looks_like_sip(data: bytes) -> bool:
    """True if `data` starts with a SIP request line or status line. Never raises."""
    end = data.find(b"\n", 0, START_LINE_LIMIT)
    if end < 0:
        return False
    line = data[:end].rstrip(b"\r").decode("ascii", errors="replace")
    return _parse_start_line(line) is not None


def parse_sip(data: bytes) -> SipMessage:
    """Parse a whole SIP message; raise DecodeError if the start line is not SIP."""
    if b"\n" not in data:
        raise DecodeError("SIP: no line end after the start line")
    head, body = _split_head_body(data)
    lines = _unfold(head.decode("utf-8", errors="replace").split("\n"))
    start = _parse_start_line(lines[0]) if lines else None
    if start is None:
        raise DecodeError("SIP: no request or status line")
    headers = tuple(_parse_header_lines(lines[1:]))
    return _build_message(start, headers, body)


def _split_head_body(data: bytes) -> tuple[bytes, bytes]:
    match = _HEADER_END.search(data)
    if match is None:
        return data, b""
    return data[: match.start()], data[match.end() :]


def _unfold(lines: list[str]) -> list[str]:
    """Strip CR and join continuation lines (leading SP/HT) to the previous line."""
    joined: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r")
        if line[:1] in (" ", "\t") and joined:
            joined[-1] = f"{joined[-1]} {line.strip()}"
        else:
            joined.append(line)
    return joined


_StartLine = tuple[str | None, str | None, int | None, str | None]


def _parse_start_line(line: str) -> _StartLine | None:
    """(method, request_uri, status_code, reason), or None if not a SIP start line."""
    status = _STATUS_LINE.fullmatch(line)
    if status is not None:
        return None, None, int(status.group(1)), status.group(2) or ""
    parts = line.split(" ")
    if len(parts) != 3 or parts[0] not in METHODS or parts[2] != SIP_VERSION:
        return None
    if not parts[1].lower().startswith(URI_SCHEMES):
        return None
    return parts[0], parts[1], None, None


def _parse_header_lines(lines: list[str]) -> list[tuple[str, str]]:
    headers = []
    for line in lines:
        name, colon, value = line.partition(":")
        if colon and name.strip() and " " not in name.strip():
            headers.append((_canonical_name(name.strip()), value.strip()))
    return headers


def _canonical_name(name: str) -> str:
    return COMPACT_FORMS.get(name.lower(), name) if len(name) == 1 else name


def _build_message(
    start: _StartLine, headers: tuple[tuple[str, str], ...], rest: bytes
) -> SipMessage:
    method, uri, status, reason = start
    first = _first_values(headers)
    content_type = first.get("content-type")
    body = _limit_body(rest, first.get("content-length"))
    from_value, to_value = first.get("from"), first.get("to")
    return SipMessage(
        is_request=method is not None,
        method=method,
        request_uri=uri,
        status_code=status,
        reason=reason,
        headers=headers,
        call_id=first.get("call-id"),
        from_uri=_name_addr_uri(from_value),
        to_uri=_name_addr_uri(to_value),
        from_tag=_header_param(from_value, "tag"),
        to_tag=_header_param(to_value, "tag"),
        cseq=_parse_cseq(first.get("cseq")),
        via=tuple(v for n, value in headers if n.lower() == "via" for v in _split_list(value)),
        contact=first.get("contact"),
        user_agent=first.get("user-agent"),
        server=first.get("server"),
        content_type=content_type,
        body=body,
        sdp=_find_sdp(content_type, body),
    )


def _first_values(headers: tuple[tuple[str, str], ...]) -> dict[str, str]:
    first: dict[str, str] = {}
    for name, value in headers:
        first.setdefault(name.lower(), value)
    return first


def _limit_body(rest: bytes, content_length: str | None) -> bytes:
    """The body cut to Content-Length; all remaining bytes if it is absent or invalid."""
    if content_length is None or not (content_length.isascii() and content_length.isdigit()):
        return rest
    return rest[: int(content_length)]


def _split_list(value: str) -> list[str]:
    """Split a comma-separated header value, ignoring commas in quotes or <...>."""
    items: list[str] = []
    current: list[str] = []
    quoted = angle = False
    for char in value:
        if char == '"':
            quoted = not quoted
        elif char in "<>" and not quoted:
            angle = char == "<"
        elif char == "," and not quoted and not angle:
            items.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    items.append("".join(current).strip())
    return [item for item in items if item]


def _split_name_addr(value: str) -> tuple[str, str]:
    """(uri, header parameters text) of `"name" <uri>;params` or `uri;params`."""
    open_at = _unquoted_index(value, "<")
    if open_at >= 0:
        close_at = value.find(">", open_at)
        if close_at < 0:
            return value[open_at + 1 :].strip(), ""
        return value[open_at + 1 : close_at].strip(), value[close_at + 1 :]
    uri, _, params = value.partition(";")
    return uri.strip(), params and ";" + params


def _unquoted_index(value: str, wanted: str) -> int:
    quoted = False
    for index, char in enumerate(value):
        if char == '"':
            quoted = not quoted
        elif char == wanted and not quoted:
            return index
    return -1


def _name_addr_uri(value: str | None) -> str | None:
    if value is None:
        return None
    return _split_name_addr(value)[0] or None


def _header_param(value: str | None, wanted: str) -> str | None:
    return _params(_split_name_addr(value)[1]).get(wanted) if value is not None else None


def _params(text: str) -> dict[str, str]:
    """`;name=value;flag` -> {name: value} (names lowercased, quotes removed, empty dropped)."""
    params: dict[str, str] = {}
    for param in text.split(";"):
        name, _, value = param.partition("=")
        value = value.strip().strip('"')
        if name.strip() and value:
            params.setdefault(name.strip().lower(), value)
    return params


def _parse_cseq(value: str | None) -> tuple[int, str] | None:
    """`CSeq: <number> <method>` (RFC 3261 §20.16)."""
    fields = value.split() if value else []
    if len(fields) != 2 or not fields[0].isascii() or not fields[0].isdigit():
        return None
    return int(fields[0]), fields[1]


def _media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def _find_sdp(content_type: str | None, body: bytes) -> SessionDescription | None:
    """The SDP of an application/sdp body, or of the first such part of a multipart body."""
    if content_type is None or not body:
        return None
    media_type = _media_type(content_type)
    if media_type == SDP_TYPE:
        return _try_parse_sdp(body)
    if media_type.startswith("multipart/"):
        boundary = _params(content_type.partition(";")[2]).get("boundary")
        return _sdp_from_multipart(body, boundary) if boundary else None
    return None


def _try_parse_sdp(body: bytes) -> SessionDescription | None:
    try:
        return parse_sdp(body)
    except DecodeError:
        return None


def _sdp_from_multipart(body: bytes, boundary: str) -> SessionDescription | None:
    """Walk the parts of a MIME multipart body (RFC 2046 §5.1) for application/sdp."""
    delimiter = b"--" + boundary.encode("utf-8", errors="replace")
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        head, content = _split_head_body(part.lstrip(b"\r\n"))
        lines = _unfold(head.decode("utf-8", errors="replace").split("\n"))
        part_type = _first_values(tuple(_parse_header_lines(lines))).get("content-type")
        if part_type is not None and _media_type(part_type) == SDP_TYPE:
            return _try_parse_sdp(_strip_part_end(content))
    return None


def _strip_part_end(content: bytes) -> bytes:
    """Drop the CRLF that belongs to the next boundary delimiter."""
    return content[:-2] if content.endswith(b"\r\n") else content.removesuffix(b"\n")


# --- SIP over TCP -------------------------------------------------------------------------

MAX_BUFFER = 256 * 1024
_CONTENT_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(\S*)", re.I | re.M)


class SipStreamSplitter:
    """Cuts one direction of a SIP-over-TCP stream into whole messages (sans-IO).

    `feed` returns the messages completed by `data`. CRLF keep-alives between messages are
    dropped (RFC 5626 §3.5.1). If the buffered bytes exceed MAX_BUFFER without completing a
    message, or a Content-Length is not a number, the stream cannot be framed any more:
    `overflowed` becomes True, the buffer is dropped and later data is ignored.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._searched = 0  # bytes of the buffer already searched for the header end
        self.overflowed = False

    def feed(self, data: bytes) -> list[bytes]:
        if self.overflowed:
            return []
        self._buffer += data
        messages = []
        while (message := self._next_message()) is not None:
            messages.append(message)
        if len(self._buffer) > MAX_BUFFER:
            self._give_up()
        return messages

    def _next_message(self) -> bytes | None:
        self._drop_keepalives()
        match = _HEADER_END.search(self._buffer, max(0, self._searched - 3))
        if match is None:
            self._searched = len(self._buffer)
            return None
        body_length = self._content_length(bytes(self._buffer[: match.start()]))
        if body_length is None:
            self._give_up()
            return None
        total = match.end() + body_length
        if len(self._buffer) < total:
            return None
        message = bytes(self._buffer[:total])
        del self._buffer[:total]
        self._searched = 0
        return message

    def _drop_keepalives(self) -> None:
        keepalive = len(self._buffer) - len(self._buffer.lstrip(b"\r\n"))
        if keepalive:
            del self._buffer[:keepalive]
            self._searched = 0

    @staticmethod
    def _content_length(head: bytes) -> int | None:
        """Content-Length of a header block (0 if absent), None if not a usable number."""
        match = _CONTENT_LENGTH.search(head)
        if match is None:
            return 0
        text = match.group(1)
        if not text.isdigit() or int(text) > MAX_BUFFER:
            return None
        return int(text)

    def _give_up(self) -> None:
        self.overflowed = True
        self._buffer.clear()
