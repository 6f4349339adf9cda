"""Standard RTP/RTCP streams on a UDP flow: plain, SRTP-protected, or wrapped (e.g. TURN)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from captures import wire
from captures.media import MediaPacket, PathModel, ReceiverStats, RtpStream, arrivals
from captures.netsim import Endpoint, RtpFact, UdpFlow
from captures.srtp import SrtpSession

Received = list[tuple[int, MediaPacket]]
PayloadFn = Callable[[MediaPacket], bytes]
ExtensionFn = Callable[[MediaPacket], bytes]


def _identity(data: bytes, send_us: int) -> bytes:
    return data


@dataclass
class MediaChannel:
    """One direction of a media flow: how packets are protected, wrapped and labelled."""

    flow: UdpFlow
    c2s: bool
    srtp: SrtpSession | None = None
    wrap: Callable[[bytes, int], bytes] = _identity  # (packet, send time) -> datagram
    extra_protocols: frozenset[str] = frozenset()
    delay_us: int = 0  # one-way delay to the capture point for RTCP
    sent_rtcp: int = field(default=0)

    @property
    def rtp_protocols(self) -> frozenset[str]:
        return self.extra_protocols | {"srtp" if self.srtp else "rtp"}

    @property
    def rtcp_protocols(self) -> frozenset[str]:
        return self.extra_protocols | {"srtcp" if self.srtp else "rtcp"}

    def endpoints(self) -> tuple[Endpoint, Endpoint]:
        spec = self.flow.spec
        return (spec.client, spec.server) if self.c2s else (spec.server, spec.client)


def send_rtp(chan: MediaChannel, stream: RtpStream, packets: list[MediaPacket], net: PathModel,
             payload_fn: PayloadFn, ext_fn: ExtensionFn | None = None,
             tags_fn: Callable[[MediaPacket], frozenset[str]] | None = None) -> Received:
    """Emit a stream at its arrival times; returns what reached the capture point."""
    src, dst = chan.endpoints()
    received = arrivals(chan.flow.cap.rng, packets, net)
    for arrival, pkt in received:
        ext = ext_fn(pkt) if ext_fn else b""
        rtp = wire.rtp_header(stream.payload_type, pkt.seq, pkt.ts, stream.ssrc, pkt.marker, ext)
        rtp += payload_fn(pkt)
        if chan.srtp:
            rtp = chan.srtp.protect_rtp(rtp)
        encrypted = chan.srtp is not None and chan.srtp.profile.value.encrypts
        fact = RtpFact(src, dst, stream.ssrc, stream.payload_type, pkt.seq, stream.media,
                       stream.clock_rate, encrypted)
        tags = tags_fn(pkt) if tags_fn else frozenset()
        chan.flow.send(arrival, chan.c2s, chan.wrap(rtp, pkt.send_us), chan.rtp_protocols,
                       stream.media, fact, tags)
    return received


def receiver_report(stats_source: Received, clock_rate: int, upto_us: int, ssrc: int
                    ) -> wire.ReportBlock | None:
    stats = ReceiverStats(clock_rate)
    for arrival, pkt in sorted(stats_source, key=lambda a: a[0]):
        if arrival < upto_us:
            stats.update(arrival, pkt.seq, pkt.ts)
    return stats.report(ssrc) if stats.received else None


@dataclass(frozen=True, slots=True)
class RtcpPlan:
    """What one side reports on: its own stream, and the remote stream it receives."""

    stream: RtpStream
    sent: list[MediaPacket]
    cname: str
    remote: RtpStream | None = None
    remote_received: Received | None = None
    payload_overhead: int = 0


def sender_report(plan: RtcpPlan, report_us: int) -> bytes:
    sent = [p for p in plan.sent if p.send_us < report_us]
    rtp_ts = plan.stream.ts0 + (report_us - plan.sent[0].send_us) * plan.stream.clock_rate // (
        1_000_000)
    blocks = []
    if plan.remote and plan.remote_received:
        block = receiver_report(plan.remote_received, plan.remote.clock_rate, report_us,
                                plan.remote.ssrc)
        blocks = [block] if block else []
    octets = sum(p.size + plan.payload_overhead for p in sent)
    sr = wire.rtcp_sr(plan.stream.ssrc, report_us, rtp_ts, len(sent), octets, blocks)
    return sr + wire.rtcp_sdes(plan.stream.ssrc, plan.cname)


def send_rtcp(chan: MediaChannel, times: Sequence[int], plan: RtcpPlan,
              tags: frozenset[str] = frozenset(), bye_at: int | None = None) -> None:
    """Compound SR(+RR block)+SDES at each time; a BYE compound at bye_at if given."""
    for t in times:
        _emit_rtcp(chan, t, sender_report(plan, t), tags)
    if bye_at is not None:
        _emit_rtcp(chan, bye_at, sender_report(plan, bye_at) + wire.rtcp_bye(plan.stream.ssrc),
                   tags | {"rtcp-bye"})


def _emit_rtcp(chan: MediaChannel, t: int, compound: bytes, tags: frozenset[str]) -> None:
    data = chan.srtp.protect_rtcp(compound) if chan.srtp else compound
    chan.flow.send(t + chan.delay_us, chan.c2s, chan.wrap(data, t), chan.rtcp_protocols, tags=tags)


def report_times(rng: random.Random, start_us: int, end_us: int, mean_us: int) -> list[int]:
    """RTCP intervals randomised to [0.5, 1.5] x mean, as RFC 3550 6.3.1 does."""
    times: list[int] = []
    t = start_us
    while True:
        t += int(mean_us * (0.5 + rng.random()))
        if t >= end_us:
            return times
        times.append(t)
