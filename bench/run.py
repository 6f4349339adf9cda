"""Time confscope against its peers on one capture and write docs/benchmarks.md.

    python -m bench.run CAPTURE [--runs 5] [--jobs N] [--out docs/benchmarks.md]
    python -m bench.run [CAPTURE] --memory-check [--big-capture PATH] [--big-size 10G]
                        [--long-hours 12,60]
    python -m bench.run CAPTURE --formats [--runs 5] [--jobs N]

Each tool runs once untimed (warm page cache), then the tools take turns, run by run
(A B C D A B C D ...). Wall time is taken around the child; CPU time (user + sys) and peak RSS
come from the child's own resource usage (os.wait4). Because confscope may fork workers, the
summed RSS of the child's process tree is also sampled from /proc every 50 ms.

With --memory-check only the memory check runs: confscope once on a big capture (made on demand,
deleted afterwards) and, for comparison, once on CAPTURE if given; then once on each of the
long captures of small packets (`bench.long_capture`, --long-hours, made and deleted likewise).
With --formats, confscope alone, in turns, on CAPTURE and on the same packets as pcapng and as
gzip-compressed pcap (made with CAPTURE's generator arguments, deleted afterwards). The timing,
the memory check and the formats check each rewrite their own section of the output file.
"""

from __future__ import annotations

import argparse
import compileall
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "benchmarks.md"
WORK = ROOT / "bench" / "work"
PAGE = os.sysconf("SC_PAGE_SIZE")
SAMPLE_S = 0.05
MB = 1e6
MEMORY_LIMIT = 1 << 30  # the target: peak RSS below 1 GiB
OUTPUT_PLACEHOLDER = "OUTDIR"


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    argv: Callable[[Path, Path, int], list[str]]  # capture, scratch dir, jobs -> command
    stdout_to: str = os.devnull

    def command(self, capture: Path, jobs: int) -> list[str]:
        """The command as shown in the report (the program by its name)."""
        argv = self.argv(capture, Path(OUTPUT_PLACEHOLDER), jobs)
        return [Path(argv[0]).name, *argv[1:]]

    def program(self, capture: Path, jobs: int) -> str:
        return self.argv(capture, Path(OUTPUT_PLACEHOLDER), jobs)[0]


def confscope_program() -> str:
    """The confscope script installed beside this interpreter, as a venv or pipx puts it on
    PATH. A version manager's shim found first on PATH (pyenv's is a bash script that runs
    pyenv, which then runs the script) would add about 0.06 s per start that is not
    confscope's; the peers run straight from /usr/bin."""
    beside = Path(sys.executable).with_name("confscope")
    return str(beside) if os.access(beside, os.X_OK) else "confscope"


def confscope_argv(capture: Path, out: Path, jobs: int) -> list[str]:
    return [confscope_program(), "analyze", str(capture), "-o", str(out), "--no-report", "--jobs",
            str(jobs)]


NO_HASH = "confscope --no-hash"  # the same analysis, without the SHA-256 for summary.json

TOOLS = (
    Tool("confscope", confscope_argv),
    Tool(NO_HASH, lambda c, o, j: [*confscope_argv(c, o, j), "--no-hash"]),
    Tool("ndpiReader", lambda c, _o, _j: ["ndpiReader", "-q", "-i", str(c)]),
    Tool("tshark", lambda c, _o, _j: ["tshark", "-q", "-r", str(c), "--enable-heuristic",
                                       "rtp_udp", "-z", "rtp,streams"]),
    Tool("cat", lambda c, _o, _j: ["cat", str(c)]),
)


@dataclass(frozen=True, slots=True)
class Sample:
    wall_s: float
    cpu_s: float
    maxrss: int  # bytes, largest single process (ru_maxrss)
    tree_rss: int  # bytes, largest sampled sum over the process tree
    exit_code: int


@dataclass
class Result:
    tool: Tool
    available: bool = True
    note: str = ""
    samples: list[Sample] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return statistics.median(getattr(s, attr) for s in self.samples)


# --- measuring one run ---------------------------------------------------------------------


def tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants (0 once gone)."""
    total, pending = 0, [pid]
    while pending:
        p = pending.pop()
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * PAGE
            for task in Path(f"/proc/{p}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(SAMPLE_S):
            self.peak = max(self.peak, tree_rss(self.pid))


def own_peak_rss() -> int:
    """This process's peak RSS: Linux carries it over into a spawned child's ru_maxrss, so it is
    the least value ru_maxrss can show."""
    status = Path("/proc/self/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0


def measure(argv: Sequence[str], stdout: str, stderr: str) -> Sample:
    """Run argv to completion; wall clock around it, rusage of the child from wait4."""
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
        (os.POSIX_SPAWN_OPEN, 2, stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
    ]
    start = time.perf_counter()
    pid = os.posix_spawnp(argv[0], list(argv), dict(os.environ), file_actions=actions)
    sampler = RssSampler(pid)
    sampler.start()
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    sampler.stop.set()
    sampler.join()
    maxrss = usage.ru_maxrss * 1024  # kilobytes on Linux
    return Sample(wall, usage.ru_utime + usage.ru_stime, maxrss, max(sampler.peak, maxrss),
                  os.waitstatus_to_exitcode(status))


def run_tool(tool: Tool, capture: Path, jobs: int, log: Path) -> Sample:
    """One run in a fresh scratch folder; stderr goes to `log`."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{tool.name}-") as scratch:
        argv = tool.argv(capture, Path(scratch) / "out", jobs)
        return measure(argv, tool.stdout_to, str(log))


# --- the timing session --------------------------------------------------------------------


def warm_up(tool: Tool, capture: Path, jobs: int, logs: Path) -> Result:
    """Untimed first run: fills the page cache and tells whether the tool works here."""
    if shutil.which(tool.program(capture, jobs)) is None:
        return Result(tool, False, "not installed")
    log = logs / f"{tool.name}.stderr"
    sample = run_tool(tool, capture, jobs, log)
    if sample.exit_code != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        return Result(tool, False, f"exit {sample.exit_code}: {tail[0][:160]}")
    return Result(tool)


def time_tools(capture: Path, runs: int, jobs: int, tools: Sequence[Tool]) -> list[Result]:
    return time_in_turns([(tool, capture) for tool in tools], runs, jobs)


def time_in_turns(entries: Sequence[tuple[Tool, Path]], runs: int, jobs: int) -> list[Result]:
    """Each (tool, capture) once untimed, then all of them in turn, `runs` rounds."""
    with tempfile.TemporaryDirectory(prefix="bench-logs-") as tmp:
        logs = Path(tmp)
        results = [warm_up(tool, capture, jobs, logs) for tool, capture in entries]
        for run in range(runs):
            for result, (tool, capture) in zip(results, entries, strict=True):
                if result.available:
                    sample = run_tool(tool, capture, jobs, logs / f"{tool.name}.stderr")
                    result.samples.append(sample)
                    print(f"run {run + 1}/{runs} {tool.name}: {sample.wall_s:.2f} s",
                          file=sys.stderr)
    return results


# --- describing the machine and the capture ------------------------------------------------


def first_line(argv: Sequence[str], pattern: str = r".+") -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    match = re.search(pattern, out.stdout + out.stderr)
    return match.group(0).strip() if match else "unknown"


def proc_field(path: str, key: str) -> str:
    try:
        text = Path(path).read_text()
    except OSError:
        return "unknown"
    match = re.search(rf"^{key}\s*[:=]\s*\"?(.+?)\"?$", text, re.MULTILINE)
    return match.group(1) if match else "unknown"


def machine() -> dict[str, str]:
    mem_kb = proc_field("/proc/meminfo", "MemTotal").split()[0]
    return {
        "CPU": proc_field("/proc/cpuinfo", "model name"),
        "cores": str(os.cpu_count()),
        "RAM": f"{int(mem_kb) / 2**20:.1f} GiB" if mem_kb.isdigit() else "unknown",
        "OS": f"{proc_field('/etc/os-release', 'PRETTY_NAME')}, Linux {platform.release()}",
        "Python": platform.python_version(),
        "numpy": metadata.version("numpy"),
        "confscope": first_line([confscope_program(), "--version"]),
        "confscope install": confscope_install(),
        "tshark": first_line(["tshark", "--version"], r"TShark \(Wireshark\) \S+"),
        "nDPI": first_line(["ndpiReader", "-h"], r"nDPI \S+"),
    }


def in_venv() -> bool:
    return sys.prefix != sys.base_prefix


