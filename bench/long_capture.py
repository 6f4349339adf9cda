"""Write a long capture of small packets: hours of a few hundred quiet flows.

    python -m bench.long_capture OUT.pcap [--flows 300] [--hours 12]

The benchmark capture (`bench.make_capture`) packs two million large packets into minutes;
this one spreads small ones over hours, to check that memory does not grow with a capture's
duration or its packet count (the timeline's rows, the columns of a batch of small packets).
Each flow sends one 60-byte UDP/IPv4 frame a second (a keep-alive: 18 bytes of payload that
start with 0x70, which no decoder takes), from 10.0.0.2:40000+i to 198.51.100.7:41000, the
flows a few milliseconds apart. Checksums are correct; the bytes depend on nothing else. 12
hours of 300 flows are 13 million packets (0.98 GB), written in seconds with numpy.
"""

from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path

import numpy as np

from bench.wire import internet_checksum

EPOCH_S = 1_715_691_600  # 2024-05-14 13:00:00 UTC
CLIENT, SERVER = bytes([10, 0, 0, 2]), bytes([198, 51, 100, 7])
FIRST_PORT, SERVER_PORT = 40_000, 41_000
PAYLOAD = bytes([0x70]) + bytes(17)
ETHERNET = bytes.fromhex("020000000002" "020000000001" "0800")
FRAME_BYTES = 60


def _frame(port: int) -> bytes:
    udp_length = 8 + len(PAYLOAD)
    pseudo = CLIENT + SERVER + struct.pack("!BBH", 0, 17, udp_length)
    header = struct.pack("!HHHH", port, SERVER_PORT, udp_length, 0)
    checksum = internet_checksum(pseudo + header + PAYLOAD) or 0xFFFF
    udp = struct.pack("!HHHH", port, SERVER_PORT, udp_length, checksum) + PAYLOAD
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, CLIENT, SERVER)
    ip = ip[:10] + struct.pack("!H", internet_checksum(ip)) + ip[12:]
    return ETHERNET + ip + udp


def write_capture(out: Path, flows: int, hours: float) -> int:
    """Write the pcap, one second of all the flows at a time; its packet count."""
    records = np.zeros((flows, 16 + FRAME_BYTES), np.uint8)
    for i in range(flows):
        records[i, 16:] = np.frombuffer(_frame(FIRST_PORT + i), np.uint8)
    records[:, 8:12] = np.frombuffer(struct.pack("<I", FRAME_BYTES), np.uint8)
    records[:, 12:16] = records[:, 8:12]
    offset_us = (np.arange(flows) * (1_000_000 // max(flows, 1))).astype("<u4")
    records[:, 4:8] = offset_us.view(np.uint8).reshape(-1, 4)
    seconds = int(hours * 3600)
    with out.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for second in range(seconds):
            records[:, 0:4] = np.frombuffer(struct.pack("<I", EPOCH_S + second), np.uint8)
            f.write(records.tobytes())
    return flows * seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.long_capture", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--flows", type=int, default=300)
    parser.add_argument("--hours", type=float, default=12.0)
    args = parser.parse_args(argv)
    if args.flows < 1 or args.flows > 20_000 or args.hours <= 0:
        print("confscope bench: --flows must be 1-20000 and --hours above 0", file=sys.stderr)
        return 2
    packets = write_capture(args.out, args.flows, args.hours)
    print(f"wrote {args.out}: {packets:,} packets, {args.flows} flows, {args.hours:g} h")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
