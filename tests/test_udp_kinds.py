"""The slow path's choice of UDP payloads (`analyzer.inspector._udp_kinds`) against its
definition, written here the plain way: every rule on every payload, later rules winning."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.decode.demux import Demux, classify
from analyzer.inspector import (
    DNS_PORTS,
    KIND_DNS,
    KIND_DTLS,
    KIND_QUIC,
    KIND_SIP,
    KIND_STUN,
    KIND_ZRTP,
    QUIC_MIN_INITIAL,
    SIP_PORTS,
    SIP_PREFIXES,
    _udp_kinds,
)
from analyzer.packets import Gather

PORTS = st.sampled_from([53, 5353, 5355, 5060, 5061, 5080, 3478, 443, 8801, 40000, 65535])
FIRST_BYTES = st.sampled_from([0, 1, 3, 16, 19, 20, 23, 31, 40, 64, 0x41, 0x49, 0x53, 0x55,
                               0x80, 0x90, 0xBF, 0xC0, 0xFF])


def reference_kind(payload: bytes, sport: int, dport: int) -> int:
    first, size = payload[0], len(payload)
    demux = classify(first)
    ports = {sport, dport}
    sip_like = (ord("A") <= first <= ord("U") and size >= 12
                and int.from_bytes(payload[:4], "big") in SIP_PREFIXES.tolist())
    kind = KIND_SIP if sip_like else 0
    if first >= 0xC0 and size >= QUIC_MIN_INITIAL:
        kind = KIND_QUIC
    if demux == Demux.ZRTP and size >= 8:
        kind = KIND_ZRTP
    if demux == Demux.DTLS and (20 <= first <= 23 or first == 0x1F) and size >= 13:
        kind = KIND_DTLS
    if demux == Demux.STUN and size >= 8:
        kind = KIND_STUN
    if sip_like and ports & set(SIP_PORTS):
        kind = KIND_SIP
    if ports & set(DNS_PORTS):
        kind = KIND_DNS
    return kind


payloads = st.lists(st.tuples(
    st.one_of(st.tuples(FIRST_BYTES, st.binary(min_size=0, max_size=40)).map(
        lambda t: bytes([t[0]]) + t[1]),
        st.sampled_from([b"INVITE sip:a@b SIP/2.0", b"SIP/2.0 200 OK\r\n", b"REGISTER sip:x",
                         b"OPTIONS sip:y SIP/2.0"]),
        st.integers(min_value=0xC0, max_value=0xFF).map(lambda b: bytes([b]) + bytes(1100))),
    PORTS, PORTS), min_size=1, max_size=40)


@settings(max_examples=300, deadline=None)
@given(payloads)
def test_udp_kinds_follow_their_definition(rows: list[tuple[bytes, int, int]]) -> None:
    buffer = b"".join(p for p, _, _ in rows) + bytes(16)  # (gathers may read past the end)
    at = np.cumsum([0] + [len(p) for p, _, _ in rows[:-1]]).astype(np.int64)
    kinds = _udp_kinds(Gather(np.frombuffer(buffer, np.uint8)), at,
                       np.array([len(p) for p, _, _ in rows], np.int64),
                       np.array([s for _, s, _ in rows], np.int32),
                       np.array([d for _, _, d in rows], np.int32))
    assert kinds.tolist() == [reference_kind(p, s, d) for p, s, d in rows]