def confscope_install() -> str:
    """How the timed confscope is installed. Its start-up depends on it: an editable install
    consults its finder on every import, and the `.pth` files of a shared site-packages run
    at every start (about 0.13 s a run on the 2M capture: bench/README.md)."""
    if not os.access(Path(sys.executable).with_name("confscope"), os.X_OK):
        return "the confscope found on PATH (its install not inspected)"
    found = [d for d in metadata.distributions(path=[str(site_packages())])
             if d.metadata["Name"] == "confscope"]  # (not a build's egg-info in the checkout)
    if not found:
        return "unknown (no confscope distribution in this interpreter's site-packages)"
    direct = found[0].read_text("direct_url.json") or "{}"
    editable = bool(json.loads(direct).get("dir_info", {}).get("editable"))
    where = "a virtual environment" if in_venv() else f"the site-packages of {sys.prefix}"
    startup_files = sorted(p.name for p in site_packages().glob("*.pth"))
    return (f"{'editable' if editable else 'regular'} (`pip install {'-e ' if editable else ''}.`) "
            f"in {where}; .pth files run at start: {', '.join(startup_files) or 'none'}")


def site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def capture_info(capture: Path) -> dict:
    """The generator's summary (CAPTURE.json) if present, else packet count from capinfos."""
    summary = capture.with_name(capture.name + ".json")
    if summary.exists():
        return dict(json.loads(summary.read_text()))
    packets = first_line(["capinfos", "-M", "-c", str(capture)], r"(?<=Number of packets:)\s*\d+")
    return {"packets": int(packets) if packets.isdigit() else 0,
            "bytes": capture.stat().st_size, "mix": {}}


# --- the report ----------------------------------------------------------------------------


def fmt_mb(n: float) -> str:
    return f"{n / MB:,.0f}"


