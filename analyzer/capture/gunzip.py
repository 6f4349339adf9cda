"""gzip captures decompressed by a child process, so decompression and analysis use two cores.

Decompressing is the slow part of reading a `.pcap.gz` (about 9 s for 1.5 GB in zlib, where the
analysis takes about 2 s): in a thread it would hold the GIL half the time; in a child process it
runs beside the analysis. ISA-L's decoder (`isal`, about 1.7x zlib's speed) is used when
installed, else the standard library's.

The decompressed bytes cross over in a ring of shared slots (a memfd, else an unlinked temporary
file, mapped by both processes), not through a pipe: pushing 1.5 GB through a pipe cost about
2 s of system time here, more than the analysis itself. Two pipes carry only 8-byte notes
("slot k holds n bytes", child to parent) and 1-byte credits ("slot k is free again", parent to
child), so the child never overwrites a slot before the parent has copied it out.

A damaged file ends the child's output after the last byte it could decompress; its error
comes back as one line and is raised to the reader, which records the damage, as for a thread.
This module imports only the standard library (and `isal` in the child), so starting the child
costs little.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import mmap
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from collections import deque
from collections.abc import Iterator
from types import ModuleType
from typing import BinaryIO

CHUNK_BYTES = 256 * 1024  # compressed bytes read at a time
PIECE_BYTES = 256 * 1024  # decompressed bytes per step
SLOT_BYTES = 4 * 1024 * 1024  # one shared slot; the parent copies it out in one go
SLOTS = 4  # the child may run this many slots ahead of the parent
MAX_SLOTS = 256  # a credit is one byte: the number of the slot given back
NOTE = struct.Struct("=iI")  # slot (END: no more), bytes in it
END = -1
GZIP_WBITS = 31  # zlib: a gzip member (header and CRC-32/size trailer checked)
GZIP_MAGIC = b"\x1f\x8b"
ENGINE_VARIABLE = "CONFSCOPE_GUNZIP"  # "zlib": the standard library's decoder even with isal
# glibc's malloc gives the heap's top back to the system whenever a piece is freed, so each
# input read and output piece faulted its pages in anew (500,000 faults, 0.5 s of system time
# for 1.5 GB); a padded top is kept instead. Other C libraries ignore the variable.
CHILD_MALLOC = {"MALLOC_TOP_PAD_": str(16 * 1024 * 1024)}


class DecompressionError(OSError):
    """The child stopped on damaged input; `str()` is its one-line reason."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "decompression failed"


class GunzipStream(io.RawIOBase):
    """The decompressed bytes of a gzip file, read from a child process's shared slots."""

    def __init__(self, source: BinaryIO, slot_bytes: int = SLOT_BYTES, slots: int = SLOTS,
                 size: int | None = None) -> None:
        """`source`: the open compressed file; the child reads it from its current offset
        (through the same open file, so /dev/stdin and deleted files work too), up to its
        byte `size` if given (the bytes hashed, of a file still being written)."""
        super().__init__()
        if not 1 <= slots <= MAX_SLOTS or slot_bytes < 1:
            raise ValueError(f"{slots} slots of {slot_bytes} bytes: 1 to {MAX_SLOTS} slots")
        fd = source.fileno()
        os.lseek(fd, source.tell(), os.SEEK_SET)  # a buffered reader may have read ahead
        self._source_fd = fd
        self._slot_bytes, self._slots = slot_bytes, slots
        ring_fd = _shared_ring_fd(slots * slot_bytes)
        try:
            self._ring = mmap.mmap(ring_fd, slots * slot_bytes)
            self._child = subprocess.Popen(  # (a failure leaves the mapping to the collector)
                # -I: the standard library (and site-packages for isal) only, whatever the folder
                [sys.executable, "-I", __file__, str(fd), str(ring_fd), str(slot_bytes),
                 str(slots), str(-1 if size is None else size)], bufsize=0,
                pass_fds=(fd, ring_fd), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env={**os.environ, **CHILD_MALLOC},
            )
        finally:
            os.close(ring_fd)  # the mapping and the child keep what they need
        assert self._child.stdin is not None and self._child.stdout is not None
        self._notes, self._credits = self._child.stdout.fileno(), self._child.stdin.fileno()
        self._view = memoryview(self._ring)
        self._slot, self._at, self._left = END, 0, 0
        self._problem: DecompressionError | None = None
        self._ended = False

    @property
    def pid(self) -> int:
        """The decompressing child's process id."""
        return int(self._child.pid)

    def source_position(self) -> int:
        """How far the child has read the compressed file (they share its file offset); -1
        for a pipe."""
        try:
            return os.lseek(self._source_fd, 0, os.SEEK_CUR)
        except OSError:
            return -1

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        if self._left == 0 and not self._next_slot():
            return self._end()
        size = min(len(buffer), self._left)
        memoryview(buffer)[:size] = self._view[self._at : self._at + size]
        self._at, self._left = self._at + size, self._left - size
        if self._left == 0:
            self._free(self._slot)
        return size

    def _next_slot(self) -> bool:
        """Wait for the child's next full slot; False at the end of its output."""
        if self._ended:
            return False
        note = _read_exactly(self._notes, NOTE.size)
        slot, size = NOTE.unpack(note) if len(note) == NOTE.size else (END, 0)
        if not 0 <= slot < self._slots or not 0 < size <= self._slot_bytes:  # END, or cut short
            self._ended = True
            return False
        self._slot, self._at, self._left = slot, slot * self._slot_bytes, size
        return True

    def _free(self, slot: int) -> None:
        with contextlib.suppress(BrokenPipeError):  # the child has finished: it needs no room
            os.write(self._credits, bytes([slot]))

    def _end(self) -> int:
        """After the child's last slot: its reason when it stopped on damage, else 0."""
        if self._problem is None and self._child.returncode is None:
            problem = self._child.stderr.read() if self._child.stderr else b""
            if self._child.wait() != 0:
                text = problem.decode("utf-8", "replace").strip().splitlines()
                reason = text[-1] if text else f"exit code {self._child.returncode}"
                self._problem = DecompressionError(reason)
        if self._problem is not None:
            raise self._problem
        return 0

    def close(self) -> None:
        if not self.closed and hasattr(self, "_view"):  # (not when __init__ failed)
            if self._child.poll() is None:
                self._child.kill()
            self._child.communicate()
            self._view.release()
            self._ring.close()
        super().close()


