"""The service range lookup (one bisection) agrees with testing every network, and the name
lookup (by suffix) with testing every suffix."""

from __future__ import annotations

import ipaddress
import random

import pytest

from analyzer.flows import Flow
from analyzer.services import (
    PORT_RULES,
    Intervals,
    Networks,
    _name_table,
    _port_evidence,
    flow_range_services,
    name_service,
    range_service,
    service_ranges,
)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _by_scan(address: str) -> Networks | None:
    """The first published list with a network holding `address` (a linear scan)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    for entry in service_ranges():
        if any(ip.version == net.version and ip in net for net in entry.networks):
            return entry
    return None


def _edges() -> list[str]:
    """Addresses at, next to and inside every published network."""
    found: list[str] = []
    for entry in service_ranges():
        for net in entry.networks:
            low, high = int(net.network_address), int(net.broadcast_address)
            top = 2**32 - 1 if net.version == 4 else 2**128 - 1
            kind: type[Address] = (ipaddress.IPv4Address if net.version == 4
                                   else ipaddress.IPv6Address)
            found += [str(kind(v)) for v in (low - 1, low, low + 1, (low + high) // 2,
                                             high - 1, high, high + 1) if 0 <= v <= top]
    return found


def test_range_service_matches_a_scan_of_every_network() -> None:
    rng = random.Random(1)
    addresses = _edges()
    addresses += [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(5000)]
    addresses += [str(ipaddress.IPv6Address(rng.getrandbits(128))) for _ in range(500)]
    addresses += ["::ffff:" + a for a in addresses[:200] if ":" not in a]
    addresses += ["not an address", ""]
    for address in addresses:
        assert range_service(address) is _by_scan(address), address


def _halves(address: str) -> tuple[int, int]:
    """An address as the flow table keeps it: IPv4 as ::ffff:a.b.c.d, in two 64-bit halves."""
    ip = ipaddress.ip_address(address)
    value = (0xFFFF << 32 | int(ip)) if ip.version == 4 else int(ip)
    return value >> 64, value & (2**64 - 1)


def test_flow_range_services_match_the_lookup_of_each_side() -> None:
    rng = random.Random(2)
    addresses = _edges() + [str(ipaddress.IPv6Address(rng.getrandbits(128)))
                            for _ in range(300)]
    rng.shuffle(addresses)
    flows = [Flow(i + 1, "udp", (*_halves(a), 1000), (*_halves(b), 2000), 0, 0, 1, 0)
             for i, (a, b) in enumerate(zip(addresses, reversed(addresses), strict=True))]
    found = flow_range_services(flows)
    assert sum(x is not None for pair in found for x in pair) > len(flows) // 2  # (not vacuous)
    for flow, (a, b) in zip(flows, found, strict=True):
        assert a is _by_scan(flow.address(0)) and b is _by_scan(flow.address(1)), flow


@pytest.mark.parametrize(("networks", "inside", "outside"), [
    (["10.0.0.0/24", "10.0.1.0/24"], ["10.0.0.0", "10.0.1.255"], ["9.255.255.255", "10.0.2.0"]),
    (["10.0.0.0/8", "10.1.0.0/16"], ["10.1.2.3", "10.255.255.255"], ["11.0.0.0"]),
    (["10.0.0.0/24", "10.0.2.0/24"], ["10.0.2.7"], ["10.0.1.0", "10.0.3.0"]),
    ([], [], ["0.0.0.0"]),
])
def test_intervals_merge_and_bisect(networks: list[str], inside: list[str],
                                    outside: list[str]) -> None:
    intervals = Intervals.of(ipaddress.ip_network(n) for n in networks)
    assert all(int(ipaddress.ip_address(a)) in intervals for a in inside)
    assert not any(int(ipaddress.ip_address(a)) in intervals for a in outside)


def _name_by_scan(name: str) -> str | None:
    """The first service in the table with a suffix `name` equals or ends with (a scan)."""
    name = name.lower().rstrip(".")
    for service, endings in _name_table()[0].items():
        if any(name == end or name.endswith("." + end) for end in endings):
            return service
    return None


def test_name_service_matches_a_scan_of_every_suffix() -> None:
    endings = [end for ends in _name_table()[0].values() for end in ends]
    rng = random.Random(5)
    names = ["", ".", "example.com", "notzoom.us", "zoom.us.evil.example"]
    for end in endings:
        head, _, tail = end.partition(".")
        names += [end, end.upper() + ".", f"a.{end}", f"x-{end}", f"a..{end}", f".{end}",
                  f"{head}x.{tail}", tail, f"{rng.choice(endings)}.{end}"]
    names += [f"{rng.choice(endings)}.{rng.choice(endings)}" for _ in range(500)]
    assert sum(_name_by_scan(n) is not None for n in names) > len(names) // 2
    for name in names:
        assert name_service(name) == _name_by_scan(name), name


def test_port_evidence_matches_a_scan_of_every_rule() -> None:
    rng = random.Random(9)
    edges = [p for _, low, high, _, _ in PORT_RULES for p in (low - 1, low, high, high + 1)]
    for _ in range(3000):
        transport = rng.choice(["udp", "tcp"])
        a, b = rng.choice(edges), rng.choice([*edges, rng.randrange(65536)])
        flow = Flow(1, transport, (0, 1, a), (0, 2, b), 0, 0, 1, 0)
        expected = [(service, text) for t, low, high, service, text in PORT_RULES
                    if t == transport and (low <= a <= high or low <= b <= high)]
        assert [(e.service, e.text) for e in _port_evidence(flow)] == expected, (transport, a, b)