def results_table(results: list[Result], packets: int) -> list[str]:
    rows = ["| tool | wall, median (s) | wall, min-max (s) | CPU user+sys (s) | peak RSS (MB) "
            "| tree RSS (MB) | packets/s | runs |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if not r.available:
            rows.append(f"| {r.tool.name} | not available ({r.note}) | | | | | | 0 |")
            continue
        rows.append(
            f"| {r.tool.name} | {wall_cells(r)} | {fmt_mb(r.median('maxrss'))} "
            f"| {fmt_mb(r.median('tree_rss'))} | {packets / r.median('wall_s'):,.0f} "
            f"| {len(r.samples)} |"
        )
    return rows


def wall_cells(r: Result) -> str:
    """Wall median, wall min-max and CPU median, as table cells."""
    walls = [s.wall_s for s in r.samples]
    return (f"{r.median('wall_s'):.2f} | {min(walls):.2f}-{max(walls):.2f} "
            f"| {r.median('cpu_s'):.2f}")


def ratio_lines(results: list[Result]) -> list[str]:
    by_name = {r.tool.name: r for r in results if r.available and r.samples}
    ours = by_name.get("confscope")
    if ours is None:
        return ["confscope was not timed (not available or not selected), so no ratios."]
    lines = []
    for peer, target in (("tshark", "target >= 5x, later 10x"), ("ndpiReader", "target > 1x")):
        if peer in by_name:
            ratio = by_name[peer].median("wall_s") / ours.median("wall_s")
            lines.append(f"* {peer} / confscope wall time: **{ratio:.2f}x** ({target})")
            if NO_HASH in by_name:
                bare = by_name[peer].median("wall_s") / by_name[NO_HASH].median("wall_s")
                lines.append(f"  * without the capture's SHA-256 (`{NO_HASH}`): {bare:.2f}x")
    rss = ours.median("tree_rss")
    verdict = "below" if rss < MEMORY_LIMIT else "ABOVE"
    lines.append(f"* confscope peak RSS (process tree): {fmt_mb(rss)} MB, {verdict} the 1 GiB "
                 "target")
    return lines


def command_lines(capture: Path, jobs: int, runs: int) -> list[str]:
    venv = ["python3 -m venv VENV && VENV/bin/pip install .  # confscope as the README installs it"]
    runner = "VENV/bin/python" if in_venv() else "python"
    lines = ["```sh", f"python -m bench.make_capture {shlex.quote(str(capture))} "
             f"{generator_args(capture)}", *(venv if in_venv() else []),
             f"{runner} -m bench.run {shlex.quote(str(capture))} --runs {runs} --jobs {jobs}",
             "# each timed command (OUTDIR: a fresh temporary folder per run):"]
    lines += [shlex.join(t.command(capture, jobs))
              + ("" if t.name.startswith("confscope") else " > /dev/null") for t in TOOLS]
    return [*lines, "```"]


def generator_args(capture: Path) -> str:
    info = capture_info(capture)
    if "seed" not in info:
        return "# (capture not made by bench.make_capture)"
    return (f"--packets {info['packets']} --format {info['file_format']} --seed {info['seed']} "
            f"--calls {info['calls']}" + (" --gzip" if info.get("gzip") else ""))


def capture_lines(capture: Path, info: dict) -> list[str]:
    lines = [f"* file: `{capture.name}`, {info.get('packets', 0):,} packets, "
             f"{capture.stat().st_size / MB:,.0f} MB on disk"]
    if "duration_s" in info:
        lines.append(f"* {info['duration_s']:.1f} s of traffic, {info['calls']} concurrent calls "
                     f"(seed {info['seed']}); calls seen: " + ", ".join(
                         f"{k} {v}" for k, v in info.get("sessions", {}).items()))
    mix = info.get("mix", {})
    if mix:
        total = sum(mix.values())
        lines.append("* packet mix: " + ", ".join(
            f"{k} {100 * v / total:.1f} %" for k, v in sorted(mix.items(), key=lambda kv: -kv[1])))
    return lines


def timing_section(capture: Path, results: list[Result], runs: int, jobs: int) -> str:
    info = capture_info(capture)
    today = datetime.date.today().isoformat()
    parts = [
        f"## Timing ({today})", "", "### Machine", "",
        *[f"* {k}: {v}" for k, v in machine().items()], "", "### Capture", "",
        *capture_lines(capture, info), "", "### Commands", "", *command_lines(capture, jobs, runs),
        "", f"### Results (medians of {runs} runs, alternating tools, after one warm-up each)",
        "", *results_table(results, int(info.get("packets", 0))), "",
        *ratio_lines(results), "",
        "Wall time is measured around each child; CPU time and peak RSS come from the child's "
        "rusage (`os.wait4`); tree RSS is the largest sum of RSS over the child and its "
        "descendants, sampled every 50 ms. `cat` is the cost of reading the file. Linux carries "
        "the spawning process's peak RSS into the child's `ru_maxrss`, so "
        f"{fmt_mb(own_peak_rss())} MB (the runner's own) is the floor of that column.",
    ]
    return "\n".join(parts)


# --- the memory check ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemoryRun:
    capture: Path
    packets: int
    size: int
    sample: Sample | None
    note: str = ""


def confscope_once(capture: Path, jobs: int) -> MemoryRun:
    info = capture_info(capture)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "confscope.stderr"
        sample = run_tool(TOOLS[0], capture, jobs, log)
        note = ""
        if sample.exit_code != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
            note = f"exit {sample.exit_code}: {tail[0][:160]}"
    ok = sample if sample.exit_code == 0 else None
    return MemoryRun(capture, int(info.get("packets", 0)), capture.stat().st_size, ok, note)


def memory_row(run: MemoryRun) -> str:
    head = f"| `{run.capture.name}` | {run.packets:,} | {run.size / 2**30:.2f} "
    if run.sample is None:
        return head + f"| not available ({run.note}) | | | |"
    s = run.sample
    return head + (f"| {s.wall_s:.1f} | {s.cpu_s:.1f} | {fmt_mb(s.maxrss)} "
                   f"| {fmt_mb(s.tree_rss)} |")


def memory_verdict(runs: list[MemoryRun], which: str = "big capture") -> list[str]:
    big = runs[-1].sample
    if big is None:
        return []
    verdict = "below" if big.tree_rss < MEMORY_LIMIT else "ABOVE"
    lines = [f"* Peak RSS (process tree) on the {which}: {fmt_mb(big.tree_rss)} MB, "
             f"{verdict} the 1 GiB target."]
    small = runs[0].sample
    if len(runs) > 1 and small is not None:
        growth = big.tree_rss / small.tree_rss
        lines.append(f"* Growth from the reference capture ({runs[-1].size / runs[0].size:.1f}x "
                     f"the bytes): **{growth:.2f}x** the peak RSS (target: about 1x).")
    return lines


MEMORY_TABLE = ["| capture | packets | GiB | wall (s) | CPU user+sys (s) | peak RSS (MB) "
                "| tree RSS (MB) |", "|---|---:|---:|---:|---:|---:|---:|"]


def memory_section(runs: list[MemoryRun], generator: str, jobs: int,
                   long_runs: list[MemoryRun] | None = None, long_generator: str = "") -> str:
    today = datetime.date.today().isoformat()
    lines = [
        f"## Memory check ({today})", "",
        f"confscope, `--jobs {jobs}`, run once per capture. The big capture was made on demand "
        f"with `{generator}` and is not kept.", "", *MEMORY_TABLE,
        *[memory_row(r) for r in runs], "", *memory_verdict(runs),
    ]
    if long_runs:
        lines += [
            "", "### Long captures of small packets", "",
            f"Hours of quiet flows, one 60-byte frame per flow a second: memory must not grow "
            f"with a capture's duration or packet count either. Made on demand with "
            f"`{long_generator}` and not kept.", "", *MEMORY_TABLE,
            *[memory_row(r) for r in long_runs], "",
            *memory_verdict(long_runs, "longest capture"),
        ]
    return "\n".join(lines)


def memory_check(big: Path, size: str, jobs: int, keep: bool, reference: Path | None,
                 long_hours: tuple[float, ...] = ()) -> str:
    """confscope once on `reference` (if given) and on a big capture, made here if missing;
    then on long captures of small packets of `long_hours` hours (the first is the reference)."""
    made = not big.exists()
    generator = f"python -m bench.make_capture {big} --size {size}"
    if made:
        big.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "bench.make_capture", str(big), "--size", size],
                       cwd=ROOT, check=True)
    try:
        runs = [confscope_once(c, jobs) for c in (reference, big) if c is not None]
    finally:
        if made and not keep:
            big.unlink(missing_ok=True)
    long_runs = [long_capture_once(big.parent, hours, jobs, keep) for hours in long_hours]
    long_generator = (f"python -m bench.long_capture {big.parent}/long-HOURSh.pcap --hours HOURS"
                      if long_hours else "")
    return memory_section(runs, generator, jobs, long_runs, long_generator)


