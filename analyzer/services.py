"""Who is the client, who is the server, and which service a flow belongs to, with evidence.

Evidence, strongest first: protocol signatures (Zoom encapsulation, vendor STUN attributes,
DTLS certificate names), names (SNI, DNS answers, certificates), published address ranges,
then a service inherited from the flow that revealed this flow's address (STUN/TURN, SDP), and
last the port.
"""

from __future__ import annotations

import bisect
import ipaddress
import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from analyzer.facts import (
    ADDRESS_RANGE,
    LEARNED,
    NAME,
    PORT,
    SIGNATURE,
    CaptureFacts,
    Evidence,
    FlowFacts,
)
from analyzer.flows import Flow, ipv4_values

# Server-side ports of conferencing and base protocols (protocols.md §1.1, §3).
SERVER_PORTS = frozenset({
    *range(0, 1024), 3478, 3479, 3480, 3481, 5349, 5060, 5061, 5080, *range(8801, 8811),
    *range(19302, 19310), 9000, 10000, 5004, 1853, 1935, 4443, 5228, 8443, 8080,
})
# Port-only guesses, the weakest evidence: (transport, low, high, service, text).
PORT_RULES = (
    ("udp", 8801, 8810, "zoom", "UDP 8801-8810 (Zoom media ports)"),
    ("tcp", 8801, 8802, "zoom", "TCP 8801-8802 (Zoom)"),
    ("udp", 19302, 19309, "google-meet", "UDP 19302-19309 (Google Meet media)"),
    ("udp", 5060, 5061, "sip", "port 5060/5061 (SIP)"),
    ("tcp", 5060, 5061, "sip", "port 5060/5061 (SIP)"),
    ("udp", 9000, 9000, "webex", "UDP 9000 (Webex media)"),
    ("udp", 10000, 10000, "jitsi", "UDP 10000 (Jitsi Videobridge)"),
    ("udp", 3480, 3481, "teams", "UDP 3480-3481 (Teams transport relay)"),
)


@dataclass(frozen=True, slots=True)
class Orientation:
    client_side: int  # 0: endpoint A is the client, 1: endpoint B is
    p2p: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Networks:
    service: str
    source: str
    date: str
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


@lru_cache(maxsize=1)
def service_ranges() -> tuple[Networks, ...]:
    data = json.loads(resources.files("analyzer.data").joinpath("service_ranges.json").read_text())
    return tuple(
        Networks(item["service"], item["source"], item["date"],
                 tuple(ipaddress.ip_network(p) for p in item["prefixes"]))
        for item in data["lists"]
    )


@lru_cache(maxsize=1)
def _name_table() -> tuple[dict[str, list[str]], dict[str, str]]:
    data = json.loads(resources.files("analyzer.data").joinpath("service_names.json").read_text())
    return data["suffixes"], data["certificate_names"]


