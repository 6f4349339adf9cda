"""What the slow path learns about flows and about the capture as a whole.

Plain records, filled by `analyzer.inspector` and read by the assessment stages; nothing here
parses bytes.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

# Strength of a piece of service evidence, strongest first (the order).
SIGNATURE, NAME, ADDRESS_RANGE, LEARNED, PORT = 5, 4, 3, 2, 1
STRENGTH_WORDS = {SIGNATURE: "signature", NAME: "name", ADDRESS_RANGE: "address range",
                  LEARNED: "learned from signalling", PORT: "port"}
FEW_NAMES = 8  # names kept in a tuple and searched, before a list with an index
MAX_DAMAGE_NOTES = 5  # malformed messages described per flow; the rest are counted

Endpoint = tuple[str, int]  # (address text, port)
_PROTOCOL_SETS: dict[frozenset[str], frozenset[str]] = {}  # each combination seen, once


@dataclass(frozen=True, slots=True)
class Evidence:
    strength: int
    service: str
    text: str
    frame: int = 0


@dataclass(frozen=True, slots=True)
class RttSample:
    """A request/response pair seen in the capture: a lower bound on the path's round trip."""

    kind: str  # 'tcp-handshake' | 'tls-hello' | 'dtls-hello' | 'stun' | 'zoom-handshake'
    rtt_ms: float
    request_frame: int
    response_frame: int


@dataclass(slots=True)
class HandshakeFacts:
    """TLS, DTLS or QUIC handshake parameters seen on a flow."""

    protocol: str  # 'tls' | 'dtls' | 'quic'
    client_hello_frame: int = 0
    server_hello_frame: int = 0
    sni: str = ""
    offered_versions: tuple[int, ...] = ()
    alpn: tuple[str, ...] = ()
    offered_suites: tuple[int, ...] = ()
    version: int = 0  # negotiated
    cipher_suite: int = -1  # negotiated
    srtp_offered: tuple[int, ...] = ()
    srtp_profile: int = -1  # negotiated use_srtp profile
    certificate_subjects: list[str] = field(default_factory=list)
    certificate_fingerprints: list[str] = field(default_factory=list)
    certificate_names: list[str] = field(default_factory=list)  # server's CN and DNS SANs
    client_certificate_subjects: list[str] = field(default_factory=list)
    client_certificate_fingerprints: list[str] = field(default_factory=list)
    ech: bool = False
    encrypted_seen: bool = False


@dataclass(slots=True)
class StunFacts:
    messages: int = 0
    turn: bool = False
    classic: bool = False
    software: set[str] = field(default_factory=set)
    realm: set[str] = field(default_factory=set)
    mapped: set[Endpoint] = field(default_factory=set)  # our reflexive addresses
    relayed: set[Endpoint] = field(default_factory=set)
    peers: set[Endpoint] = field(default_factory=set)
    channels: set[int] = field(default_factory=set)
    request_directions: set[int] = field(default_factory=set)  # 0/1: who sent Binding requests