def long_capture_once(work: Path, hours: float, jobs: int, keep: bool) -> MemoryRun:
    """confscope once on `bench.long_capture`'s capture of `hours` hours (made here)."""
    capture = work / f"long-{hours:g}h.pcap"
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "bench.long_capture", str(capture), "--hours",
                    f"{hours:g}"], cwd=ROOT, check=True, capture_output=True)
    try:
        return confscope_once(capture, jobs)
    finally:
        if not keep:
            capture.unlink(missing_ok=True)


# --- the formats check ---------------------------------------------------------------------


def format_variants(capture: Path) -> list[tuple[str, Path, list[str]]]:
    """(label, path, generator arguments) of the same packets as pcapng and as gzip'd pcap."""
    info = capture_info(capture)
    if "seed" not in info or info.get("file_format") != "pcap" or info.get("gzip"):
        raise SystemExit(f"{capture}: --formats needs an uncompressed pcap made by "
                         "bench.make_capture (its CAPTURE.json gives the arguments)")
    same = ["--packets", str(info["packets"]), "--seed", str(info["seed"]),
            "--calls", str(info["calls"])]
    return [("pcapng", capture.with_suffix(".formats.pcapng"), [*same, "--format", "pcapng"]),
            ("gzip", capture.with_suffix(".formats.pcap.gz"), [*same, "--format", "pcap",
                                                              "--gzip"])]


def formats_section(inputs: list[tuple[str, Path]], results: list[Result], made: list[str],
                    runs: int, jobs: int) -> str:
    rows = ["| input | file (MB) | wall, median (s) | wall, min-max (s) | CPU user+sys (s) "
            "| tree RSS (MB) | runs |", "|---|---:|---:|---:|---:|---:|---:|"]
    for (label, path), r in zip(inputs, results, strict=True):
        size = f"{path.stat().st_size / MB:,.1f}"
        if not r.available or not r.samples:
            rows.append(f"| {label} | {size} | not available ({r.note}) | | | | 0 |")
            continue
        rows.append(f"| {label} | {size} | {wall_cells(r)} | {fmt_mb(r.median('tree_rss'))} "
                    f"| {len(r.samples)} |")
    base = results[0]
    ratios = [f"* {r.tool.name} / pcap wall time: "
              f"**{r.median('wall_s') / base.median('wall_s'):.2f}x**"
              for r in results[1:] if r.available and r.samples and base.samples]
    today = datetime.date.today().isoformat()
    return "\n".join([
        f"## Formats ({today})", "",
        f"confscope `analyze --no-report --jobs {jobs}` on the same packets in three forms, in "
        f"turns, medians of {runs} runs after one warm-up each (`python -m bench.run "
        f"{shlex.quote(str(inputs[0][1]))} --formats --runs {runs} --jobs {jobs}`). Made for "
        "the check and not kept: " + "; ".join(made) + ".", "", *rows, "", *ratios,
    ])


