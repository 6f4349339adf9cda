"""DTLS records and handshake reassembly: RFC 6347 (DTLS 1.2), RFC 9147 (DTLS 1.3), RFC 9146.

Sans-IO. `parse_dtls_records` splits a UDP datagram into records; `DtlsHandshakeAssembler`
(one per flow direction) reassembles fragmented, retransmitted and reordered handshake
messages of epoch 0, the only ones sent in clear. Hello bodies are parsed by tls.py with
`dtls=True`.

Seen on real traffic (nDPI test captures): OpenSSL's pre-RFC DTLS 1.0 record version 0x0100
(DTLS1_BAD_VER, dtls_old_version.pcapng); a Certificate split over four datagrams
(stun_zoom.pcapng); a ClientHello retransmitted re-fragmented in two (stun_zoom.pcapng frames
38-39, same message_seq, reported once); DTLS 1.3 unified-header records 0x2E after a
HelloRetryRequest (dtls.pcap frames 8-14).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from analyzer.decode.tls import (
    CONTENT_ALERT,
    CONTENT_APPLICATION_DATA,
    CONTENT_CHANGE_CIPHER_SPEC,
    CONTENT_HANDSHAKE,
    HandshakeMessage,
)
from analyzer.errors import DecodeError

# DTLSPlaintext header, RFC 6347 §4.1:
#   content_type(1) version(2) epoch(2) sequence_number(6) length(2)
RECORD_HEADER = struct.Struct("!BHH6sH")
RECORD_HEADER_LEN = RECORD_HEADER.size  # 13
CONTENT_TLS12_CID = 25  # RFC 9146: the connection id sits between sequence_number and length
DTLS_CONTENT_TYPES = frozenset({20, 21, 22, 23, 24, CONTENT_TLS12_CID})
DTLS_VERSIONS = frozenset({0xFEFF, 0xFEFD, 0xFEFC, 0x0100})  # 1.0, 1.2, 1.3, OpenSSL 1.0 pre-RFC
MAX_CID_LENGTH = 255

# DTLS 1.3 unified header, RFC 9147 §4: first byte 0b001CSLEE.
UNIFIED_HEADER_MASK, UNIFIED_HEADER_BITS = 0xE0, 0x20
UNIFIED_CID_BIT, UNIFIED_SEQ16_BIT, UNIFIED_LENGTH_BIT, UNIFIED_EPOCH_MASK = 0x10, 0x08, 0x04, 0x03
DTLS13 = 0xFEFC

# Handshake fragment header, RFC 6347 §4.2.2:
#   msg_type(1) length(3) message_seq(2) fragment_offset(3) fragment_length(3)
HANDSHAKE_HEADER_LEN = 12


def _is_unified_header(first_byte: int) -> bool:
    return first_byte & UNIFIED_HEADER_MASK == UNIFIED_HEADER_BITS


def looks_like_dtls(data: bytes) -> bool:
    """A DTLSPlaintext record header with a known type and version and a length that fits."""
    if len(data) < RECORD_HEADER_LEN:
        return False
    content_type, version, _, _, length = RECORD_HEADER.unpack_from(data)
    if content_type not in DTLS_CONTENT_TYPES or version not in DTLS_VERSIONS:
        return False
    # With a connection id (type 25) the length field moves; its position is not known here.
    return content_type == CONTENT_TLS12_CID or length <= len(data) - RECORD_HEADER_LEN


def looks_like_dtls13_ciphertext(data: bytes) -> bool:
    """A DTLS 1.3 unified header (first byte 0x20-0x3F) whose length, if shown, fits."""
    if len(data) < 2 or not _is_unified_header(data[0]):
        return False
    flags = data[0]
    if flags & UNIFIED_CID_BIT or not flags & UNIFIED_LENGTH_BIT:
        return True  # CID length is negotiated; without L the record runs to the datagram's end
    seq_len = 2 if flags & UNIFIED_SEQ16_BIT else 1
    if len(data) < 1 + seq_len + 2:
        return False
    length = int.from_bytes(data[1 + seq_len:3 + seq_len], "big")
    return 0 < length <= len(data) - 3 - seq_len


@dataclass(frozen=True, slots=True)
class DtlsRecord:
    """One record. For DTLS 1.3 ciphertext (unified header), content_type is the raw first
    byte (0x20-0x3F), version is DTLS 1.3, epoch holds the 2 low epoch bits and
    sequence_number the (encrypted) low sequence bits."""

    content_type: int
    version: int
    epoch: int
    sequence_number: int
    fragment: bytes
    connection_id: bytes = b""

    @property
    def is_unified_header(self) -> bool:
        return _is_unified_header(self.content_type)


def parse_dtls_records(data: bytes, cid_length: int | None = None) -> tuple[DtlsRecord, ...]:
    """All records of one datagram.

    cid_length: the negotiated connection id length for tls12_cid (type 25) records; if None
    it is inferred when exactly one length makes the record end at the datagram's end.
    """
    if not data:
        raise DecodeError("DTLS: empty datagram")
    records, offset = [], 0
    while offset < len(data):
        record, offset = _parse_record(data, offset, cid_length)
        records.append(record)
    return tuple(records)


def _parse_record(data: bytes, offset: int, cid_length: int | None) -> tuple[DtlsRecord, int]:
    if _is_unified_header(data[offset]):
        return _parse_unified_record(data, offset)
    if len(data) - offset < RECORD_HEADER_LEN:
        raise DecodeError(f"DTLS: {len(data) - offset} bytes left at {offset}, header needs 13")
    content_type, version, epoch, seq, length = RECORD_HEADER.unpack_from(data, offset)
    if content_type not in DTLS_CONTENT_TYPES or version not in DTLS_VERSIONS:
        raise DecodeError(f"DTLS: content type {content_type} version 0x{version:04x} at {offset}")
    cid = b""
    header_end = offset + RECORD_HEADER_LEN
    if content_type == CONTENT_TLS12_CID:
        cid, length, header_end = _connection_id(data, offset, cid_length)
    end = header_end + length
    if end > len(data):
        raise DecodeError(f"DTLS: record at {offset} claims {length} bytes, datagram ends first")
    record = DtlsRecord(content_type, version, epoch, int.from_bytes(seq, "big"),
                        data[header_end:end], cid)
    return record, end


def _connection_id(data: bytes, offset: int, cid_length: int | None) -> tuple[bytes, int, int]:
    """(cid, length, fragment start) of a tls12_cid record, RFC 9146 §4."""
    cid_start = offset + RECORD_HEADER_LEN - 2
    candidates = [cid_length] if cid_length is not None else _cid_lengths_ending_datagram(
        data, cid_start)
    if len(candidates) != 1 or cid_start + candidates[0] + 2 > len(data):
        raise DecodeError(f"DTLS: cannot place the connection id of the record at {offset}")
    n = candidates[0]
    length = int.from_bytes(data[cid_start + n:cid_start + n + 2], "big")
    return data[cid_start:cid_start + n], length, cid_start + n + 2


def _cid_lengths_ending_datagram(data: bytes, cid_start: int) -> list[int]:
    """CID lengths for which the length field makes a non-empty record end the datagram."""
    lengths = []
    for n in range(1, min(MAX_CID_LENGTH, len(data) - cid_start - 2) + 1):
        rest = len(data) - cid_start - n - 2
        if rest > 0 and int.from_bytes(data[cid_start + n:cid_start + n + 2], "big") == rest:
            lengths.append(n)
    return lengths


def _parse_unified_record(data: bytes, offset: int) -> tuple[DtlsRecord, int]:
    """DTLSCiphertext, RFC 9147 §4; a connection id (C bit) or a missing length (L bit unset)
    makes the record run to the end of the datagram."""
    flags = data[offset]
    seq_len = 2 if flags & UNIFIED_SEQ16_BIT else 1
    pos = offset + 1
    if len(data) - pos < seq_len:
        raise DecodeError(f"DTLS 1.3: truncated unified header at {offset}")
    seq = int.from_bytes(data[pos:pos + seq_len], "big")
    pos += seq_len
    end = len(data)
    if flags & UNIFIED_LENGTH_BIT and not flags & UNIFIED_CID_BIT:
        if len(data) - pos < 2:
            raise DecodeError(f"DTLS 1.3: truncated length at {offset}")
        end = pos + 2 + int.from_bytes(data[pos:pos + 2], "big")
        pos += 2
        if end > len(data):
            raise DecodeError(f"DTLS 1.3: record at {offset} runs past the datagram")
    return DtlsRecord(flags, DTLS13, flags & UNIFIED_EPOCH_MASK, seq, data[pos:end]), end


@dataclass(frozen=True, slots=True)
class HandshakeFragment:
    msg_type: int
    length: int
    message_seq: int
    fragment_offset: int
    fragment: bytes


def parse_handshake_fragments(fragment: bytes) -> tuple[HandshakeFragment, ...]:
    """Handshake fragments of one epoch-0 handshake record, RFC 6347 §4.2.2."""
    fragments, offset = [], 0
    while offset < len(fragment):
        if len(fragment) - offset < HANDSHAKE_HEADER_LEN:
            raise DecodeError(f"DTLS handshake: truncated header at {offset}")
        header = fragment[offset:offset + HANDSHAKE_HEADER_LEN]
        length, frag_offset, frag_length = (int.from_bytes(header[i:i + 3], "big")
                                            for i in (1, 6, 9))
        start = offset + HANDSHAKE_HEADER_LEN
        if start + frag_length > len(fragment) or frag_offset + frag_length > length:
            raise DecodeError(f"DTLS handshake: fragment at {offset} does not fit")
        fragments.append(HandshakeFragment(header[0], length, int.from_bytes(header[4:6], "big"),
                                           frag_offset, fragment[start:start + frag_length]))
        offset = start + frag_length
    return tuple(fragments)


@dataclass(slots=True)
class _PendingMessage:
    """Fragments received so far of one message; memory grows with the bytes received."""

    msg_type: int
    length: int
    parts: list[tuple[int, bytes]] = field(default_factory=list)
    covered: list[tuple[int, int]] = field(default_factory=list)  # merged [start, end) ranges
    stored: int = 0  # bytes held in parts

    def add(self, offset: int, data: bytes) -> bool:
        """Store a fragment (unless it brings nothing new); True once the message is whole."""
        end = offset + len(data)
        if not any(start <= offset and end <= stop for start, stop in self.covered):
            self.parts.append((offset, data))
            self.stored += len(data)
            self.covered = _merge([*self.covered, (offset, end)])
        return self.length == 0 or self.covered == [(0, self.length)]

    def body(self) -> bytes:
        body = bytearray(self.length)
        for offset, data in self.parts:
            body[offset:offset + len(data)] = data
        return bytes(body)


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


class DtlsHandshakeAssembler:
    """Reassembles the clear (epoch 0) handshake messages of one flow direction.

    Each message is returned once, when its last missing byte arrives, whatever the order,
    fragmentation or retransmission of its fragments. Fragments that disagree with earlier
    ones about a message's type or length are dropped (`conflicts`). Memory is bounded:
    messages over MAX_MESSAGE_LENGTH, more than MAX_PENDING incomplete messages or more than
    MAX_BUFFERED fragment bytes held set `overflowed`, and the excess is ignored.
    """

    MAX_MESSAGE_LENGTH = 64 * 1024
    MAX_BUFFERED = 128 * 1024  # fragment bytes held for incomplete messages
    MAX_PENDING = 16
    MAX_DONE = 256

    def __init__(self) -> None:
        self._pending: dict[int, _PendingMessage] = {}
        self._done: set[int] = set()
        self._buffered = 0
        self.encrypted_seen = False
        self.alert_seen = False
        self.overflowed = False
        self.conflicts = 0

    def feed(self, record: DtlsRecord) -> list[HandshakeMessage]:
        """Messages completed by this record; DecodeError if its handshake framing is bad."""
        if record.is_unified_header or record.epoch != 0 or record.content_type in (
                CONTENT_CHANGE_CIPHER_SPEC, CONTENT_APPLICATION_DATA):
            self.encrypted_seen = True
            return []
        if record.content_type == CONTENT_ALERT:
            self.alert_seen = True
        if record.content_type != CONTENT_HANDSHAKE:
            return []
        fragments = parse_handshake_fragments(record.fragment)
        return [message for fragment in fragments if (message := self._add(fragment))]

    def _add(self, fragment: HandshakeFragment) -> HandshakeMessage | None:
        seq = fragment.message_seq
        if seq in self._done or not self._accepts(fragment):
            return None
        pending = self._pending.setdefault(seq, _PendingMessage(fragment.msg_type,
                                                                fragment.length))
        if (pending.msg_type, pending.length) != (fragment.msg_type, fragment.length):
            self.conflicts += 1
            return None
        stored_before = pending.stored
        complete = pending.add(fragment.fragment_offset, fragment.fragment)
        self._buffered += pending.stored - stored_before
        if not complete:
            return None
        del self._pending[seq]
        self._done.add(seq)
        self._buffered -= pending.stored
        return HandshakeMessage(pending.msg_type, pending.body())

    def _accepts(self, fragment: HandshakeFragment) -> bool:
        new = fragment.message_seq not in self._pending
        too_many = new and len(self._pending) >= self.MAX_PENDING
        full = self._buffered + len(fragment.fragment) > self.MAX_BUFFERED
        if (fragment.length > self.MAX_MESSAGE_LENGTH or too_many or full
                or len(self._done) >= self.MAX_DONE):
            self.overflowed = True
            return False
        return True