@dataclass(slots=True)
class FlowFacts:
    """Everything the slow path has found on one flow (index = FlowTable index)."""

    # (one shared frozen set per distinct combination: a capture's flows have a handful of
    # them, and a set of each flow's own costs 216 bytes; see `add_protocol`)
    protocols: frozenset[str] = frozenset()
    # (tuples, replaced when they grow, like the frozen sets below: most flows have none, and
    # four empty lists cost 224 bytes and a quarter of a flow's start-up time)
    evidence: tuple[Evidence, ...] = ()
    # (name, source, frame): a tuple while there are few, then a list with an index (a DNS
    # flow between resolvers may carry a million distinct names)
    names: tuple[tuple[str, str, int], ...] | list[tuple[str, str, int]] = ()
    _name_index: set[tuple[str, str]] | None = None
    rtt: tuple[RttSample, ...] = ()  # the fastest round trip measured (the first of equals)
    stun: StunFacts | None = None
    tls: HandshakeFacts | None = None
    dtls: HandshakeFacts | None = None
    quic: HandshakeFacts | None = None
    # (frozen, replaced when they grow: an empty set costs 216 bytes on each of a capture's
    # flows, and a capture may have millions, where ZRTP is on a few)
    zrtp_messages: frozenset[str] = frozenset()
    zrtp_directions: frozenset[int] = frozenset()
    zoom_p2p: bool = False
    quic_version: int = 0
    damage: tuple[str, ...] = ()  # malformed messages, the first few
    damage_more: int = 0  # and how many more there were

    def note_damage(self, text: str) -> None:
        """A malformed message of this flow (kept for the flows table; bounded)."""
        if len(self.damage) < MAX_DAMAGE_NOTES:
            self.damage = (*self.damage, text)
        else:
            self.damage_more += 1

    @property
    def both_ends_are_peers(self) -> bool:
        """Both sides act as endpoints: full-ICE checks or ZRTP from each side, or Zoom P2P.

        Servers (TURN relays, ICE-lite SFUs) answer connectivity checks but never send them.
        """
        ice = self.stun is not None and len(self.stun.request_directions) == 2
        return self.zoom_p2p or ice or len(self.zrtp_directions) == 2

    def add_protocol(self, name: str) -> None:
        if name not in self.protocols:
            grown = self.protocols | {name}
            self.protocols = _PROTOCOL_SETS.setdefault(grown, grown)

    def add_evidence(self, strength: int, service: str, text: str, frame: int = 0) -> None:
        if not any(e.service == service and e.text == text for e in self.evidence):
            self.evidence = (*self.evidence, Evidence(strength, service, text, frame))

    def add_name(self, name: str, source: str, frame: int) -> None:
        """Note a name of the flow's server (or one it was asked for), once per source."""
        if not name:
            return
        if self._name_index is None:
            if any(n == name and s == source for n, s, _ in self.names):
                return
            if len(self.names) < FEW_NAMES:
                self.names = (*self.names, (name, source, frame))
                return
            self._name_index = {(n, s) for n, s, _ in self.names}
            self.names = list(self.names)
        if (name, source) not in self._name_index:
            self._name_index.add((name, source))
            assert isinstance(self.names, list)
            self.names.append((name, source, frame))


@dataclass(slots=True)
class SdpMedia:
    """One SDP m= line, indexed by the address and port it announces."""

    call_id: str
    media: str  # audio | video | ...
    proto: str  # RTP/AVP, RTP/SAVP, UDP/TLS/RTP/SAVPF ...
    clock_rates: dict[int, int]  # payload type -> clock rate from a=rtpmap
    encodings: dict[int, str]
    sdes_suites: tuple[str, ...]
    fingerprint: str
    setup: str
    frame: int
    over_tls: bool = False
    offer: bool = False  # carried by a SIP request (the caller's side), else by a response


@dataclass(slots=True)
class CaptureFacts:
    """Capture-wide knowledge that links flows together."""

    dns_names: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # ip -> (name, frame)
    _dns_seen: set[tuple[str, str]] = field(default_factory=set)  # (ip, name) in dns_names
    sdp_media: dict[Endpoint, list[SdpMedia]] = field(default_factory=dict)  # by entry.frame
    # endpoint -> (index of the flow that revealed it, how, frame): for service inheritance
    learned: dict[Endpoint, tuple[int, str, int]] = field(default_factory=dict)
    zoom_stun_clients: dict[Endpoint, float] = field(default_factory=dict)  # -> time (s)
    sip_calls: dict[str, list[int]] = field(default_factory=dict)  # call-id -> frames
    sip_messages: list[dict[str, object]] = field(default_factory=list)
    sdp_log: list[tuple[Endpoint, SdpMedia]] = field(default_factory=list)  # add_sdp's calls

    def add_sdp(self, endpoint: Endpoint, entry: SdpMedia) -> None:
        """Note an m= line announcing `endpoint` (kept in frame order, for `sdp_before`)."""
        bisect.insort_right(self.sdp_media.setdefault(endpoint, []), entry, key=_frame_of)
        self.sdp_log.append((endpoint, entry))

    def sdp_before(self, endpoint: Endpoint, frame: int) -> SdpMedia | None:
        """The last SDP m= line announcing `endpoint` at or before `frame`.

        Only earlier signalling counts, so the answer never depends on how far the reader has
        got (batch size) when it is asked.
        """
        entries = self.sdp_media.get(endpoint, ())  # (in frame order: a bisection; a media
        at = bisect.bisect_right(entries, frame, key=_frame_of)  # port may serve many calls)
        return entries[at - 1] if at else None

    def add_dns(self, address: str, name: str, frame: int) -> None:
        if (address, name) not in self._dns_seen:  # (a CDN address may answer for thousands)
            self._dns_seen.add((address, name))
            self.dns_names.setdefault(address, []).append((name, frame))


def _frame_of(entry: SdpMedia) -> int:
    return entry.frame
