"""Control-plane timelines: generators that yield one session's Events in time order.

Each generator covers one conversation (ICE checks and consent, a DTLS handshake, a TLS/TCP
connection, RTCP reports, SIP, TURN allocation) and is pulled lazily, window by window.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from bench import handshakes as hs
from bench.batch import Event
from bench.media import ReportBlock, receiver_report, sdes_cname, sender_report
from bench.streams import StreamSpec
from bench.wire import TCP_ACK_FLAG, TCP_FIN, TCP_PSH, TCP_SYN, Endpoint

MS = 1_000_000
SECOND = 1_000_000_000
TCP_MSS = 1448


class Label(IntEnum):
    """Packet kinds counted in the capture's mix."""

    RTP_AUDIO = 0
    RTP_VIDEO = 1
    RTCP = 2
    SRTP_AUDIO = 3
    SRTP_VIDEO = 4
    SRTCP = 5
    STUN = 6
    DTLS = 7
    ZOOM_AUDIO = 8
    ZOOM_VIDEO = 9
    ZOOM_RTCP = 10
    TURN_CHANNELDATA = 11
    TURN_STUN = 12
    TLS = 13
    TCP = 14
    SIP = 15

    @property
    def text(self) -> str:
        return self.name.lower().replace("_", "-")


class Clock:
    """Random helpers shared by the timelines (one generator for the whole capture)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def bytes(self, n: int) -> bytes:
        return self.rng.bytes(n)

    def ns(self, lo_ms: float, hi_ms: float) -> int:
        return int(self.rng.uniform(lo_ms, hi_ms) * MS)

    def integer(self, lo: int, hi: int) -> int:
        """Uniform in [lo, hi]."""
        return int(self.rng.integers(lo, hi + 1))

    def u32(self) -> int:
        return int(self.rng.integers(0, 1 << 32))


@dataclass(frozen=True, slots=True)
class Leg:
    """Both directions of one flow: event templates and endpoints."""

    up: int  # template, client -> server
    down: int  # template, server -> client
    client: Endpoint
    server: Endpoint
    rtt_ns: int

    def send(self, t: int, upward: bool, label: Label, payload: bytes) -> Event:
        return Event(t, self.up if upward else self.down, label, payload)


def ordered(events: list[Event]) -> Iterator[Event]:
    yield from sorted(events, key=lambda e: e.time_ns)


# --- ICE -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IceCredentials:
    client_ufrag: str
    server_ufrag: str
    client_pwd: bytes
    server_pwd: bytes
    tie_breaker: int


def ice_credentials(clock: Clock) -> IceCredentials:
    def token(n: int) -> str:
        return clock.bytes(n).hex()[:n]

    return IceCredentials(
        token(4), token(8), token(24).encode(), token(24).encode(), clock.u32() << 32
    )


def ice_round(clock: Clock, leg: Leg, t: int, cred: IceCredentials, both: bool) -> list[Event]:
    """A Binding request from the client (and, for full ICE, from the server) with responses."""
    def check(t: int, from_client: bool) -> list[Event]:
        txid = clock.bytes(12)
        user = f"{cred.server_ufrag}:{cred.client_ufrag}"
        key, requester = cred.server_pwd, leg.client
        if not from_client:
            user = f"{cred.client_ufrag}:{cred.server_ufrag}"
            key, requester = cred.client_pwd, leg.server
        request = hs.ice_check(txid, user, key, 1853824767, cred.tie_breaker, from_client)
        response = hs.binding_success(txid, requester.ip, requester.port, key)
        return [leg.send(t, from_client, Label.STUN, request),
                leg.send(t + leg.rtt_ns, not from_client, Label.STUN, response)]

    events = check(t, True)
    if both:
        events += check(t + clock.ns(5, 40), False)
    return events


def ice_timeline(
    clock: Clock, leg: Leg, start: int, end: int, fresh: bool, full_ice: bool
) -> Iterator[Event]:
    """Connectivity checks at setup (if seen), then consent checks every 5 s +-20 % (RFC 7675)."""
    cred = ice_credentials(clock)
    t = start + clock.ns(50, 100)
    if fresh:
        for _ in range(2):
            yield from ordered(ice_round(clock, leg, t, cred, full_ice))
            t += 2 * leg.rtt_ns + clock.ns(50, 60)
    else:
        t = start + clock.ns(0, 5000)
    while t < end:
        yield from ordered(ice_round(clock, leg, t, cred, full_ice))
        t += clock.ns(4000, 6000)


# --- DTLS ----------------------------------------------------------------------------------


def dtls_timeline(clock: Clock, leg: Leg, t: int) -> Iterator[Event]:
    """DTLS-SRTP handshake, the client being the DTLS client; the server picks AES128_CM_SHA1_80
    (10-byte SRTP tag)."""
    rand = clock.bytes
    rtt = leg.rtt_ns
    yield leg.send(t, True, Label.DTLS, hs.dtls_client_hello(rand))
    yield leg.send(t + rtt, False, Label.DTLS,
                   hs.dtls_server_flight(hs.SRTP_AES128_CM_SHA1_80, rand))
    yield leg.send(t + rtt + 3 * MS, True, Label.DTLS, hs.dtls_client_finish(rand))
    yield leg.send(t + 2 * rtt + 3 * MS, False, Label.DTLS,
                   hs.dtls_change_cipher_and_finished(5, rand))


# --- TLS over TCP --------------------------------------------------------------------------


class TcpConnection:
    """Sequence-number bookkeeping of one TCP connection, building segment Events."""

    def __init__(self, clock: Clock, leg: Leg) -> None:
        self.leg = leg
        self.next_seq = {True: clock.u32(), False: clock.u32()}  # by direction: upward?

    def segment(self, t: int, upward: bool, flags: int, data: bytes = b"") -> Event:
        ack = self.next_seq[not upward] if flags & TCP_ACK_FLAG else 0
        tpl = self.leg.up if upward else self.leg.down
        label = Label.TLS if data else Label.TCP
        event = Event(t, tpl, label, data, self.next_seq[upward], ack, flags)
        self.next_seq[upward] += len(data) + (1 if flags & (TCP_SYN | TCP_FIN) else 0)
        return event

    def send(self, t: int, upward: bool, data: bytes) -> Iterator[Event]:
        """`data` cut into MSS-sized segments, 20 us apart."""
        for i in range(0, len(data), TCP_MSS):
            yield self.segment(t + i // TCP_MSS * 20_000, upward, TCP_PSH | TCP_ACK_FLAG,
                               data[i : i + TCP_MSS])


def tls_handshake(clock: Clock, tcp: TcpConnection, t: int, sni: str,
                  tls12: bool) -> Iterator[Event]:
    rtt, rand = tcp.leg.rtt_ns, clock.bytes
    ack = TCP_ACK_FLAG
    yield tcp.segment(t, True, TCP_SYN)
    yield tcp.segment(t + rtt, False, TCP_SYN | ack)
    yield tcp.segment(t + rtt + MS // 10, True, ack)
    yield from tcp.send(t + rtt + MS // 5, True, hs.tls_client_hello(sni, rand))
    t += 2 * rtt + MS
    session_id = rand(32)
    if tls12:
        yield from tcp.send(t, False, hs.tls12_server_flight(session_id, sni, rand))
        yield from tcp.send(t + MS, True, hs.tls12_client_finish(rand))
        yield from tcp.send(t + rtt + 2 * MS, False, hs.change_cipher_and_finished(rand))
    else:
        yield from tcp.send(t, False, hs.tls13_server_flight(session_id, 2500, rand))
        yield from tcp.send(t + MS, True, hs.change_cipher_and_finished(rand))


def tls_timeline(
    clock: Clock, leg: Leg, start: int, end: int, fresh: bool, sni: str, tls12: bool
) -> Iterator[Event]:
    """Handshake (if seen), request/response exchanges every 0.3-3 s, FIN exchange at the end."""
    tcp = TcpConnection(clock, leg)
    t = start + clock.ns(0, 2000)
    if fresh:
        yield from tls_handshake(clock, tcp, start, sni, tls12)
        t = start + 3 * leg.rtt_ns + 10 * MS
    while t < end:
        yield from tcp.send(t, True, hs.application_data(clock.integer(80, 700), clock.bytes))
        response = hs.application_data(clock.integer(60, 3000), clock.bytes)
        yield from tcp.send(t + leg.rtt_ns, False, response)
        yield tcp.segment(t + leg.rtt_ns + MS, True, TCP_ACK_FLAG)
        t += clock.ns(300, 3000)
    yield tcp.segment(t, True, TCP_FIN | TCP_ACK_FLAG)
    yield tcp.segment(t + leg.rtt_ns, False, TCP_FIN | TCP_ACK_FLAG)
    yield tcp.segment(t + leg.rtt_ns + MS // 10, True, TCP_ACK_FLAG)


# --- RTCP ----------------------------------------------------------------------------------

Wrap = Callable[[bytes, int], bytes]  # compound RTCP, report index -> UDP payload


def rtp_state(spec: StreamSpec, t: int) -> tuple[int, int, int]:
    """Estimated (packets sent, RTP timestamp, highest seq) of a stream at time t."""
    frames = max(0, (t - spec.next_ns) // spec.interval_ns)
    packets = int(frames * spec.mean_pkts)
    rtp_ts = spec.ts0 + (spec.frame + frames) * spec.ts_step
    return spec.pkt_no + packets, rtp_ts, spec.seq + packets


def rtcp_report(clock: Clock, epoch_ns: int, t: int, sender: StreamSpec | None,
                reporter_ssrc: int, peer: StreamSpec, peer_ssrc: int, cname: str) -> bytes:
    """SR (or RR when this side sends no media) with one report block, plus SDES CNAME."""
    _, _, highest = rtp_state(peer, t)
    block = ReportBlock(peer_ssrc, clock.integer(0, 3), clock.integer(0, 30),
                        highest & 0xFFFFFFFF, clock.integer(5, 400), 0, 0)
    if sender is None:
        report = receiver_report(reporter_ssrc, [block])
    else:
        packets, ts, _ = rtp_state(sender, t)
        octets = packets * (sender.len_lo + sender.len_hi) // 2
        report = sender_report(reporter_ssrc, epoch_ns + t, ts, packets & 0xFFFFFFFF,
                               octets & 0xFFFFFFFF, [block])
    return report + sdes_cname(reporter_ssrc, cname)


@dataclass(frozen=True, slots=True)
class RtcpSide:
    """What one side of an RTP session reports about: its own stream (None: receive only)
    and the stream it receives."""

    tpl: int
    label: Label
    own: StreamSpec | None
    own_ssrc: int
    peer: StreamSpec
    peer_ssrc: int
    cname: str


def rtcp_timeline(clock: Clock, side: RtcpSide, period_ms: float, end: int, epoch_ns: int,
                  wrap: Wrap) -> Iterator[Event]:
    """Reports every period_ms +-20 %, starting at a random phase once media flows."""
    t = side.peer.next_ns + clock.ns(0, period_ms)
    index = 0
    while t < end:
        compound = rtcp_report(clock, epoch_ns, t, side.own, side.own_ssrc, side.peer,
                               side.peer_ssrc, side.cname)
        yield Event(t, side.tpl, side.label, wrap(compound, index))
        index += 1
        t += clock.ns(0.8 * period_ms, 1.2 * period_ms)


# --- SIP and TURN --------------------------------------------------------------------------


class SipDialog:
    """The headers of one call's SIP messages (UDP, caller = the client)."""

    def __init__(self, clock: Clock, leg: Leg) -> None:
        self.clock, self.leg = clock, leg
        self.call_id = f"{clock.bytes(8).hex()}@{leg.client.ip}"
        self.uri = f"sip:+1555{clock.integer(1000000, 9999999)}@{leg.server.ip}"
        self.tags = (clock.bytes(4).hex(), clock.bytes(4).hex())

    def message(self, line: str, method: str, cseq: int, body: str = "") -> bytes:
        client = self.leg.client
        branch = f"z9hG4bK{self.clock.bytes(5).hex()}"
        headers = [
            ("Via", f"SIP/2.0/UDP {client.ip}:{client.port};branch={branch}"),
            ("From", f"<sip:alice@{client.ip}>;tag={self.tags[0]}"),
            ("To", f"<{self.uri}>;tag={self.tags[1]}"),
            ("Call-ID", self.call_id), ("CSeq", f"{cseq} {method}"),
            ("User-Agent", "bench-phone/1.0"),
        ]
        return hs.sip_message(line, headers, body)

    def request(self, t: int, method: str, cseq: int, body: str = "") -> Event:
        payload = self.message(f"{method} {self.uri} SIP/2.0", method, cseq, body)
        return self.leg.send(t, True, Label.SIP, payload)

    def response(self, t: int, status: str, method: str, cseq: int, body: str = "") -> Event:
        payload = self.message(f"SIP/2.0 {status}", method, cseq, body)
        return self.leg.send(t, False, Label.SIP, payload)


