"""Write a synthetic, realistic video-conferencing capture for benchmarks.

    python -m bench.make_capture OUT.pcap --packets 2000000 [--format pcap|pcapng] [--gzip]
    python -m bench.make_capture OUT.pcap --size 10G

The capture is written as it is generated, window by window, so memory stays bounded whatever
its size. A summary (packets, bytes, mix of packet kinds, calls) is written beside it as
OUT.json and is what `python -m bench.run` quotes in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bench.assemble import Assembler, PayloadPool
from bench.batch import Batch
from bench.capfile import CaptureWriter, record_format
from bench.scenario import Budget, Scenario, windows
from bench.sessions import World
from bench.templates import TemplateTable
from bench.timelines import SECOND, Clock, Label

EPOCH_NS = 1_715_691_600 * SECOND  # 2024-05-14 13:00:00 UTC
RANDOM_POOL = 8 << 20
SPEECH_POOL = 1 << 20
SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


@dataclass(frozen=True, slots=True)
class Config:
    out: Path
    packets: int | None
    size: int | None
    file_format: str = "pcap"
    gzip: bool = False
    seed: int = 1
    calls: int = 300
    mean_call_s: float = 120.0


@dataclass
class Summary:
    path: str
    file_format: str
    gzip: bool
    seed: int
    calls: int
    packets: int = 0
    bytes: int = 0  # uncompressed
    duration_s: float = 0.0
    generation_s: float = 0.0
    mix: dict[str, int] = field(default_factory=dict)
    sessions: dict[str, int] = field(default_factory=dict)


def parse_size(text: str) -> int:
    """'10G' -> 10 GiB; K, M, G, T are powers of 1024; a plain number is bytes."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?", text.strip(), re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 500M, 10G)")
    return int(float(match.group(1)) * SIZE_UNITS[match.group(2).upper()])


@dataclass
class Written:
    """What has gone into the file so far."""

    packets: int = 0
    last_ns: int = 0
    labels: np.ndarray = field(default_factory=lambda: np.zeros(len(Label), np.int64))

    def add(self, batch: Batch) -> None:
        self.packets += len(batch)
        self.last_ns = int(batch.time_ns[-1])
        self.labels += np.bincount(batch.label, minlength=len(Label))


def write_windows(scenario: Scenario, assembler: Assembler, budget: Budget,
                  writer: CaptureWriter, rng: np.random.Generator) -> Written:
    """Write window after window until the budget cuts one short."""
    written = Written()
    meta_length = scenario.world.templates.meta["length"]
    for batch in windows(scenario):
        sizes = assembler.fmt.record_sizes(meta_length[batch.tpl] + batch.payload_len)
        keep = budget.cut(sizes, written.packets, writer.bytes_written)
        if keep:
            kept = batch.take(np.arange(keep))
            writer.write(assembler.assemble(kept, rng))
            written.add(kept)
        if keep < len(batch):
            return written
    return written


def generate(config: Config) -> Summary:
    """Write the capture described by `config`; return what was written."""
    started = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    templates = TemplateTable()
    scenario = Scenario(World(Clock(rng), templates, EPOCH_NS), config.calls,
                        int(config.mean_call_s * SECOND))
    fmt = record_format(config.file_format)
    assembler = Assembler(templates, PayloadPool(rng, RANDOM_POOL, SPEECH_POOL), fmt, EPOCH_NS)
    writer = CaptureWriter(config.out, fmt, config.gzip)
    try:
        written = write_windows(scenario, assembler, Budget(config.packets, config.size),
                                writer, rng)
    finally:
        writer.close()
    return Summary(
        str(config.out), config.file_format, config.gzip, config.seed, config.calls,
        written.packets, writer.bytes_written, written.last_ns / SECOND,
        time.perf_counter() - started,
        {Label(i).text: int(n) for i, n in enumerate(written.labels) if n},
        dict(Counter(scenario.kinds).most_common()),
    )


def summary_path(out: Path) -> Path:
    return out.with_name(out.name + ".json")


def parse_args(argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(prog="python -m bench.make_capture", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="capture file to write")
    parser.add_argument("--packets", type=int, help="number of packets (default 2000000)")
    parser.add_argument("--size", type=parse_size, help="stop at this many bytes (e.g. 10G)")
    parser.add_argument("--format", choices=("pcap", "pcapng"), default="pcap")
    parser.add_argument("--gzip", action="store_true", help="gzip the output (level 1)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--calls", type=int, default=300, help="concurrent calls (default 300)")
    parser.add_argument("--mean-call-s", type=float, default=120.0,
                        help="mean call duration in seconds (default 120)")
    args = parser.parse_args(argv)
    packets = args.packets if args.packets is not None or args.size else 2_000_000
    return Config(args.out, packets, args.size, args.format, args.gzip, args.seed, args.calls,
                  args.mean_call_s)


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    summary = generate(config)
    summary_path(config.out).write_text(json.dumps(asdict(summary), indent=2) + "\n")
    rate = summary.packets / max(summary.generation_s, 1e-9)
    print(f"{config.out}: {summary.packets} packets, {summary.bytes / 1e6:.1f} MB, "
          f"{summary.duration_s:.1f} s of traffic, written in {summary.generation_s:.1f} s "
          f"({rate / 1e3:.0f} k packets/s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