def open_gunzip(source: BinaryIO, size: int | None = None) -> io.BufferedReader:
    return io.BufferedReader(GunzipStream(source, size=size), buffer_size=CHUNK_BYTES)


def _shared_ring_fd(size: int) -> int:
    """A file descriptor of `size` bytes both processes can map: anonymous memory where the
    system has memfd (Linux), else an already unlinked temporary file."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("confscope-gunzip", getattr(os, "MFD_CLOEXEC", 0))
    else:
        fd, name = tempfile.mkstemp(prefix="confscope-gunzip-")
        os.unlink(name)
    os.ftruncate(fd, size)
    return fd


def _read_exactly(fd: int, size: int) -> bytes:
    """`size` bytes from a pipe, fewer only at its end."""
    data = b""
    while len(data) < size:
        part = os.read(fd, size - len(data))
        if not part:
            break
        data += part
    return data


class _RingWriter:
    """Child side: decompressed bytes into the shared slots, a note for each slot filled, and
    a wait for a credit when every slot is still the parent's."""

    def __init__(self, ring: mmap.mmap, slot_bytes: int, notes: int, credits: int) -> None:
        self._ring, self._slot_bytes = ring, slot_bytes
        self._notes, self._credits = notes, credits
        self._free: deque[int] = deque(range(len(ring) // slot_bytes))
        self._slot, self._fill = END, 0

    def write(self, piece: bytes) -> None:
        view = memoryview(piece)
        while view:
            if self._slot == END:
                self._slot = self._take()
            size = min(self._slot_bytes - self._fill, len(view))
            at = self._slot * self._slot_bytes + self._fill
            self._ring[at : at + size] = view[:size]
            self._fill, view = self._fill + size, view[size:]
            if self._fill == self._slot_bytes:
                self.flush()

    def flush(self) -> None:
        """Hand the slot being filled, if it holds anything, to the parent."""
        if self._slot != END and self._fill:
            os.write(self._notes, NOTE.pack(self._slot, self._fill))
            self._slot, self._fill = END, 0

    def end(self) -> None:
        os.write(self._notes, NOTE.pack(END, 0))

    def _take(self) -> int:
        while not self._free:
            credits = os.read(self._credits, 256)
            if not credits:
                raise BrokenPipeError("the reader has gone")
            self._free.extend(credits)
        return self._free.popleft()


def _decompress(source_fd: int, ring_fd: int, slot_bytes: int, slots: int, end: int = -1
                ) -> int:
    """Child process: the decompressed bytes into the shared slots, as they come (of the
    source's bytes up to offset `end`, if not negative); on damage, what came before it, then
    the reason on stderr and exit code 1."""
    with mmap.mmap(ring_fd, slots * slot_bytes) as ring:
        writer = _RingWriter(ring, slot_bytes, sys.stdout.fileno(), sys.stdin.fileno())
        try:
            with os.fdopen(source_fd, "rb", buffering=0) as source:
                left = -1 if end < 0 else max(end - os.lseek(source_fd, 0, os.SEEK_CUR), 0)
                for piece in _inflate(source, _zlib_module(), left):
                    writer.write(piece)
            writer.flush()
            writer.end()
        except BrokenPipeError:
            return 0  # the reader stopped early (damage further on, or an interruption)
        except Exception as exc:  # EOFError, BadGzipFile, zlib.error, isal's errors: all damage
            print(f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            with contextlib.suppress(BrokenPipeError):
                writer.flush()
                writer.end()
            return 1
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


def _inflate(source: BinaryIO, engine: ModuleType, left: int = -1) -> Iterator[bytes]:
    """The decompressed bytes of each gzip member in turn (RFC 1952), yielded as soon as they
    are decoded (of the next `left` bytes of `source` only, if not negative); zero padding
    after a member is skipped, as the gzip module does."""
    decoder, members = None, 0  # decoder None: before a member
    while data := source.read(CHUNK_BYTES if left < 0 else min(CHUNK_BYTES, left)):
        left -= len(data) if left > 0 else 0
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
    sys.exit(_decompress(*map(int, sys.argv[1:6])))