@dataclass(frozen=True, slots=True)
class Intervals:
    """Disjoint, sorted closed integer intervals [starts[i], ends[i]] (merged networks)."""

    starts: tuple[int, ...]
    ends: tuple[int, ...]

    @staticmethod
    def of(networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> Intervals:
        starts: list[int] = []
        ends: list[int] = []
        for net in sorted(networks, key=lambda n: int(n.network_address)):
            low, high = int(net.network_address), int(net.broadcast_address)
            if ends and low <= ends[-1] + 1:
                ends[-1] = max(ends[-1], high)
            else:
                starts.append(low)
                ends.append(high)
        return Intervals(tuple(starts), tuple(ends))

    def __contains__(self, value: int) -> bool:
        i = bisect.bisect_right(self.starts, value) - 1
        return i >= 0 and value <= self.ends[i]


@lru_cache(maxsize=1)
def _range_index() -> tuple[tuple[Networks, dict[int, Intervals]], ...]:
    """Each service list (in precedence order) with its networks as intervals per IP version."""
    return tuple(
        (entry, {version: Intervals.of(n for n in entry.networks if n.version == version)
                 for version in (4, 6)})
        for entry in service_ranges()
    )


def range_service(address: str) -> Networks | None:
    """The published service range `address` falls in, if any (the first list wins)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    return range_service_of(ip.version, int(ip))


def range_service_of(version: int, value: int) -> Networks | None:
    """`range_service` of an address given as its version and integer value."""
    starts, entries = _first_range_pieces()[version]
    return entries[bisect.bisect_right(starts, value) - 1]


@lru_cache(maxsize=1)
def _first_range_pieces() -> dict[int, tuple[list[int], list[Networks | None]]]:
    """Per IP version, the address line cut wherever a service range begins or ends: the start
    of each piece and the first list (in precedence order) covering it, so that a lookup is
    one bisection however many lists there are."""
    pieces: dict[int, tuple[list[int], list[Networks | None]]] = {}
    for version in (4, 6):
        lists = [(entry, by_version[version]) for entry, by_version in _range_index()]
        edges = {0} | {edge for _, ranges in lists
                       for low, high in zip(ranges.starts, ranges.ends, strict=True)
                       for edge in (low, high + 1)}
        starts = sorted(edges)
        pieces[version] = (starts, [next((entry for entry, ranges in lists if start in ranges),
                                          None) for start in starts])
    return pieces


def flow_range_service(flow: Flow, side: int) -> Networks | None:
    return range_service_of(*flow.address_value(side))


SideRanges = tuple["Networks | None", "Networks | None"]  # `flow_range_service` of sides A, B


def flow_range_services(flows: list[Flow]) -> list[SideRanges]:
    """`flow_range_service` of both sides of every flow: IPv4 addresses in one search."""
    starts, entries = _first_range_pieces()[4]
    found: list[list[Networks | None]] = []
    for side in (0, 1):
        v4, value = ipv4_values([f.b if side else f.a for f in flows])
        piece = np.searchsorted(np.array(starts, np.int64), value.astype(np.int64),
                                side="right") - 1
        column = np.array(entries, dtype=object)[piece].tolist()
        for i in np.flatnonzero(~v4).tolist():
            column[i] = flow_range_service(flows[i], side)
        found.append(column)
    return list(zip(found[0], found[1], strict=True))


@lru_cache(maxsize=1 << 14)  # (names repeat: a DNS answer's name is asked for in every flow)
def name_service(name: str) -> str | None:
    """The service a host name belongs to by its suffix, if any (the first service listed
    with a matching suffix)."""
    labels = name.lower().rstrip(".").split(".")
    ranked = _ranked_suffixes()
    found = [rank for i in range(len(labels))
             if (rank := ranked.get(".".join(labels[i:]))) is not None]
    return min(found)[1] if found else None


@lru_cache(maxsize=1)
def _ranked_suffixes() -> dict[str, tuple[int, str]]:
    """Each name suffix with the first service (by its place in the table) listing it."""
    ranked: dict[str, tuple[int, str]] = {}
    for rank, (service, endings) in enumerate(_name_table()[0].items()):
        for end in endings:
            ranked.setdefault(end, (rank, service))
    return ranked


def certificate_service(name: str) -> str | None:
    return _name_table()[1].get(name.lower())


# ---------------------------------------------------------------------- orientation


def orient(flow: Flow, facts: FlowFacts, capture: CaptureFacts,
           ranges: SideRanges | None = None) -> Orientation:
    """Decide which endpoint is the client (the server offers the service). `ranges`: the
    flow's `flow_range_services`, when made already."""
    if flow.transport == "tcp" and flow.syn_sender >= 0:
        return Orientation(flow.syn_sender, False, "sent the TCP SYN")
    known = [flow.port(s) in SERVER_PORTS for s in (0, 1)]
    if known[0] != known[1]:
        return Orientation(0 if known[1] else 1, False, "other side uses a well-known port")
    ranges = ranges or (flow_range_service(flow, 0), flow_range_service(flow, 1))
    in_range = [ranges[0] is not None, ranges[1] is not None]
    if in_range[0] != in_range[1]:
        return Orientation(0 if in_range[1] else 1, False, "other side is in a service range")
    if known[0] and flow.port(0) != flow.port(1):
        lower = 0 if flow.port(0) < flow.port(1) else 1
        return Orientation(1 - lower, False, "other side uses the lower well-known port")
    caller = _sdp_caller_side(flow, capture)
    if caller is not None:
        return Orientation(caller, facts.both_ends_are_peers, "is the caller (SDP offer)")
    if facts.both_ends_are_peers:
        return Orientation(flow.first_sender, True, "sent the first packet (peer-to-peer)")
    return Orientation(flow.first_sender, False, "sent the first packet")


def _sdp_caller_side(flow: Flow, capture: CaptureFacts) -> int | None:
    """The side announced in a SIP offer when the other side was announced in the answer."""
    if not capture.sdp_media:
        return None
    announced = [next(iter(capture.sdp_media.get((flow.address(s), flow.port(s)), [])), None)
                 for s in (0, 1)]
    if announced[0] is None or announced[1] is None or announced[0].offer == announced[1].offer:
        return None
    return 0 if announced[0].offer else 1


# ---------------------------------------------------------------------- attribution


NOT_SERVER_NAMES = {"dns-query"}  # names the client asked about, not the resolver's own


Name = tuple[str, str, int]  # (name, source, frame)


@dataclass(frozen=True, slots=True)
class ServerNames:
    """A flow's server names: its own (from its handshakes), then the DNS answers for the
    server's address, one tuple shared by all the flows to that address."""

    own: list[Name]
    dns: tuple[Name, ...]

    def __bool__(self) -> bool:
        return bool(self.own or self.dns)

    def __iter__(self) -> Iterator[Name]:
        return itertools.chain(self.own, self.dns)


class AddressNames:
    """Per server address, made once: its DNS names, and the service evidence they give. A
    CDN address may answer for thousands of names and serve thousands of flows: copying them
    into each flow was quadratic (2,000 names and 20,000 flows: 22 s and 3 GB)."""

    def __init__(self, capture: CaptureFacts) -> None:
        self._dns_names = capture.dns_names
        self._names: dict[str, tuple[Name, ...]] = {}
        self._evidence: dict[str, tuple[Evidence, ...]] = {}

    def names(self, address: str) -> tuple[Name, ...]:
        found = self._names.get(address)
        if found is None:
            answered = self._dns_names.get(address)
            if not answered:
                return ()  # (most addresses: nothing to keep)
            found = self._names[address] = tuple(
                (name, "dns", frame) for name, frame in answered)
        return found

    def evidence(self, address: str) -> tuple[Evidence, ...]:
        """The evidence of the address's DNS names, in their order; of each service only the
        first DESCRIBED (they all have one strength): all that `best` and `describe` can use."""
        found = self._evidence.get(address)
        if found is None:
            pieces: list[Evidence] = []
            for name, source, frame in self.names(address):
                _name_evidence(pieces, name, source, frame)
            counts: dict[str, int] = {}
            kept = []
            for piece in pieces:
                counts[piece.service] = counts.get(piece.service, 0) + 1
                if counts[piece.service] <= DESCRIBED:
                    kept.append(piece)
            found = self._evidence[address] = tuple(kept)
        return found


NO_NAMES = ServerNames([], ())  # (shared by the many flows whose server has no name)


def flow_names(flow: Flow, server_side: int, facts: FlowFacts,
               by_address: AddressNames) -> ServerNames:
    """Names of the flow's server: from its own handshakes, then from DNS answers."""
    own = [n for n in facts.names if n[1] not in NOT_SERVER_NAMES] if facts.names else []
    dns = by_address.names(flow.address(server_side))
    return ServerNames(own, dns) if own or dns else NO_NAMES


def direct_evidence(flow: Flow, server_side: int, facts: FlowFacts, names: ServerNames,
                    by_address: AddressNames, ranges: SideRanges | None = None
                    ) -> list[Evidence]:
    """Evidence about this flow alone (everything but inheritance); `names`: its server's
    `flow_names`; `ranges`: its `flow_range_services`, when made already."""
    ranges = ranges or (flow_range_service(flow, 0), flow_range_service(flow, 1))
    found = list(facts.evidence)
    for name, source, frame in names.own:
        _name_evidence(found, name, source, frame)
    if names.dns:
        found.extend(by_address.evidence(flow.address(server_side)))
    for name, source, frame in facts.names:
        if source in NOT_SERVER_NAMES:
            _name_evidence(found, name, source, frame)
    for side in (server_side, 1 - server_side):
        entry = ranges[side]
        if entry is not None:
            found.append(Evidence(ADDRESS_RANGE, entry.service,
                                  f"{flow.address(side)} in {entry.service}'s published range "
                                  f"({entry.date})"))
    found.extend(_port_evidence(flow))
    return found


def _name_evidence(found: list[Evidence], name: str, source: str, frame: int) -> None:
    by_cert = certificate_service(name) if source.endswith("certificate") else None
    if by_cert:
        found.append(Evidence(SIGNATURE, by_cert, f"certificate name '{name}'", frame))
    service = name_service(name)
    if service:
        found.append(Evidence(NAME, service, f"{source} name {name}", frame))


def _port_evidence(flow: Flow) -> tuple[Evidence, ...]:
    index = _port_rule_index()
    rules = (index.get((flow.transport, flow.a[2]), ())
             + index.get((flow.transport, flow.b[2]), ()))
    return _rules_evidence(rules) if rules else ()


@lru_cache(maxsize=1 << 10)  # (a few combinations of rules; the evidence is frozen)
def _rules_evidence(rules: tuple[int, ...]) -> tuple[Evidence, ...]:
    return tuple(Evidence(PORT, PORT_RULES[i][3], PORT_RULES[i][4]) for i in sorted(set(rules)))


@lru_cache(maxsize=1)
def _port_rule_index() -> dict[tuple[str, int], tuple[int, ...]]:
    """(transport, port) -> the `PORT_RULES` (their indices) whose range holds the port."""
    index: dict[tuple[str, int], tuple[int, ...]] = {}
    for i, (transport, low, high, _, _) in enumerate(PORT_RULES):
        for port in range(low, high + 1):
            index[(transport, port)] = (*index.get((transport, port), ()), i)
    return index


def best(evidence: list[Evidence]) -> Evidence | None:
    """The strongest piece of evidence (first found wins a tie)."""
    return max(evidence, key=lambda e: e.strength, default=None)


def inherited(flow: Flow, capture: CaptureFacts, decided: dict[int, Evidence],
              own_index: int) -> Evidence | None:
    """A service inherited from the flow whose signalling or relay revealed this flow's peer."""
    for side in (0, 1):
        source = capture.learned.get((flow.address(side), flow.port(side)))
        if source is None or source[0] == own_index or source[0] not in decided:
            continue
        origin = decided[source[0]]
        return Evidence(LEARNED, origin.service,
                        f"peer {flow.address(side)}:{flow.port(side)} learned from "
                        f"{source[1]} (flow {source[0] + 1}, {origin.service})", source[2])
    return None


ServerIndex = dict[tuple[str, int], tuple[int, Evidence]]


def same_server(flow: Flow, server_side: int, by_server: ServerIndex,
                own_index: int) -> Evidence | None:
    """A service inherited from another flow to the same server address and port."""
    key = (flow.address(server_side), flow.port(server_side))
    found = by_server.get(key)
    if found is None or found[0] == own_index:
        return None
    index, origin = found
    return Evidence(LEARNED, origin.service, f"same server {key[0]}:{key[1]} as flow {index + 1} "
                    f"({origin.text})", origin.frame)


def fallback_service(facts: FlowFacts) -> str:
    """Service for flows without any evidence: WebRTC when it looks like WebRTC."""
    webrtc = {"stun", "dtls"} <= facts.protocols or "dtls" in facts.protocols
    return "webrtc" if webrtc else "other"


DESCRIBED = 3  # pieces of evidence `describe` gives


def describe(evidence: list[Evidence], service: str, limit: int = DESCRIBED) -> str:
    """The evidence for `service`, strongest first, as one line."""
    chosen = sorted((e for e in evidence if e.service == service), key=lambda e: -e.strength)
    texts: list[str] = []
    for item in chosen:
        text = f"{item.text} (frame {item.frame})" if item.frame else item.text
        if text not in texts:
            texts.append(text)
            if len(texts) == limit:
                break
    return "; ".join(texts)


__all__ = [
    "ADDRESS_RANGE", "LEARNED", "NAME", "PORT", "SIGNATURE", "Orientation", "best",
    "describe", "direct_evidence", "fallback_service", "inherited", "orient",
]
