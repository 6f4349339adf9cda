"""gzip captures decompressed by a child process, so decompression and analysis use two cores.

Decompressing is the slow part of reading a `.pcap.gz` (about 9 s for 1.5 GB in zlib, where the
analysis takes about 2 s): in a thread it would hold the GIL half the time; in a child process it
runs beside the analysis, which reads the decompressed bytes from a pipe. ISA-L's decoder
(`isal`, about 1.7x zlib's speed) is used when installed, else the standard library's.

A damaged file ends the child's output after the last byte it could decompress; its error
comes back as one line and is raised to the reader, which records the damage, as for a thread.
This module imports only the standard library (and `isal` in the child), so starting the child
costs little.
"""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import zlib
from collections.abc import Iterator
from types import ModuleType
from typing import BinaryIO

CHUNK_BYTES = 256 * 1024  # compressed bytes read at a time
PIPE_BYTES = 1 << 20  # a bigger pipe: fewer switches between the two processes
PIECE_BYTES = 256 * 1024  # decompressed bytes per step
GZIP_WBITS = 31  # zlib: a gzip member (header and CRC-32/size trailer checked)
GZIP_MAGIC = b"\x1f\x8b"
ENGINE_VARIABLE = "CONFSCOPE_GUNZIP"  # "zlib": the standard library's decoder even with isal


class DecompressionError(OSError):
    """The child stopped on damaged input; `str()` is its one-line reason."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "decompression failed"


class GunzipStream(io.RawIOBase):
    """The decompressed bytes of a gzip file, read from a child process."""

    def __init__(self, source: BinaryIO) -> None:
        """`source`: the open compressed file; the child reads it from its current offset
        (through the same open file, so /dev/stdin and deleted files work too)."""
        super().__init__()
        fd = source.fileno()
        os.lseek(fd, source.tell(), os.SEEK_SET)  # a buffered reader may have read ahead
        self._child = subprocess.Popen(
            # -I: the standard library (and site-packages for isal) only, whatever the folder
            [sys.executable, "-I", __file__, str(fd)], bufsize=0, pass_fds=(fd,),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        assert self._child.stdout is not None
        self._pipe = self._child.stdout
        _widen_pipe(self._pipe.fileno())

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        got = self._pipe.readinto(buffer)  # type: ignore[attr-defined]
        if got:
            return got
        problem = self._child.stderr.read() if self._child.stderr else b""
        if self._child.wait() != 0:
            text = problem.decode("utf-8", "replace").strip().splitlines()
            raise DecompressionError(text[-1] if text else f"exit code {self._child.returncode}")
        return 0

    def close(self) -> None:
        if not self.closed:
            if self._child.poll() is None:
                self._child.kill()
            self._child.communicate()
        super().close()


def open_gunzip(source: BinaryIO) -> io.BufferedReader:
    return io.BufferedReader(GunzipStream(source), buffer_size=CHUNK_BYTES)


def _widen_pipe(fd: int) -> None:
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    except (ImportError, OSError):
        pass  # not Linux, or a lower limit: the default pipe works, a little slower


def _decompress(fd: int) -> int:
    """Child process: the decompressed bytes on stdout, as they come; on damage, what came
    before it, then the reason on stderr and exit code 1."""
    out = sys.stdout.buffer
    try:
        with os.fdopen(fd, "rb", buffering=0) as source:
            for piece in _inflate(source, _zlib_module()):
                out.write(piece)
    except BrokenPipeError:
        return 0  # the reader stopped early (damage further on, or an interruption)
    except Exception as exc:  # EOFError, BadGzipFile, zlib.error, isal's errors: all damage
        out.flush()
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    out.flush()
    return 0


def _zlib_module() -> ModuleType:
    """ISA-L's zlib-compatible decoder when installed (and not refused), else zlib."""
    if os.environ.get(ENGINE_VARIABLE, "") != "zlib":
        try:
            from isal import isal_zlib

            return isal_zlib
        except ImportError:
            pass
    return zlib


def _inflate(source: BinaryIO, engine: ModuleType) -> Iterator[bytes]:
    """The decompressed bytes of each gzip member in turn (RFC 1952), yielded as soon as they
    are decoded; zero padding after a member is skipped, as the gzip module does."""
    decoder, members = None, 0  # decoder None: before a member
    while data := source.read(CHUNK_BYTES):
        while data:
            if decoder is None:
                data = data.lstrip(b"\0") if members else data
                if not data:
                    break
                if not GZIP_MAGIC.startswith(data[:2]):
                    raise gzip.BadGzipFile(f"Not a gzipped file ({data[:2]!r})")
                decoder = engine.decompressobj(GZIP_WBITS)
            # bounded output: damage further on in `data` loses nothing decoded before it
            yield decoder.decompress(data, PIECE_BYTES)
            if decoder.eof:
                data, decoder, members = decoder.unused_data, None, members + 1
            else:
                data = decoder.unconsumed_tail
    if decoder is not None:
        raise EOFError("Compressed file ended before the end-of-stream marker was reached")


if __name__ == "__main__":
    sys.exit(_decompress(int(sys.argv[1])))
