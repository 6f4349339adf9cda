"""Outputs that cannot be written (a full disk; here the file size limit, which fails writes
the same way, with EFBIG): one line naming the file, exit status 2, nothing half written, and
what was already there kept."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cli import assert_one_line_error

resource = pytest.importorskip("resource")
ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "captures" / "zoom_meeting.pcap"
TABLES = ("flows", "streams", "servers", "signalling", "timeline", "coverage", "findings")


def _run(limit: int | None, *args: str | Path) -> subprocess.CompletedProcess[str]:
    def limited() -> None:  # (Python ignores SIGXFSZ: a write past the limit fails with EFBIG)
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, "-m", "analyzer.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          preexec_fn=limited)


@pytest.fixture(scope="module")
def sizes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    """The size of each output of the sample's analysis, written without a limit."""
    out = tmp_path_factory.mktemp("unlimited") / "out"
    done = _run(None, "analyze", SAMPLE, "-o", out, "--no-hash", "-q")
    assert done.returncode == 0, done.stderr
    return {path.name: path.stat().st_size for path in out.iterdir()}


def test_a_table_that_cannot_be_written_leaves_the_old_outputs(tmp_path: Path,
                                                               sizes: dict[str, int]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text('{"earlier": "analysis"}\n')
    largest = max((n for n in sizes if n.endswith((".csv", ".parquet"))), key=sizes.__getitem__)
    done = _run(sizes[largest] - 1, "analyze", SAMPLE, "-o", out, "--no-hash", "-q")
    assert_one_line_error(done, f"{out}: cannot write ", "(File too large)")
    failed = done.stderr.split("cannot write ")[1].split(" ")[0]
    assert sizes[failed] >= sizes[largest]  # the file named is one that does not fit
    assert [p.name for p in out.iterdir()] == ["summary.json"]  # no staging folder left
    assert json.loads((out / "summary.json").read_text()) == {"earlier": "analysis"}


def test_a_report_that_cannot_be_written_keeps_the_tables(tmp_path: Path,
                                                          sizes: dict[str, int]) -> None:
    out = tmp_path / "out"
    tables = max(size for name, size in sizes.items() if name != "report.html")
    assert sizes["report.html"] > tables + 1
    done = _run(tables + 1, "analyze", SAMPLE, "-o", out, "--no-hash", "-q")
    assert_one_line_error(done, f"{out / 'report.html'}: File too large",
                          f"the tables are written: 'confscope report {out}'")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{t}.{kind}" for t in TABLES for kind in ("csv", "parquet")]
        + ["summary.json", "findings.json"])
    again = _run(None, "report", out)
    assert again.returncode == 0, again.stderr
    assert (out / "report.html").stat().st_size == sizes["report.html"]
