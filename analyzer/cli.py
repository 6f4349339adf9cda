"""The `confscope` command line: analyze captures, write tables, print a short summary.

Bad input ends in one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from analyzer import __version__
from analyzer.errors import ConfscopeError

EXIT_OK, EXIT_ERROR = 0, 2
PROGRESS_MIN_BYTES = 50 * 1024 * 1024


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="confscope",
        description="What a conferencing/VoIP capture encrypted, how, and where its key and "
                    "relay servers are.",
    )
    parser.add_argument("--version", action="version", version=f"confscope {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    analyze = commands.add_parser("analyze", help="analyze captures and write tables")
    analyze.add_argument("captures", nargs="+", type=Path, help="pcap, pcapng or .gz files")
    analyze.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    analyze.add_argument("--jobs", type=int, default=0,
                         help="worker processes (default: all cores)")
    analyze.add_argument("--chunk-mb", type=int, default=64,
                         help="bytes of capture read per batch, MiB (default 64)")
    analyze.add_argument("--no-hash", action="store_true",
                         help="skip the SHA-256 of each capture in summary.json")
    analyze.add_argument("--no-report", action="store_true",
                         help="skip the HTML report (tables and summary only)")
    analyze.add_argument("-q", "--quiet", action="store_true", help="no progress or summary")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "analyze":
            return run_analyze(args)
    except ConfscopeError as exc:
        print(f"confscope: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("confscope: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"confscope: error: {exc.filename or ''}: {exc.strerror}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def _check_inputs(paths: list[Path], output: Path) -> None:
    for path in paths:
        if not path.exists():
            raise ConfscopeError(f"{path}: no such file")
        if path.is_dir():
            raise ConfscopeError(f"{path}: is a directory, not a capture file")
        if not os.access(path, os.R_OK):
            raise ConfscopeError(f"{path}: not readable")
    if output.exists() and not output.is_dir():
        raise ConfscopeError(f"{output}: exists and is not a folder")


def run_analyze(args: argparse.Namespace) -> int:
    from analyzer.pipeline import Settings, analyze
    from analyzer.tables import write_outputs

    _check_inputs(args.captures, args.output)
    if args.jobs < 0 or args.chunk_mb < 1:
        raise ConfscopeError("--jobs must be >= 0 and --chunk-mb >= 1")
    settings = Settings(chunk_bytes=args.chunk_mb * 1024 * 1024, jobs=args.jobs,
                        hash_captures=not args.no_hash)
    total = sum(p.stat().st_size for p in args.captures)
    show = not args.quiet and sys.stderr.isatty() and total >= PROGRESS_MIN_BYTES
    if show:
        from analyzer.terminal import progress_bar

        with progress_bar(total) as advance:
            analysis = analyze(args.captures, settings, advance)
    else:
        analysis = analyze(args.captures, settings)
    write_outputs(analysis.tables, analysis.summary, args.output, analysis.findings)
    if not args.quiet:
        from analyzer.terminal import print_summary

        print_summary(analysis, args.output)
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
