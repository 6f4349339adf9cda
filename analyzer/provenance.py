"""The SHA-256 of each capture for summary.json, computed by a low-priority child process.

Hashing costs about 0.9 s of CPU per 1.5 GB. The hashes start before the pipeline's heavy
imports, in a process at the lowest scheduling priority, so they fill the time in which the
pipeline leaves a core idle (start-up, table building) instead of competing with it. A process
and not a thread: a low-priority thread that is preempted while it holds the GIL stalls the
pipeline's threads (measured: +0.65 s on the 2M-packet benchmark, against +0.2 s this way).
On Linux the child also takes the SCHED_IDLE policy: a pipeline thread that wakes (a GIL
hand-over) then preempts it at once instead of after the scheduler's wake-up granularity, which
saves about 0.08 s more on that benchmark. Like nice 19, SCHED_IDLE is a small weight, not a
strict priority: on a machine saturated by other work the hash still progresses, slowly.
This module imports only the standard library, so starting it costs nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import mmap
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

READ_BYTES = 1024 * 1024  # stays in the L2 cache between the read and the hash
# a mapped window at a time: hashing the page cache in place, without copying it into a
# buffer first, saves 0.1-0.15 s of CPU per 1.5 GB; unmapping each keeps the RSS at a window
MAP_BYTES = 16 * 1024 * 1024
LOWEST_PRIORITY = 19
ERROR_PREFIX = "error: "


def file_sha256(path: Path, window: int = MAP_BYTES, size: int | None = None) -> str:
    """The file's SHA-256: of its mapped windows when it is a regular file the system maps,
    else of what reading it to the end gives. A regular file is hashed up to `size` bytes
    (`snapshot_size`: the bytes `CaptureReader` is told to analyze) or, without one, up to
    the size it has when hashing starts; OSError when it no longer has `size` bytes."""
    digest = hashlib.sha256()
    with path.open("rb", buffering=0) as handle:
        if not _hash_mapped(handle.fileno(), digest, window, size):
            _hash_read(handle, digest, size)
    return digest.hexdigest()


def snapshot_size(path: Path) -> int | None:
    """The bytes of a regular file to hash and analyze: its size now, so that a file still
    being written (tcpdump -w) is hashed and analyzed up to the same byte; None for others."""
    try:
        info = path.stat()
    except OSError:
        return None  # (the child reports why it cannot hash it)
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def _hash_mapped(fd: int, digest: hashlib._Hash, window: int, size: int | None) -> bool:
    """Hash the regular file `fd` window by window, up to `size` bytes if given; False when it
    cannot be mapped (then nothing was hashed). A window that cannot be mapped after the first
    raises OSError."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
        return False
    if size is not None and info.st_size < size:
        raise OSError(f"the file shrank from {size:,} to {info.st_size:,} bytes before it "
                      "was hashed; analyze a copy that nothing writes to")
    end = info.st_size if size is None else size
    for offset in range(0, end, window):
        try:
            mapped = mmap.mmap(fd, min(window, end - offset), access=mmap.ACCESS_READ,
                               offset=offset)
        except (OSError, ValueError):
            if offset:
                raise
            return False
        with mapped:
            digest.update(mapped)
    return True


def _hash_read(handle: io.FileIO, digest: hashlib._Hash, size: int | None) -> None:
    buffer = bytearray(READ_BYTES)
    view = memoryview(buffer)
    left = -1 if size is None else size
    while left and (got := handle.readinto(view if left < 0 else view[: min(left, len(view))])):
        digest.update(view[:got])
        left -= got if left > 0 else 0
    if left > 0:
        raise OSError(f"the file shrank below {size:,} bytes while it was hashed; analyze a "
                      "copy that nothing writes to")


class CaptureHashes:
    """Hash captures one after another in a child process; `digest` waits for the results."""

    def __init__(self, paths: Iterable[Path]) -> None:
        self._paths = [Path(p) for p in paths]
        self._sizes = {p: snapshot_size(p) for p in self._paths}
        self._results: dict[Path, str] | None = None
        self._child = subprocess.Popen(
            # -I: the standard library only, whatever the environment or the working folder
            [sys.executable, "-I", __file__,
             *(arg for p in self._paths for arg in (str(p), str(self._sizes[p]).lower()))],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, encoding="utf-8",
        ) if self._paths else None

    def size(self, path: Path) -> int | None:
        """The bytes of `path` being hashed (`snapshot_size`): the bytes to analyze, so that
        the SHA-256 is of them; None for a file that is not regular, or not among these."""
        return self._sizes.get(Path(path))

    def digest(self, path: Path) -> str:
        """The capture's SHA-256 (hex); raises OSError when it could not be read."""
        if Path(path) not in self._paths:
            raise KeyError(f"{path} is not among the captures being hashed")
        line = self._collect()[Path(path)]
        if line.startswith(ERROR_PREFIX):
            raise OSError(f"{path}: cannot hash ({line.removeprefix(ERROR_PREFIX)})")
        return line

    def close(self) -> None:
        """Stop hashing (the analysis failed or was interrupted): no orphan keeps reading."""
        if self._child is not None and self._child.poll() is None:
            self._child.kill()
            self._child.communicate()

    def _collect(self) -> dict[Path, str]:
        if self._results is None:
            out = self._child.communicate()[0] if self._child is not None else ""
            lines = out.splitlines()
            if len(lines) < len(self._paths) and self._child is not None:
                lines.append(ERROR_PREFIX + _why_stopped(self._child.returncode))
            lines += [f"{ERROR_PREFIX}the hashing process stopped early"] * len(self._paths)
            self._results = dict(zip(self._paths, lines, strict=False))
        return self._results


def _why_stopped(returncode: int | None) -> str:
    """Why the hashing child ended before its last line: SIGBUS is a page of a mapped window
    that the file could not give (`CaptureReader` reports what that did to the analysis)."""
    if returncode == -getattr(signal, "SIGBUS", 0):
        return ("the file lost bytes while it was being hashed: it shrank, or a read failed; "
                "analyze a copy that nothing writes to")
    return "the hashing process stopped early"


def main(argv: Sequence[str]) -> int:
    """Child process: one line per capture (given as path and bytes to hash, or "none"),
    its SHA-256 or `error: why`."""
    if hasattr(os, "nice"):
        os.nice(LOWEST_PRIORITY)
    if hasattr(os, "sched_setscheduler"):
        with contextlib.suppress(OSError):  # (a kernel without it keeps nice 19)
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    for arg, size in zip(argv[::2], argv[1::2], strict=True):  # (path, size or "none")
        try:
            print(file_sha256(Path(arg), size=None if size == "none" else int(size)), flush=True)
        except OSError as exc:
            print(f"{ERROR_PREFIX}{exc.strerror or exc}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
