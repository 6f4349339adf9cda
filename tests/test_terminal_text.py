"""Text from a capture reaches the terminal as text: escape sequences in a server name must not
retitle, clear or recolour the user's terminal, nor rich's markup style it."""

from __future__ import annotations

import io
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from analyzer.printable import printable
from analyzer.terminal import AFTER_READING, progress_bar, shown
from bench.handshakes import tls_client_hello
from bench.many_flows import ETHERNET, ipv4_packet, transport_segment, write_capture
from bench.wire import PROTO_TCP, TCP_ACK_FLAG, TCP_PSH, TCP_SYN

ROOT = Path(__file__).resolve().parents[1]
HOSTILE_NAME = "evil\x1b]0;pwned\x07\x1b[2J[bold]x[/bold]\x9b31m.example"


def test_control_characters_are_shown_not_sent() -> None:
    text = shown(HOSTILE_NAME)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text)
    assert "\\x1b]0;pwned\\x07\\x1b" in text and "\\x9b31m" in text
    assert "\\[bold]" in text  # rich's markup escaped
    assert shown("zoom.us 10.0.0.1:443") == "zoom.us 10.0.0.1:443"
    assert printable(HOSTILE_NAME) == ("evil\\x1b]0;pwned\\x07\\x1b[2J[bold]x[/bold]"
                                       "\\x9b31m.example")


def _capture_with_sni(path: Path, sni: str) -> None:
    client, server = bytes([10, 0, 0, 2]), bytes([52, 81, 151, 250])
    hello = tls_client_hello(sni, lambda n: bytes(n))
    out, back = (client, server, PROTO_TCP, 40000, 443), (server, client, PROTO_TCP, 443, 40000)
    packets = [(*out, b"", TCP_SYN, 1, 0), (*back, b"", TCP_SYN | TCP_ACK_FLAG, 9, 2),
               (*out, b"", TCP_ACK_FLAG, 2, 10), (*out, hello, TCP_ACK_FLAG | TCP_PSH, 2, 10)]
    with path.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, packet in enumerate(packets):
            frame = ETHERNET + ipv4_packet(packet[0], packet[1], PROTO_TCP, i,
                                           transport_segment(packet))
            f.write(struct.pack("<IIII", 1_715_691_600, i, len(frame), len(frame)) + frame)


def test_a_hostile_sni_in_the_terminal_summary(tmp_path: Path) -> None:
    capture = tmp_path / "hostile.pcap"
    _capture_with_sni(capture, HOSTILE_NAME)
    result = subprocess.run([sys.executable, "-m", "analyzer.cli", "analyze", str(capture),
                             "-o", str(tmp_path / "out"), "--no-report", "--no-hash"],
                            cwd=ROOT, capture_output=True, timeout=120, check=True,
                            env={**os.environ, "COLUMNS": "300"})  # (one line per row)
    shown_name = "evil\\x1b]0;pwned\\x07\\x1b[2J[bold]x[/bold]\\x9b31m.example"
    assert shown_name.encode() in result.stdout  # the name is there, as text
    assert b"\x1b]0;" not in result.stdout and b"\x1b[2J" not in result.stdout
    assert "\x9b".encode() not in result.stdout


def test_a_hostile_sni_in_check_text(tmp_path: Path) -> None:
    capture = tmp_path / "hostile.pcap"
    _capture_with_sni(capture, HOSTILE_NAME)  # to 52.81.151.250: CN by the registry
    result = subprocess.run([sys.executable, "-m", "analyzer.cli", "check", str(capture),
                             "--deny-country", "CN", "--roles", "control,other"],
                            cwd=ROOT, capture_output=True, timeout=120)
    assert result.returncode == 1, result.stderr  # the claim breaks: the server is listed
    assert b"BREAKS  52.81.151.250" in result.stdout
    assert printable(HOSTILE_NAME).encode() in result.stdout
    assert b"\x1b" not in result.stdout and "\x9b".encode() not in result.stdout


def test_counts_in_the_terminal_summary_have_thousands_separators(tmp_path: Path) -> None:
    capture = tmp_path / "busy.pcap"
    packets = write_capture(capture, flows=1200, seed=3)
    result = subprocess.run([sys.executable, "-m", "analyzer.cli", "analyze", str(capture),
                             "-o", str(tmp_path / "out"), "--no-report", "--no-hash"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
                            env={**os.environ, "COLUMNS": "300"})
    assert f"{packets:,} packets, 1,200 flows, 0 RTP streams" in result.stdout
    assert re.search(r"│ other +│ 1,\d{3} +│", result.stdout), result.stdout


def _bar_output(read: int, total: int) -> str:
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    with progress_bar(total, console) as advance:
        advance(read)
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_the_bar_says_what_the_run_does_once_the_capture_is_read() -> None:
    assert AFTER_READING in _bar_output(100, 100)
    assert AFTER_READING not in _bar_output(99, 100) and "reading" in _bar_output(99, 100)