def sip_timeline(clock: Clock, leg: Leg, start: int, end: int, fresh: bool,
                 offer: str, answer: str) -> Iterator[Event]:
    """INVITE / 100 / 180 / 200 / ACK at setup (if seen), BYE / 200 at the end."""
    dialog, rtt = SipDialog(clock, leg), leg.rtt_ns
    if fresh:
        yield dialog.request(start, "INVITE", 1, offer)
        yield dialog.response(start + rtt, "100 Trying", "INVITE", 1)
        yield dialog.response(start + 300 * MS, "180 Ringing", "INVITE", 1)
        yield dialog.response(start + 1500 * MS, "200 OK", "INVITE", 1, answer)
        yield dialog.request(start + 1500 * MS + rtt, "ACK", 1)
    yield dialog.request(end, "BYE", 2)
    yield dialog.response(end + rtt, "200 OK", "BYE", 2)


def turn_setup(clock: Clock, leg: Leg, t: int, channel: int, relayed: Endpoint,
               peer: Endpoint) -> Iterator[Event]:
    """Allocate and ChannelBind transactions (unauthenticated, for brevity)."""
    rtt = leg.rtt_ns
    txid = clock.bytes(12)
    yield leg.send(t, True, Label.TURN_STUN, hs.allocate_request(txid))
    mapped = (leg.client.ip, leg.client.port)
    success = hs.allocate_success(txid, (relayed.ip, relayed.port), mapped)
    yield leg.send(t + rtt, False, Label.TURN_STUN, success)
    txid = clock.bytes(12)
    bind = hs.channel_bind_request(txid, channel, (peer.ip, peer.port))
    yield leg.send(t + rtt + 2 * MS, True, Label.TURN_STUN, bind)
    yield leg.send(t + 2 * rtt + 2 * MS, False, Label.TURN_STUN, hs.channel_bind_success(txid))


def channel_data_wrap(channel: int) -> Callable[[bytes], bytes]:
    def wrap(payload: bytes) -> bytes:
        return struct.pack(">HH", channel, len(payload)) + payload

    return wrap
