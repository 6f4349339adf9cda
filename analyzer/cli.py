"""The `confscope` command line: analyze captures, write tables, print a short summary.

Bad input ends in one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import os
import select
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from analyzer import __version__
from analyzer.capture.source import STDIN, is_stream
from analyzer.errors import ConfscopeError

if TYPE_CHECKING:
    from analyzer.pipeline import Settings
    from analyzer.provenance import CaptureHashes

EXIT_OK, EXIT_ERROR = 0, 2
EXIT_PIPE_CLOSED = 128 + 13  # as a shell reports a tool killed by SIGPIPE (`seq 9999 | head`)
# numpy's OpenBLAS would start a thread per core that spins after each (small) BLAS call, taking
# cores from the pipeline's own threads and processes: one BLAS thread is plenty for our sizes.
# Set before numpy is first imported (the heavy imports come after argument parsing).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# Arrow's own allocator (mimalloc) keeps what the tables and the CSV writer free for reuse:
# 100-130 MB more at the peak on a capture of 200,000 flows, and no faster. The C library's
# gives it back. Read by pyarrow at its first allocation, so set here too.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
PROGRESS_MIN_BYTES = 50 * 1024 * 1024
GC_YOUNG_THRESHOLD = 20_000  # allocations between collections (CPython's default: 700)


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line and exit status 2 (argparse prints the whole usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"confscope: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="confscope",
        description="What a conferencing/VoIP capture encrypted, how, and where its key and "
                    "relay servers are.",
    )
    parser.add_argument("--version", action="version", version=f"confscope {__version__}")
    commands = parser.add_subparsers(dest="command", required=True,
                                     parser_class=OneLineParser)
    analyze = commands.add_parser("analyze", help="analyze captures and write tables")
    analyze.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    analyze.add_argument("--no-hash", action="store_true",
                         help="skip the SHA-256 of each capture in summary.json")
    analyze.add_argument("--no-report", action="store_true",
                         help="skip the HTML report (tables and summary only)")
    analyze.add_argument("-q", "--quiet", action="store_true", help="no progress or summary")
    analyze.add_argument("--export-figures", action="store_true",
                         help="also write the key figures as PNG and SVG (kaleido + Chromium)")
    _add_common(analyze)
    report = commands.add_parser("report", help="rebuild OUTDIR/report.html from the tables")
    report.add_argument("outdir", type=Path, help="a folder written by 'confscope analyze'")
    report.add_argument("-o", "--output", type=Path, help="where to write (default OUTDIR)")
    report.add_argument("--export-figures", action="store_true",
                        help="also write the key figures as PNG and SVG")
    compare = commands.add_parser("compare", help="one dashboard comparing analyses")
    compare.add_argument("outdirs", nargs="+", type=Path, help="folders from 'analyze'")
    compare.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    check = commands.add_parser(
        "check", help="check a routing claim: exit 0 if it holds, 1 if a server breaks it")
    claim = check.add_mutually_exclusive_group(required=True)
    claim.add_argument("--allow-country", type=_countries, metavar="CC,CC",
                       help="servers must all be in these countries")
    claim.add_argument("--deny-country", type=_countries, metavar="CC,CC",
                       help="no server may be in these countries")
    check.add_argument("--roles", type=_roles, default=DEFAULT_CHECK_ROLES,
                       help="server roles to check (default: all but dns): "
                            + ",".join(ALL_ROLES))
    check.add_argument("--json", action="store_true", help="machine-readable output")
    _add_common(check)
    return parser


ALL_ROLES = ("control", "key-exchange", "media-relay", "stun", "peer", "dns", "other")
DEFAULT_CHECK_ROLES = tuple(r for r in ALL_ROLES if r != "dns")


def _os_error_text(exc: OSError) -> str:
    """One line: `file: reason` for system errors, else the message (e.g. a failed hash's)."""
    if exc.strerror is None:
        return str(exc)
    return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror


def _countries(text: str) -> tuple[str, ...]:
    codes = tuple(c.strip().upper() for c in text.split(",") if c.strip())
    if not codes or any(len(c) != 2 or not c.isalpha() for c in codes):
        raise argparse.ArgumentTypeError(f"expected ISO country codes like US,CA; got {text!r}")
    return codes


def _roles(text: str) -> tuple[str, ...]:
    roles = tuple(r.strip() for r in text.split(",") if r.strip())
    unknown = [r for r in roles if r not in ALL_ROLES]
    if unknown or not roles:
        raise argparse.ArgumentTypeError(f"unknown role(s) {unknown}; use {','.join(ALL_ROLES)}")
    return roles


def _add_common(command: argparse.ArgumentParser) -> None:
    command.add_argument("captures", nargs="+", type=Path,
                         help="pcap, pcapng or .gz files; - for standard input")
    command.add_argument("--jobs", type=int, default=0, metavar="N",
                         help="cores to use: a process per capture; on one capture a "
                              "read-ahead thread and N-2 media workers (default: all cores)")
    command.add_argument("--chunk-mb", type=int, default=64,
                         help="bytes of capture read per batch, MiB (default 64)")
    geo = command.add_argument_group("geolocation")
    geo.add_argument("--geoip-db", action="append", default=[], type=Path, metavar="PATH",
                     help="MaxMind-format database (GeoLite2/GeoIP2 City, Country, ASN; DB-IP; "
                          "IPinfo); repeatable. Also read: $CONFSCOPE_GEOIP_DIR, /usr/share/GeoIP")
    geo.add_argument("--vantage", metavar="LAT,LON",
                     help="where the capture was taken (for the RTT plausibility check)")
    geo.add_argument("--vantage-country", metavar="CC", help="the capture's country, if no point")
    geo.add_argument("--flag-country", type=_countries, default=(), metavar="CC,CC",
                     help="mark servers placed in these countries")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "analyze":
            return run_analyze(args)
        if args.command == "check":
            from analyzer.check import run_check

            return run_check(args, _settings(args))
        if args.command == "report":
            return run_report(args)
        if args.command == "compare":
            return run_compare(args)
    except ConfscopeError as exc:
        print(f"confscope: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("confscope: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError as exc:
        if not stdout_reader_gone():  # another pipe (a child process's): a real error
            print(f"confscope: error: {exc.strerror}", file=sys.stderr)
            return EXIT_ERROR
        discard_stdout()
        return EXIT_PIPE_CLOSED
    except OSError as exc:
        print(f"confscope: error: {_os_error_text(exc)}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def stdout_reader_gone() -> bool:
    """Whether stdout is a pipe nobody reads any more (poll reports an error on it)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), stdout closed or replaced
        return False


def discard_stdout() -> None:
    """Stdout's reader closed the pipe: what is still buffered for it goes nowhere, quietly
    (every output file was written before the terminal summary)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _check_inputs(paths: list[Path], output: Path | None) -> None:
    if paths.count(STDIN) > 1:
        raise ConfscopeError("standard input ('-') can be read only once")
    for path in paths:
        if path == STDIN:
            if sys.stdin is None or sys.stdin.isatty():
                raise ConfscopeError("'-' reads a capture from standard input, which is a "
                                     "terminal here: pipe one in (tcpdump -w - ... | confscope)")
            continue
        if not path.exists():
            raise ConfscopeError(f"{path}: no such file")
        if path.is_dir():
            raise ConfscopeError(f"{path}: is a directory, not a capture file")
        if not os.access(path, os.R_OK):
            raise ConfscopeError(f"{path}: not readable")
    if output is not None and output.exists() and not output.is_dir():
        raise ConfscopeError(f"{output}: exists and is not a folder")


def _settings(args: argparse.Namespace) -> Settings:
    """Validated settings; bad geolocation options fail here, before any capture is read."""
    from analyzer.geo import GeoResolver, Vantage
    from analyzer.geolocate import GeoSettings
    from analyzer.pipeline import Settings

    if args.jobs < 0 or args.chunk_mb < 1:
        raise ConfscopeError("--jobs must be >= 0 and --chunk-mb >= 1")
    geo = GeoSettings(databases=tuple(str(p) for p in args.geoip_db),
                      vantage_point=args.vantage or "",
                      vantage_country=args.vantage_country or "",
                      flag_countries=tuple(args.flag_country))
    with GeoResolver([Path(p) for p in geo.databases]):
        pass
    if geo.vantage_point:
        Vantage.parse_point(geo.vantage_point)
    if geo.vantage_country:
        Vantage.for_country(geo.vantage_country)
    return Settings(chunk_bytes=args.chunk_mb * 1024 * 1024, jobs=args.jobs,
                    hash_captures=not getattr(args, "no_hash", False), geo=geo)


def _early_hashes(args: argparse.Namespace) -> CaptureHashes | None:
    """Start the captures' SHA-256 now, before the heavy imports, when this process analyzes
    them (worker processes hash their own captures)."""
    from analyzer.provenance import CaptureHashes

    in_process = len(args.captures) == 1 or (args.jobs or os.cpu_count() or 1) == 1
    files = [p for p in args.captures if not is_stream(p)]  # (a pipe is hashed as it is read)
    return CaptureHashes(files) if in_process and not args.no_hash else None


def run_analyze(args: argparse.Namespace) -> int:
    _check_inputs(args.captures, args.output)
    hashes = _early_hashes(args)
    try:
        return _analyze_and_write(args, hashes)
    finally:
        if hashes is not None:
            hashes.close()


def _analyze_and_write(args: argparse.Namespace, hashes: CaptureHashes | None) -> int:
    gc.disable()  # the imports make objects that live until exit: collecting them is waste
    try:
        from analyzer.pipeline import analyze, collector_paused
        from analyzer.tables import OutputWriter
    finally:
        gc.freeze()  # and spare the collector from walking them later
        # the pipeline makes few reference cycles: collect the young generation less often
        gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)
        gc.enable()
    settings = _settings(args)
    total = sum(0 if is_stream(p) else p.stat().st_size for p in args.captures)
    show = not args.quiet and sys.stderr.isatty() and total >= PROGRESS_MIN_BYTES
    with OutputWriter(args.output) as writer:  # (tables are written as they become final)
        if show:
            from analyzer.terminal import progress_bar

            with progress_bar(total) as advance:
                analysis = analyze(args.captures, settings, advance, hashes, writer.add)
        else:
            analysis = analyze(args.captures, settings, hashes=hashes, final=writer.add)
        # the hashes finish while the tables are written
        collect = (functools.partial(analysis.collect_hashes, hashes) if hashes is not None
                   else None)
        with collector_paused(), _stage(show, "writing the tables"):
            for name, table in analysis.tables.items():
                if name not in writer.names:
                    writer.add(name, table)
            writer.commit(analysis.summary, analysis.findings, collect)
    summary = None
    if not args.quiet:
        from analyzer.terminal import summary_text

        summary = summary_text(analysis, args.output, report=not args.no_report)
    del analysis, collect  # (the report reads the tables' files: their memory goes to it)
    if not args.no_report:
        with collector_paused(), _stage(show, "writing the report"):
            _report_after_tables(args.output)
    if args.export_figures:
        from dashboards.figures import export_figures

        export_figures(args.output)
    if summary is not None:
        sys.stdout.write(summary)
    return EXIT_OK


def _report_after_tables(outdir: Path) -> None:
    """Write the report; if that fails (a full disk), say that the tables are written."""
    from dashboards.report import build_report

    try:
        build_report(outdir)
    except OSError as exc:
        raise ConfscopeError(f"{_os_error_text(exc)}; the tables are written: 'confscope "
                             f"report {outdir}' writes the report again") from None


def _stage(show: bool, text: str) -> contextlib.AbstractContextManager[None]:
    """`terminal.stage` when the run shows its progress, else nothing."""
    if not show:
        return contextlib.nullcontext()
    from analyzer.terminal import stage

    return stage(text)


def _require_analysis(folder: Path) -> None:
    if not (folder / "summary.json").is_file():
        raise ConfscopeError(f"{folder}: not a confscope output folder (no summary.json)")


def run_report(args: argparse.Namespace) -> int:
    from dashboards.report import build_report

    _require_analysis(args.outdir)
    path = build_report(args.outdir, args.output)
    if args.export_figures:
        from dashboards.figures import export_figures

        export_figures(args.outdir)
    print(f"report written to {path}")
    return EXIT_OK


def run_compare(args: argparse.Namespace) -> int:
    from dashboards.compare import build_comparison

    for folder in args.outdirs:
        _require_analysis(folder)
    print(f"comparison written to {build_comparison(args.outdirs, args.output)}")
    return EXIT_OK


def run() -> NoReturn:
    """The console entry point: `main`, then an immediate exit.

    Everything is written and closed (outputs atomically, child processes waited for) when
    `main` returns; tearing down the interpreter after that (pandas, numpy, pyarrow) would only
    free memory the kernel frees anyway, and costs about 0.1 s. Under a profiler or a coverage
    tracer the interpreter ends normally, so that they can write their results.
    """
    code = main()
    if sys.gettrace() is not None or sys.getprofile() is not None:
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe loses nothing of ours
            stream.flush()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
