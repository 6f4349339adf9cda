"""DNS messages (RFC 1035) over UDP, and the 2-byte length framing of DNS over TCP (§4.2.2).

Only the header, the question section and the answer section are read. Answers of type A and
AAAA (value: the address as text) and CNAME and PTR (value: the target name) are kept; other
types are skipped. Names use compression pointers (§4.1.4); a pointer must point strictly
before itself, which with the hop limit keeps every name walk finite.
`address_names` tells, for each answered address, the chain of names that led to it.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from analyzer import speedups
from analyzer.errors import DecodeError

# Header (RFC 1035 §4.1.1), network byte order:
# | ID (16) | QR(1) OPCODE(4) AA TC RD | RA Z(3) RCODE(4) | QDCOUNT | ANCOUNT | NSCOUNT | ARCOUNT |
HEADER = struct.Struct("!HHHHHH")
QUESTION_TAIL = struct.Struct("!HH")  # QTYPE, QCLASS after QNAME
RR_TAIL = struct.Struct("!HHIH")  # TYPE, CLASS, TTL, RDLENGTH after NAME
TCP_LENGTH = struct.Struct("!H")
QR_BIT = 0x8000
OPCODE_SHIFT, OPCODE_MASK = 11, 0xF
RCODE_MASK = 0xF
KNOWN_OPCODES = frozenset({0, 1, 2, 4, 5})  # QUERY, IQUERY, STATUS, NOTIFY, UPDATE
POINTER_TAG = 0xC0
MAX_NAME_LENGTH = 255
MAX_POINTER_HOPS = 64
MIN_QUESTION_SIZE = 5  # root name (1) + QTYPE + QCLASS
MIN_RECORD_SIZE = 11  # root name (1) + TYPE + CLASS + TTL + RDLENGTH


class RRType(IntEnum):
    """Resource record types that `parse_dns` keeps."""

    A = 1
    CNAME = 5
    PTR = 12
    AAAA = 28


ADDRESS_LENGTHS = {RRType.A: 4, RRType.AAAA: 16}


class DnsQuestion(NamedTuple):
    name: str
    qtype: int


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    """One kept answer record; `value` is an address (A/AAAA) or a name (CNAME/PTR)."""

    name: str
    rtype: int
    ttl: int
    value: str


@dataclass(frozen=True, slots=True)
class DnsMessage:
    id: int
    is_response: bool
    opcode: int
    rcode: int
    questions: tuple[DnsQuestion, ...]
    answers: tuple[DnsAnswer, ...]


def looks_like_dns(data: bytes) -> bool:
    """Cheap plausibility check of the header: known opcode, counts that fit the length."""
    if len(data) < HEADER.size:
        return False
    _, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(data)
    if (flags >> OPCODE_SHIFT) & OPCODE_MASK not in KNOWN_OPCODES or qdcount > 4:
        return False
    records = ancount + nscount + arcount
    return HEADER.size + MIN_QUESTION_SIZE * qdcount + MIN_RECORD_SIZE * records <= len(data)


def parse_dns(data: bytes) -> DnsMessage:
    """Parse one DNS message (without TCP length prefix); raise DecodeError if malformed."""
    if speedups.native is not None:  # (well-formed messages: C reads them, or gives None)
        parsed = speedups.native.dns_message(data)
        if parsed is not None:
            return _message(*parsed)
    if len(data) < HEADER.size:
        raise DecodeError(f"DNS: {len(data)} bytes, shorter than the 12-byte header")
    ident, flags, qdcount, ancount, _, _ = HEADER.unpack_from(data)
    offset = HEADER.size
    questions = []
    for _ in range(qdcount):
        question, offset = _read_question(data, offset)
        questions.append(question)
    answers = []
    for _ in range(ancount):
        answer, offset = _read_record(data, offset)
        if answer is not None:
            answers.append(answer)
    return DnsMessage(
        id=ident,
        is_response=bool(flags & QR_BIT),
        opcode=(flags >> OPCODE_SHIFT) & OPCODE_MASK,
        rcode=flags & RCODE_MASK,
        questions=tuple(questions),
        answers=tuple(answers),
    )


def _message(ident: int, flags: int, questions: tuple[tuple[str, int], ...],
             answers: list[tuple[str, int, int, str | bytes]]) -> DnsMessage:
    """A DnsMessage of what C read (AAAA addresses as their bytes)."""
    return DnsMessage(
        id=ident,
        is_response=bool(flags & QR_BIT),
        opcode=(flags >> OPCODE_SHIFT) & OPCODE_MASK,
        rcode=flags & RCODE_MASK,
        questions=tuple(map(DnsQuestion._make, questions)),
        answers=tuple(DnsAnswer(name, rtype, ttl, value if isinstance(value, str)
                                else str(ipaddress.ip_address(value)))
                      for name, rtype, ttl, value in answers),
    )


def _read_question(data: bytes, offset: int) -> tuple[DnsQuestion, int]:
    name, offset = _read_name(data, offset)
    qtype, _ = _unpack(QUESTION_TAIL, data, offset)
    return DnsQuestion(name, qtype), offset + QUESTION_TAIL.size


def _read_record(data: bytes, offset: int) -> tuple[DnsAnswer | None, int]:
    name, offset = _read_name(data, offset)
    rtype, _, ttl, rdlength = _unpack(RR_TAIL, data, offset)
    start = offset + RR_TAIL.size
    end = start + rdlength
    if end > len(data):
        raise DecodeError(f"DNS: record data of {name!r} runs past the message end")
    value = _record_value(data, rtype, start, end)
    return (DnsAnswer(name, rtype, ttl, value) if value is not None else None), end


def _record_value(data: bytes, rtype: int, start: int, end: int) -> str | None:
    if rtype in ADDRESS_LENGTHS:
        if end - start != ADDRESS_LENGTHS[RRType(rtype)]:
            raise DecodeError(f"DNS: type {rtype} record with {end - start}-byte address")
        if rtype == RRType.A:  # (inet_ntop's dotted quad is ipaddress's, ten times faster)
            return socket.inet_ntop(socket.AF_INET, data[start:end])
        return str(ipaddress.ip_address(data[start:end]))
    if rtype in (RRType.CNAME, RRType.PTR):
        name, name_end = _read_name(data, start)
        if name_end > end:
            raise DecodeError("DNS: name in record data runs past RDLENGTH")
        return name
    return None


def _unpack(layout: struct.Struct, data: bytes, offset: int) -> tuple[int, ...]:
    if offset + layout.size > len(data):
        raise DecodeError("DNS: message truncated")
    return layout.unpack_from(data, offset)


def _read_name(data: bytes, offset: int) -> tuple[str, int]:
    """Read a possibly compressed name at `offset`; return it and the offset after it.

    The root name is returned as "" and other names without the trailing dot.
    """
    labels: list[bytes] = []
    end: int | None = None  # where the name ends in the original position
    length, hops = 0, 0
    while True:
        if offset >= len(data):
            raise DecodeError("DNS: name runs past the message end")
        tag = data[offset]
        if tag & POINTER_TAG == POINTER_TAG:
            offset, end, hops = _follow_pointer(data, offset, end, hops)
            continue
        if tag & POINTER_TAG:
            raise DecodeError(f"DNS: reserved label type 0x{tag:02x}")
        if tag == 0:
            return _join_labels(labels), end if end is not None else offset + 1
        labels.append(data[offset + 1 : offset + 1 + tag])
        length += tag + 1
        if length > MAX_NAME_LENGTH or len(labels[-1]) < tag:
            raise DecodeError("DNS: name too long or truncated")
        offset += tag + 1


def _follow_pointer(data: bytes, offset: int, end: int | None, hops: int) -> tuple[int, int, int]:
    if offset + 2 > len(data):
        raise DecodeError("DNS: truncated compression pointer")
    target = int.from_bytes(data[offset : offset + 2], "big") & 0x3FFF
    if target >= offset or hops >= MAX_POINTER_HOPS:
        raise DecodeError("DNS: compression pointer loops or points forward")
    return target, end if end is not None else offset + 2, hops + 1


def _join_labels(labels: list[bytes]) -> str:
    # (one decode: '.' is ASCII, so no bad sequence spans it, and each label reads as alone)
    return b".".join(labels).decode("utf-8", errors="replace")


def split_dns_tcp(data: bytes) -> tuple[tuple[bytes, ...], bytes]:
    """Cut a DNS-over-TCP byte stream into messages: (complete messages, leftover bytes).

    Each message is preceded by its 2-byte length (RFC 1035 §4.2.2); feed the leftover back
    in front of the next segment.
    """
    messages, offset = [], 0
    while offset + TCP_LENGTH.size <= len(data):
        (length,) = TCP_LENGTH.unpack_from(data, offset)
        end = offset + TCP_LENGTH.size + length
        if end > len(data):
            break
        messages.append(data[offset + TCP_LENGTH.size : end])
        offset = end
    return tuple(messages), data[offset:]


def address_names(msg: DnsMessage) -> dict[str, tuple[str, ...]]:
    """For each A/AAAA answer address, the names leading to it: queried name first.

    The chain is followed backwards from the record's owner through the CNAME answers,
    e.g. {'52.81.151.250': ('zoom.us', 'zoomcn.zoom.us')}. Names are lowercased.
    """
    alias_of = {_norm(a.value): _norm(a.name) for a in msg.answers if a.rtype == RRType.CNAME}
    result: dict[str, tuple[str, ...]] = {}
    for answer in msg.answers:
        if answer.rtype in ADDRESS_LENGTHS:
            chain = _chain_to(_norm(answer.name), alias_of)
            known = result.get(answer.value, ())
            result[answer.value] = known + tuple(n for n in chain if n not in known)
    return result


def _chain_to(owner: str, alias_of: dict[str, str]) -> tuple[str, ...]:
    chain = [owner]
    while (source := alias_of.get(chain[-1])) is not None and source not in chain:
        chain.append(source)
    return tuple(reversed(chain))


def _norm(name: str) -> str:
    return name.lower().rstrip(".")
