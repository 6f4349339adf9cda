"""A server address answered for many names (a CDN) and reached by many flows: each flow's
names and service evidence come from one shared record per address, and say what the full
lists would say."""

from __future__ import annotations

import random
import struct
from pathlib import Path

from analyzer import services
from analyzer.facts import NAME, CaptureFacts, Evidence, FlowFacts
from analyzer.flows import Flow
from analyzer.pipeline import Settings, analyze
from bench.many_flows import ETHERNET, dns_lookup, ipv4_packet, transport_segment

CLIENT, RESOLVER, CDN = bytes([10, 0, 0, 2]), bytes([9, 9, 9, 9]), bytes([104, 16, 1, 1])
DOMAINS = ("zoom.us", "teams.microsoft.com", "webex.com", "example.com")


def cdn_capture(path: Path, names: list[str], flows: int) -> None:
    """DNS answers giving every name the one CDN address, then `flows` UDP flows to it."""
    frames = []
    for i, name in enumerate(names):
        query, answer = dns_lookup(i, name, CDN)
        frames.append((CLIENT, RESOLVER, 5353, 53, query))
        frames.append((RESOLVER, CLIENT, 53, 5353, answer))
    frames += [(CLIENT, CDN, 20_000 + i, 443, bytes(30)) for i in range(flows)]
    with path.open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for n, (src, dst, sport, dport, payload) in enumerate(frames):
            frame = ETHERNET + ipv4_packet(src, dst, 17, n, transport_segment(
                (src, dst, 17, sport, dport, payload, 0, 0, 0)))
            out.write(struct.pack("<IIII", 1_715_691_600 + n // 1000, n % 1000 * 1000,
                                  len(frame), len(frame)) + frame)


def test_flows_to_a_cdn_address_share_its_names(tmp_path: Path) -> None:
    names = [f"host{i}.{DOMAINS[i % len(DOMAINS)]}" for i in range(400)]
    path = tmp_path / "cdn.pcap"
    cdn_capture(path, names, 300)
    tables = analyze([path], Settings(jobs=1, hash_captures=False)).tables
    to_cdn = tables["flows"].query("server_ip == '104.16.1.1'")
    assert len(to_cdn) == 300
    assert set(to_cdn["server_name"]) == {names[0]}
    assert set(to_cdn["server_name_source"]) == {"dns"}
    # the first name's service, and its first three names as the evidence
    assert set(to_cdn["service"]) == {"zoom"}
    expected = "; ".join(f"dns name {n} (frame {2 * i + 2})"
                         for i, n in enumerate(names) if n.endswith("zoom.us"))
    assert set(to_cdn["service_evidence"]) == {"; ".join(expected.split("; ")[:3])}
    cell = tables["servers"].set_index("ip").loc["104.16.1.1", "names"]
    assert sorted(cell.split("; ")) == sorted(f"{n} (dns)" for n in names)


def test_flows_to_one_address_share_one_record() -> None:
    capture = CaptureFacts()
    for i in range(50):
        capture.add_dns("104.16.1.1", f"h{i}.zoom.us", i)
    by_address = services.AddressNames(capture)
    flows = [Flow(i, "udp", (0, 0xFFFF0A000002, 40000 + i), (0, 0xFFFF68100101, 443), 0, 0,
                  i, 0) for i in range(1, 4)]
    names = [services.flow_names(f, 1, FlowFacts(), by_address) for f in flows]
    assert names[0].dns is names[1].dns is names[2].dns and len(names[0].dns) == 50
    evidence = [services.direct_evidence(f, 1, FlowFacts(), n, by_address)
                for f, n in zip(flows, names, strict=True)]
    assert [len(e) for e in evidence] == [services.DESCRIBED] * 3  # what describe can use


def full_evidence(own: list[services.Name], dns: list[services.Name]) -> list[Evidence]:
    """Every name's evidence, in order: the definition the shared record must agree with."""
    found: list[Evidence] = []
    for name, source, frame in own + dns:
        services._name_evidence(found, name, source, frame)
    return found


def test_shared_evidence_describes_like_the_full_list() -> None:
    rng = random.Random(3)
    for _ in range(200):
        capture = CaptureFacts()
        address = "104.16.1.1"
        for i in range(rng.randint(0, 30)):
            capture.add_dns(address, f"h{i}.{rng.choice(DOMAINS)}", 10 + i)
        facts = FlowFacts()
        for i in range(rng.randint(0, 3)):
            facts.add_name(f"s{i}.{rng.choice(DOMAINS)}", "tls-sni", 1000 + i)
        if rng.random() < 0.3:
            facts.add_evidence(NAME, rng.choice(["zoom", "webex"]), "stun software", 5)
        flow = Flow(1, "udp", (0, 0xFFFF0A000002, 40000), (0, 0xFFFF68100101, 443), 0, 0, 1, 0)
        by_address = services.AddressNames(capture)
        names = services.flow_names(flow, 1, facts, by_address)
        shared = services.direct_evidence(flow, 1, facts, names, by_address)
        full = list(facts.evidence) + full_evidence(list(names.own), list(names.dns))
        full += services._port_evidence(flow)
        top, top_full = services.best(shared), services.best(full)
        assert top == top_full
        if top is not None:
            assert (services.describe(shared, top.service)
                    == services.describe(full, top.service))