def formats_check(capture: Path, runs: int, jobs: int) -> str:
    variants = format_variants(capture)
    made = []
    try:
        for label, path, args in variants:
            subprocess.run([sys.executable, "-m", "bench.make_capture", str(path), *args],
                           cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
            made.append(f"{label}: `python -m bench.make_capture {path.name} {shlex.join(args)}`")
        inputs = [("pcap", capture), *[(label, path) for label, path, _ in variants]]
        timed = time_in_turns([(Tool(label, TOOLS[0].argv), path) for label, path in inputs],
                              runs, jobs)
        return formats_section(inputs, timed, made, runs, jobs)
    finally:
        for _, path, _ in variants:
            path.unlink(missing_ok=True)
            path.with_name(path.name + ".json").unlink(missing_ok=True)


# --- the output file -----------------------------------------------------------------------

HEADER = """# Benchmarks

Written by `python -m bench.run` (see bench/README.md); do not edit by hand.
Targets: confscope >= 5x (later 10x) faster than `tshark -z rtp,streams`, eventually faster than
`ndpiReader`, with peak RSS < 1 GiB that does not grow with the capture's size.
"""


def write_section(out: Path, name: str, body: str) -> None:
    """Replace (or append) the section between this name's markers, keeping the rest."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = out.read_text() if out.exists() else HEADER
    block = f"{begin}\n{body}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    text = pattern.sub(lambda _m: block, text) if pattern.search(text) else (
        text.rstrip() + "\n\n" + block + "\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("capture", type=Path, nargs="?", help="capture to time the tools on")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--tools", default=",".join(t.name for t in TOOLS),
                        help="comma-separated subset of: " + ", ".join(t.name for t in TOOLS))
    parser.add_argument("--memory-check", action="store_true",
                        help="run confscope once on a big capture and record its peak RSS")
    parser.add_argument("--big-capture", type=Path, default=WORK / "capture-10G.pcap")
    parser.add_argument("--big-size", default="10G")
    parser.add_argument("--keep-big", action="store_true", help="keep a big capture made here")
    parser.add_argument("--long-hours", default="12,60",
                        help="the memory check's long captures of small packets, in hours "
                             "(comma-separated, the first is the reference; '' for none)")
    parser.add_argument("--formats", action="store_true",
                        help="time confscope on CAPTURE as pcap, pcapng and gzip'd pcap")
    args = parser.parse_args(argv)
    if args.capture is None and (args.formats or not args.memory_check):
        parser.error("give a CAPTURE to time, or --memory-check")
    return args


def long_hours(text: str) -> tuple[float, ...]:
    try:
        hours = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise SystemExit(f"--long-hours: not hours: {text!r}") from None
    if any(h <= 0 for h in hours):
        raise SystemExit("--long-hours: hours must be above 0")
    return hours


def compile_bytecode() -> None:
    """Byte-compile confscope's modules, as `pip install` does for an installed tool: an editable
    install run with PYTHONDONTWRITEBYTECODE=1 would compile every module on every run."""
    installed = site_packages() / "analyzer"  # (not the checkout's, on sys.path first here)
    if not installed.is_dir():
        import analyzer

        installed = Path(analyzer.__file__).parent
    compileall.compile_dir(installed, quiet=1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    compile_bytecode()
    install = confscope_install()
    if not install.startswith("regular"):
        print(f"note: timing confscope installed {install.split(';')[0]}: not as the README "
              "installs it, start-up costs more (bench/README.md)", file=sys.stderr)
    if args.formats:
        write_section(args.out, "formats", formats_check(args.capture, args.runs, args.jobs))
    elif args.capture is not None and not args.memory_check:
        wanted = set(args.tools.split(","))
        results = time_tools(args.capture, args.runs, args.jobs,
                             [t for t in TOOLS if t.name in wanted])
        write_section(args.out, "timing", timing_section(args.capture, results, args.runs,
                                                          args.jobs))
    if args.memory_check:
        body = memory_check(args.big_capture, args.big_size, args.jobs, args.keep_big,
                            args.capture, long_hours(args.long_hours))
        write_section(args.out, "memory", body)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
