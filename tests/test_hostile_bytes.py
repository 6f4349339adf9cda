"""Hostile packet bytes: a malformed message is recorded against its flow and the run goes on.

Mutation runs change random bytes inside the packets of the bundled sample captures (never the
record headers, so the captures stay readable) and analyze them: no exception may escape.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

from analyzer.pipeline import Settings, analyze

SAMPLES = Path(__file__).resolve().parents[1] / "captures"
DTLS12 = 0xFEFD


def dtls_handshake_record(fragment: bytes) -> bytes:
    return (struct.pack("!BHH", 22, DTLS12, 0) + bytes(6) + len(fragment).to_bytes(2, "big")
            + fragment)


def test_a_dtls_handshake_fragment_that_does_not_fit_is_noted(tmp_path: Path) -> None:
    # a ClientHello fragment header claiming 200 bytes where the record holds 3
    bad = (bytes([1]) + (200).to_bytes(3, "big") + bytes(2) + bytes(3)
           + (200).to_bytes(3, "big") + b"abc")
    frames = [Ether() / IP(src="192.0.2.1", dst="198.51.100.2")
              / UDP(sport=50000, dport=3478) / Raw(dtls_handshake_record(bad))
              for _ in range(2)]
    for number, frame in enumerate(frames):
        frame.time = 1_700_000_000 + number
    path = tmp_path / "bad_dtls.pcap"
    wrpcap(str(path), frames)
    analysis = analyze([path], Settings(hash_captures=False))
    (problems,) = analysis.flows["decode_problems"].tolist()
    assert problems.startswith("frame 1: DTLS handshake") and "frame 2:" in problems
    assert analysis.summary["captures"][0]["flows_with_decode_problems"] == 1


def pcap_records(data: bytes) -> list[tuple[int, int]]:
    """(offset, length) of each record's packet bytes in a little-endian classic pcap."""
    out, pos = [], 24
    while pos + 16 <= len(data):
        caplen = struct.unpack_from("<I", data, pos + 8)[0]
        out.append((pos + 16, caplen))
        pos += 16 + caplen
    return out


def mutated(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    records = [r for r in pcap_records(data) if r[1]]
    for _ in range(rng.choice([1, 10, 100, 1000])):
        offset, length = rng.choice(records)
        out[offset + rng.randrange(min(length, 160))] = rng.randrange(256)
    return bytes(out)


SAMPLE_FILES = sorted(SAMPLES.glob("*.pcap"))


@pytest.mark.parametrize("seed", range(24))
def test_mutated_samples_are_analyzed_without_an_exception(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    source = SAMPLE_FILES[seed % len(SAMPLE_FILES)]
    path = tmp_path / source.name
    path.write_bytes(mutated(source.read_bytes(), rng))
    analysis = analyze([path], Settings(hash_captures=False, jobs=1 + seed % 2))
    assert analysis.summary["captures"][0]["packets"] == len(pcap_records(path.read_bytes()))
