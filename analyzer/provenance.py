"""The SHA-256 of each capture for summary.json, computed on a low-priority thread.

Hashing costs about a second of CPU per 1.5 GB. The hashes start before the pipeline's heavy
imports and run at the lowest scheduling priority, so they fill the time in which the pipeline
leaves a core idle (start-up, table building) instead of competing with it for the cores.
This module imports only the standard library, so starting it costs nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import threading
from collections.abc import Iterable
from pathlib import Path

READ_BYTES = 1024 * 1024  # stays in the L2 cache between the read and the hash
LOWEST_PRIORITY = 19


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    buffer = bytearray(READ_BYTES)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as handle:
        while got := handle.readinto(buffer):
            digest.update(view[:got])
    return digest.hexdigest()


def _lower_this_thread() -> None:
    """Nice 19 for the calling thread only (Linux schedules threads separately)."""
    if sys.platform != "linux":
        return  # elsewhere PRIO_PROCESS with a thread id would name a process
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOWEST_PRIORITY)


class CaptureHashes:
    """Hash captures one after another on a background thread; `digest` waits for one."""

    def __init__(self, paths: Iterable[Path]) -> None:
        self._paths = [Path(p) for p in paths]
        self._done: dict[Path, str | BaseException] = {}
        self._ready = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="confscope-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        _lower_this_thread()
        for path in self._paths:
            try:
                result: str | BaseException = file_sha256(path)
            except OSError as exc:
                result = exc
            with self._ready:
                self._done[path] = result
                self._ready.notify_all()

    def digest(self, path: Path) -> str:
        """The capture's SHA-256 (hex); raises the OSError that stopped it, if any."""
        if Path(path) not in self._paths:
            raise KeyError(f"{path} is not among the captures being hashed")
        with self._ready:
            self._ready.wait_for(lambda: Path(path) in self._done)
            result = self._done[Path(path)]
        if isinstance(result, BaseException):
            raise result
        return result
