"""What the terminal shows: a progress bar for long runs and a short summary at the end."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn
from rich.table import Table

from analyzer.frames import distinct_texts
from analyzer.printable import printable

if TYPE_CHECKING:
    from analyzer.pipeline import Analysis

def shown(value: object) -> str:
    """Text from a capture (or a file name) for rich: control characters shown as \\xNN
    (`printable`) and rich's markup escaped."""
    return escape(printable(value))


@contextmanager
def progress_bar(total_bytes: int, console: Console | None = None
                 ) -> Iterator[Callable[[int], None]]:
    """A bar of the capture bytes read. Once all are read it says what the run does next (the
    tables of a capture of many flows take a while), until the analysis returns."""
    columns = ("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console or Console(stderr=True), transient=True) as progress:
        task = progress.add_task("reading", total=total_bytes)

        def advance(done: int) -> None:
            progress.advance(task, done)
            if progress.tasks[0].finished:
                progress.update(task, description=AFTER_READING)

        yield advance


AFTER_READING = "making the flows, streams and servers tables"


@contextmanager
def stage(text: str, console: Console | None = None) -> Iterator[None]:
    """A spinner saying what the run is doing, for a step of a long run without a bar."""
    with (console or Console(stderr=True)).status(text):
        yield


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """The reader of our output went away (`| head`): let the command line end as other
        tools do (rich's default exits with status 1, which `check` uses for a broken claim)."""
        self.quiet = True
        raise BrokenPipeError


def summary_text(analysis: Analysis, outdir: Path, report: bool) -> str:
    """The terminal summary (styled if stdout is a terminal), made now to be printed when the
    report is written (`report`: it will be): the analysis can be freed before the report is
    made, which reads the tables from their files."""
    console = _Console()
    with console.capture() as captured:
        _print_summary(console, analysis, outdir, report)
    return captured.get()


def _print_summary(console: Console, analysis: Analysis, outdir: Path, report: bool) -> None:
    flows, streams = analysis.flows, analysis.streams
    counts = analysis.summary["counts"]
    assert isinstance(counts, dict)
    console.print(f"[bold]{counts['packets']:,}[/] packets, [bold]{len(flows):,}[/] flows, "
                  f"[bold]{len(streams):,}[/] RTP streams")
    captures = analysis.summary["captures"]
    assert isinstance(captures, list)
    for capture in captures:
        damage = capture.get("damage")
        if damage:
            console.print(f"[yellow]damaged:[/] {shown(capture['name'])}: "
                          f"{shown(damage['reason'])} "
                          f"(read up to frame {damage['first_unreadable_frame'] - 1})")
        if capture.get("packets_of_undecoded_link_types"):
            console.print(f"[yellow]not decoded:[/] {shown(capture['name'])}: "
                          f"{capture['packets_of_undecoded_link_types']:,} packets of a link "
                          f"type confscope does not read (link types {capture['link_types']}; "
                          "it reads Ethernet, Linux cooked, raw IP and BSD loopback)")
        if capture.get("flows_with_decode_problems"):
            console.print(f"[yellow]malformed messages:[/] {shown(capture['name'])}: "
                          f"{capture['flows_with_decode_problems']:,} flow(s), see "
                          "decode_problems in flows.csv")
        if capture.get("flows_with_unconfirmed_rtp"):
            console.print(f"[dim]not counted as media:[/] {shown(capture['name'])}: "
                          f"{capture['unconfirmed_rtp_packets']:,} packets in "
                          f"{capture['flows_with_unconfirmed_rtp']:,} flow(s) start like RTP or "
                          "RTCP, but none follows on in sequence and no signalling announced "
                          "them (random bytes do this by chance)")
    if len(flows):
        console.print(_service_table(analysis))
    if len(streams):
        console.print(_stream_table(analysis))
    for finding in [f for f in analysis.findings if f["severity"] in ("high", "medium")][:8]:
        colour = "red" if finding["severity"] == "high" else "yellow"
        console.print(f"[{colour}]{finding['severity']}[/]: {shown(str(finding['title']))}")
    where = f"report: {outdir / 'report.html'}" if report else f"tables written to {outdir}/"
    console.print(shown(where), soft_wrap=True)  # (a path cut in two cannot be pasted)


def _service_table(analysis: Analysis) -> Table:
    flows = analysis.flows
    guessed = flows["service_basis"] == "port"
    any_guess = bool(guessed.any())
    table = Table(title="Flows by service", title_justify="left", caption_justify="left",
                  caption="by port only: attributed by the port number alone, a guess"
                  if any_guess else None)
    columns = ("service", "flows", "by port only", "bytes", "servers (names)")
    for column in columns if any_guess else columns[:2] + columns[3:]:
        table.add_column(column)
    for service, group in flows.groupby("service"):
        names = sorted(n for n in distinct_texts(group["server_name"]) if n)[:3]
        count = int(guessed[group.index].sum())
        cells = [shown(str(service)), f"{len(group):,}",
                 f"{int(group['bytes_c2s'].sum() + group['bytes_s2c'].sum()):,}",
                 shown(", ".join(names))]
        if any_guess:
            cells.insert(2, f"{count:,}" if count else "")
        table.add_row(*cells)
    return table


def _stream_table(analysis: Analysis, limit: int = 12) -> Table:
    table = Table(title="RTP streams (largest first)", title_justify="left")
    for column in ("from", "to", "ssrc", "media", "packets", "lost %", "jitter ms"):
        table.add_column(column, no_wrap=column in ("ssrc", "packets"))
    streams = analysis.streams.sort_values("packets", ascending=False).head(limit)
    for row in streams.itertuples():
        jitter = ("-" if _missing(row.jitter_mean_ms)
                  else f"{row.jitter_mean_ms:.2f}/{row.jitter_max_ms:.2f}")
        table.add_row(shown(f"{row.src_ip}:{row.src_port}"),
                      shown(f"{row.dst_ip}:{row.dst_port}"),
                      row.ssrc, shown(str(row.media)), f"{row.packets:,}",
                      f"{row.loss_pct:.1f}", jitter)
    return table


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
