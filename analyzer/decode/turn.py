"""TURN framing: ChannelData, Microsoft multiplexed TURN, and STUN/TURN over TCP.

Sans-IO: the parsers take bytes and return frozen records or raise `DecodeError`; the two
splitters take a TCP byte stream in arbitrary pieces and hand back whole messages.

Two TCP framings exist and a connection uses one of them, never both:

* RFC 4571 (used by ICE-TCP, RFC 6544): each packet is prefixed by a 2-byte length.
  `Rfc4571Splitter`. Seen in nDPI's stun.pcap (Skype/Teams ICE-TCP flow, port 42000).
* Plain STUN/TURN over TCP (RFC 8489 §6.2.2, RFC 8656 §12.5): messages back to back,
  delimited by their own length fields: STUN 20 + length, ChannelData 4 + length padded to 4.
  `StunTcpSplitter`. Seen in stun_tcp_multiple_msgs_same_pkt.pcap (three Allocate requests in
  one segment), in stun.pcap's coturn flow and in stun_dtls_rtp.pcapng's Google TURN flow.
  Not for RFC 6062 TURN-TCP data connections: after ConnectionBind they carry raw peer data.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from analyzer.errors import DecodeError

# ChannelData, RFC 8656 §12.4: channel number(2) length(2) application data, padded to a
# multiple of 4 over TCP (optional over UDP). Channels 0x4000-0x7FFF per RFC 5766 §11;
# RFC 8656 narrowed the range to 0x4000-0x4FFF, older peers still use the wider one.
CHANNEL_HEADER = struct.Struct("!HH")
CHANNEL_MIN, CHANNEL_MAX = 0x4000, 0x7FFF

# MS-TURN §2.2.3 Multiplexed TURN: Channel_ID 0xFF10 (2), Length (2) = bytes after the Length
# field, MTURN_Session_ID (8), data.
MS_TURN_HEADER = struct.Struct("!HH8s")
MS_TURN_CHANNEL_ID = 0xFF10
MS_TURN_SESSION_ID_LEN = 8

# RFC 4571 §2: LENGTH(2) then the packet.
RFC4571_HEADER = struct.Struct("!H")
# STUN header, RFC 8489 §5: type(2) length(2) cookie(4) transaction id(12).
STUN_HEADER_LEN = 20

MAX_BUFFER = 256 * 1024  # default bound on bytes a splitter keeps between feeds


@dataclass(frozen=True, slots=True)
class ChannelData:
    channel: int
    data: bytes


@dataclass(frozen=True, slots=True)
class MsTurnFrame:
    session_id: bytes
    data: bytes


def _padded(length: int) -> int:
    return (length + 3) & ~3


# --------------------------------------------------------------------------- ChannelData


def _channel_data_problem(data: bytes, over_tcp: bool) -> str | None:
    """Why `data` is not one ChannelData message, or None if it is."""
    if len(data) < CHANNEL_HEADER.size:
        return f"{len(data)} bytes, shorter than the 4-byte header"
    channel, length = CHANNEL_HEADER.unpack_from(data)
    if not CHANNEL_MIN <= channel <= CHANNEL_MAX:
        return f"channel 0x{channel:04x} outside 0x4000-0x7fff"
    sizes = {4 + _padded(length)} if over_tcp else {4 + length, 4 + _padded(length)}
    if len(data) not in sizes:
        return f"length {length} does not match the {len(data) - 4} bytes after the header"
    return None


def looks_like_channel_data(data: bytes, over_tcp: bool = False) -> bool:
    """One whole ChannelData message (padding required over TCP, optional over UDP)."""
    return _channel_data_problem(data, over_tcp) is None


def parse_channel_data(data: bytes, over_tcp: bool = False) -> ChannelData:
    problem = _channel_data_problem(data, over_tcp)
    if problem is not None:
        raise DecodeError(f"TURN ChannelData: {problem}")
    channel, length = CHANNEL_HEADER.unpack_from(data)
    return ChannelData(channel, bytes(data[4:4 + length]))


# --------------------------------------------------------------------------- MS-TURN


def _ms_turn_problem(data: bytes) -> str | None:
    if len(data) < MS_TURN_HEADER.size:
        return f"{len(data)} bytes, shorter than the 12-byte header"
    channel_id, length, _ = MS_TURN_HEADER.unpack_from(data)
    if channel_id != MS_TURN_CHANNEL_ID:
        return f"channel id 0x{channel_id:04x} is not 0xff10"
    if length != len(data) - 4:
        return f"length {length} does not match the {len(data) - 4} bytes after it"
    return None


def looks_like_ms_turn(data: bytes) -> bool:
    """One whole MS-TURN multiplexed frame (0xFF10, length, 8-byte session id, data)."""
    return _ms_turn_problem(data) is None


def parse_ms_turn(data: bytes) -> MsTurnFrame:
    problem = _ms_turn_problem(data)
    if problem is not None:
        raise DecodeError(f"MS-TURN multiplexed frame: {problem}")
    _, _, session_id = MS_TURN_HEADER.unpack_from(data)
    return MsTurnFrame(session_id, bytes(data[MS_TURN_HEADER.size:]))


# --------------------------------------------------------------------------- TCP splitters


class _StreamSplitter:
    """Buffers a byte stream and cuts it where `_frame_size` says; subclasses define it.

    The remainder kept between feeds is at most one incomplete message (under 64 KiB + header),
    so `max_buffer` only bites when set below that: then the buffer is dropped and
    `overflowed` set. A stream that lost its framing (`broken`) yields nothing more.
    """

    _prefix_len = 0  # bytes of framing stripped from each message

    def __init__(self, max_buffer: int = MAX_BUFFER) -> None:
        self._buffer = bytearray()
        self._max_buffer = max_buffer
        self.overflowed = False

    @property
    def pending(self) -> int:
        """Bytes received but not yet returned as a message."""
        return len(self._buffer)

    @property
    def broken(self) -> bool:
        return self.overflowed

    def _frame_size(self, start: int) -> int | None:
        """Size of the message at `start` if it is complete in the buffer, else None."""
        raise NotImplementedError

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return every message now complete, in order."""
        if self.broken:
            return []
        self._buffer += data
        frames, consumed = self._cut_frames()
        del self._buffer[:consumed]
        if len(self._buffer) > self._max_buffer:
            self.overflowed = True
        if self.broken:
            self._buffer.clear()
        return frames

    def _cut_frames(self) -> tuple[list[bytes], int]:
        frames: list[bytes] = []
        start = 0
        while (size := self._frame_size(start)) is not None:
            frames.append(bytes(self._buffer[start + self._prefix_len:start + size]))
            start += size
        return frames, start

    def _complete(self, start: int, size: int) -> int | None:
        return size if len(self._buffer) - start >= size else None


