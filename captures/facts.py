"""Manifest facts computed from the frames a scenario generated (true by construction)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from captures.netsim import Capture, Endpoint, FlowSpec, Frame, RtpFact
from captures.pcapio import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL

LINKTYPE_NAMES = {LINKTYPE_ETHERNET: "EN10MB (Ethernet)", LINKTYPE_LINUX_SLL: "LINUX_SLL"}


@dataclass
class KeyFact:
    """A thing a reader must be able to find, with the frames that show it."""

    fact_id: str
    text: str
    frames: list[int] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.fact_id, "text": self.text, "frames": self.frames}
        if self.data:
            out["data"] = self.data
        return out


def frames_with_tag(cap: Capture, tag: str) -> list[int]:
    """1-based frame numbers (Wireshark numbering) of frames carrying the tag."""
    return [n for n, f in enumerate(cap.ordered(), start=1) if tag in f.meta.tags]


def frame_list(numbers: Sequence[int]) -> str:
    return ", ".join(str(n) for n in numbers)


def _flow_json(spec: FlowSpec, frames: list[tuple[int, Frame]]) -> dict[str, Any]:
    protocols = set().union(*(f.meta.protocols for _, f in frames))
    media = {f.meta.media for _, f in frames if f.meta.media}
    out: dict[str, Any] = {
        "transport": spec.transport,
        "client": str(spec.client),
        "server": str(spec.server),
        "service": spec.service,
        "protocols": sorted(protocols),
        "media": sorted(media),
        "server_name": spec.server_name,
        "packets_c2s": sum(1 for _, f in frames if f.meta.c2s),
        "packets_s2c": sum(1 for _, f in frames if not f.meta.c2s),
        "first_frame": frames[0][0],
    }
    if spec.p2p:
        out["p2p"] = True
    return out


def flow_facts(cap: Capture) -> list[dict[str, Any]]:
    grouped: dict[int, tuple[FlowSpec, list[tuple[int, Frame]]]] = {}
    for number, frame in enumerate(cap.ordered(), start=1):
        spec = frame.meta.flow
        grouped.setdefault(id(spec), (spec, []))[1].append((number, frame))
    return [_flow_json(spec, frames) for spec, frames in grouped.values()]


def _extend(seqs: Iterable[int]) -> list[int]:
    """Sequence numbers extended past 16-bit wraps, in arrival order (RFC 3550 A.1 idea)."""
    extended: list[int] = []
    for seq in seqs:
        if not extended:
            extended.append(seq)
            continue
        top = max(extended)
        base = top - (top & 0xFFFF)
        candidates = (base - 0x10000 + seq, base + seq, base + 0x10000 + seq)
        extended.append(min(candidates, key=lambda c: abs(c - top)))
    return extended


def lost_count(seqs: Sequence[int]) -> int:
    """Expected minus received, as RFC 3550 and Wireshark's RTP stream analysis count it."""
    ext = _extend(seqs)
    return (max(ext) - min(ext) + 1) - len(ext)


def _stream_json(key: tuple[Endpoint, Endpoint, int], facts: list[RtpFact]) -> dict[str, Any]:
    first = facts[0]
    return {
        "src": str(key[0]),
        "dst": str(key[1]),
        "ssrc": f"0x{key[2]:08x}",
        "payload_type": first.payload_type,
        "media": first.media,
        "packets": len(facts),
        "lost": lost_count([f.seq for f in facts]),
        "clock_rate": first.clock_rate,
        "encrypted": first.encrypted,
    }


def stream_facts(cap: Capture) -> list[dict[str, Any]]:
    grouped: dict[tuple[Endpoint, Endpoint, int], list[RtpFact]] = {}
    for frame in cap.ordered():
        rtp = frame.meta.rtp
        if rtp is not None:
            grouped.setdefault((rtp.src, rtp.dst, rtp.ssrc), []).append(rtp)
    return [_stream_json(key, facts) for key, facts in grouped.items()]


def manifest_entry(cap: Capture, description: str, dns: dict[str, list[str]],
                   key_facts: Sequence[KeyFact]) -> dict[str, Any]:
    return {
        "description": description,
        "link_types": [LINKTYPE_NAMES[i.linktype] for i in cap.interfaces],
        "packet_count": len(cap.frames),
        "flows": flow_facts(cap),
        "streams": stream_facts(cap),
        "dns": dns,
        "key_facts": [k.as_json() for k in key_facts],
    }


def flow_frames_with_tag(cap: Capture, spec: FlowSpec, tag: str) -> list[int]:
    """Frame numbers of one flow's frames carrying the tag."""
    return [n for n, f in enumerate(cap.ordered(), start=1)
            if f.meta.flow is spec and tag in f.meta.tags]


def first_frame_of(cap: Capture, spec: FlowSpec) -> int:
    """Frame number of the first frame of a flow."""
    return next(n for n, f in enumerate(cap.ordered(), start=1) if f.meta.flow is spec)
