"""Write a capture of many short flows, as an office link's capture has beside its calls.

    python -m bench.many_flows OUT.pcap --flows 200000 [--seed N]

The benchmark capture (`bench.make_capture`) has a few thousand long flows; this one has
hundreds of thousands of short ones, to measure the per-flow costs that capture hides. Each
flow is one of four kinds, in turn:

| kind | packets |
|---|---|
| DNS lookup (UDP 53 to a public resolver) | A query and its answer, naming the next web server |
| web connection (TCP 443) | SYN, SYN/ACK, ACK, a ClientHello with SNI, FIN, RST |
| UDP to a peer's high port (e.g. a P2P application) | one or two datagrams of random bytes |
| port scan probe | one SYN, no answer |

Clients are 500 private addresses; servers and peers are public IPv4 addresses drawn from
the capture's seed. Checksums are correct. Same seed, same bytes. Memory stays small: packets
are written as they are made.
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.handshakes import tls_client_hello
from bench.wire import (
    PROTO_TCP,
    PROTO_UDP,
    TCP_ACK_FLAG,
    TCP_FIN,
    TCP_PSH,
    TCP_SYN,
    internet_checksum,
)

EPOCH_S = 1_715_691_600  # 2024-05-14 13:00:00 UTC
FLOWS_PER_SECOND = 2_000
ETHERNET = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00"
TCP_RST = 0x04
RESOLVER = bytes([9, 9, 9, 9])
PUBLIC_FIRST_OCTETS = (3, 13, 18, 20, 23, 31, 34, 35, 40, 45, 52, 54, 64, 66, 77, 81, 88,
                       91, 104, 142, 151, 157, 185, 193, 195, 212, 213)

# src, dst, proto, sport, dport, payload, and for TCP: flags, sequence and acknowledgment numbers
Packet = tuple[bytes, bytes, int, int, int, bytes, int, int, int]


def ipv4_packet(src: bytes, dst: bytes, proto: int, ident: int, transport: bytes) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(transport), ident & 0xFFFF, 0, 64,
                         proto, 0, src, dst)
    checksum = internet_checksum(header)
    return header[:10] + struct.pack("!H", checksum) + header[12:] + transport


def transport_segment(packet: Packet) -> bytes:
    src, dst, proto, sport, dport, payload, flags, seq, ack = packet
    if proto == PROTO_UDP:
        header = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)
    else:
        header = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0)
    pseudo = src + dst + struct.pack("!BBH", 0, proto, len(header) + len(payload))
    checksum = internet_checksum(pseudo + header + payload)
    if proto == PROTO_UDP and checksum == 0:
        checksum = 0xFFFF  # (RFC 768: zero means none was computed)
    at = 6 if proto == PROTO_UDP else 16
    return header[:at] + struct.pack("!H", checksum) + header[at + 2:] + payload


def dns_name(name: str) -> bytes:
    return b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"


def dns_lookup(txid: int, name: str, answer: bytes) -> tuple[bytes, bytes]:
    question = dns_name(name) + struct.pack("!HH", 1, 1)
    query = struct.pack("!HHHHHH", txid, 0x0100, 1, 0, 0, 0) + question
    record = struct.pack("!HHHIH", 0xC00C, 1, 1, 300, 4) + answer
    response = struct.pack("!HHHHHH", txid, 0x8180, 1, 1, 0, 0) + question + record
    return query, response


class FlowMaker:
    """The packets of flow after flow, in the kinds' turn."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.next_server = self.public_address()
        self.kinds: tuple[Callable[[bytes], list[Packet]], ...] = (
            self.dns, self.web, self.peer, self.probe)

    def public_address(self) -> bytes:
        rng = self.rng
        return bytes([rng.choice(PUBLIC_FIRST_OCTETS), rng.randrange(256), rng.randrange(256),
                      rng.randrange(1, 255)])

    def client(self) -> bytes:
        index = self.rng.randrange(500)
        return bytes([10, 20, index // 250, 1 + index % 250])

    def ephemeral_port(self) -> int:
        return self.rng.randrange(32768, 61000)

    def flow(self, index: int) -> list[Packet]:
        return self.kinds[index % len(self.kinds)](self.client())

    def dns(self, client: bytes) -> list[Packet]:
        self.next_server = self.public_address()
        query, response = dns_lookup(self.rng.randrange(1 << 16),
                                     f"www.site{self.rng.randrange(10**6)}.example",
                                     self.next_server)
        port = self.ephemeral_port()
        return [(client, RESOLVER, PROTO_UDP, port, 53, query, 0, 0, 0),
                (RESOLVER, client, PROTO_UDP, 53, port, response, 0, 0, 0)]

    def web(self, client: bytes) -> list[Packet]:
        server, port = self.next_server, self.ephemeral_port()
        hello = tls_client_hello(f"www.site{self.rng.randrange(10**6)}.example",
                                 self.rng.randbytes)
        out = (client, server, PROTO_TCP, port, 443)
        back = (server, client, PROTO_TCP, 443, port)
        c, s = self.rng.randrange(1 << 31), self.rng.randrange(1 << 31)  # initial sequences
        ack = TCP_ACK_FLAG
        return [(*out, b"", TCP_SYN, c, 0), (*back, b"", TCP_SYN | ack, s, c + 1),
                (*out, b"", ack, c + 1, s + 1), (*out, hello, ack | TCP_PSH, c + 1, s + 1),
                (*out, b"", TCP_FIN | ack, c + 1 + len(hello), s + 1),
                (*back, b"", TCP_RST, s + 1, 0)]

    def peer(self, client: bytes) -> list[Packet]:
        peer, sport, dport = self.public_address(), self.ephemeral_port(), self.ephemeral_port()
        datagrams = [(client, peer, PROTO_UDP, sport, dport,
                      self.rng.randbytes(self.rng.randrange(20, 200)), 0, 0, 0)]
        if self.rng.random() < 0.5:
            datagrams.append((peer, client, PROTO_UDP, dport, sport,
                              self.rng.randbytes(self.rng.randrange(20, 200)), 0, 0, 0))
        return datagrams

    def probe(self, client: bytes) -> list[Packet]:
        return [(client, self.public_address(), PROTO_TCP, self.ephemeral_port(),
                 self.rng.randrange(1, 1024), b"", TCP_SYN, self.rng.randrange(1 << 31), 0)]


def frames(flows: int, seed: int) -> Iterator[tuple[int, bytes]]:
    """(time in microseconds since EPOCH_S, Ethernet frame) of every packet, in time order:
    each flow's packets 100 us apart, flows starting FLOWS_PER_SECOND a second."""
    maker, ident = FlowMaker(seed), 0
    for index in range(flows):
        start = index * 1_000_000 // FLOWS_PER_SECOND
        for step, packet in enumerate(maker.flow(index)):
            ident += 1
            segment = transport_segment(packet)
            ip = ipv4_packet(packet[0], packet[1], packet[2], ident, segment)
            yield start + 100 * step, ETHERNET + ip


def write_capture(out: Path, flows: int, seed: int) -> int:
    """Write the pcap; its packet count. A flow lasts at most 500 us, the time between two
    flows' starts, so the packets are in time order as they are made."""
    packets = 0
    with out.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for micros, frame in frames(flows, seed):
            f.write(struct.pack("<IIII", EPOCH_S + micros // 1_000_000, micros % 1_000_000,
                                len(frame), len(frame)) + frame)
            packets += 1
    return packets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.many_flows", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--flows", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    packets = write_capture(args.out, args.flows, args.seed)
    print(f"{args.out}: {args.flows} flows, {packets} packets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