class Rfc4571Splitter(_StreamSplitter):
    """RFC 4571 framing: 2-byte length, then the packet. Returns the packets, unprefixed."""

    _prefix_len = RFC4571_HEADER.size

    def _frame_size(self, start: int) -> int | None:
        if len(self._buffer) - start < RFC4571_HEADER.size:
            return None
        (length,) = RFC4571_HEADER.unpack_from(self._buffer, start)
        return self._complete(start, RFC4571_HEADER.size + length)


class StunTcpSplitter(_StreamSplitter):
    """STUN and TURN ChannelData sent back to back over TCP, cut by their own length fields.

    Returns each message whole (ChannelData with its padding, for `parse_channel_data(...,
    over_tcp=True)`). A first byte whose top bits are not 00 (STUN) or 01 (ChannelData) means
    the framing is lost: `desynced` is set, the buffer dropped, and nothing more returned.
    """

    def __init__(self, max_buffer: int = MAX_BUFFER) -> None:
        super().__init__(max_buffer)
        self.desynced = False

    @property
    def broken(self) -> bool:
        return self.overflowed or self.desynced

    def _frame_size(self, start: int) -> int | None:
        if self.desynced or len(self._buffer) - start < CHANNEL_HEADER.size:
            return None
        kind = self._buffer[start] >> 6
        (length,) = struct.unpack_from("!H", self._buffer, start + 2)
        if kind == 0b00:
            return self._complete(start, STUN_HEADER_LEN + length)
        if kind == 0b01:
            return self._complete(start, CHANNEL_HEADER.size + _padded(length))
        self.desynced = True
        return None
