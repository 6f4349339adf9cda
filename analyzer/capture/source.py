"""Where a capture comes from: a regular file, or a stream that can be read only once.

Standard library only: the command line asks before its heavy imports.
"""

from __future__ import annotations

import stat
from pathlib import Path

STDIN = Path("-")
_STDIN_NAMES = ("/dev/stdin", "/proc/self/fd/0", "/dev/fd/0")


def is_stream(path: Path) -> bool:
    """Whether the capture can be read only once: standard input ("-", /dev/stdin), a FIFO or
    a device, i.e. anything but a regular file."""
    if path == STDIN or str(path) in _STDIN_NAMES:
        return True
    try:
        return not stat.S_ISREG(path.stat().st_mode)
    except (OSError, ValueError):
        return False  # (missing, or a NUL in the path: reported when it is opened)


def capture_name(path: Path) -> str:
    """The capture's name in the tables and the summary."""
    return "stdin" if path == STDIN else path.name
