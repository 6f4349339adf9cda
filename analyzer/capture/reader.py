"""Read pcap, pcapng and gzip-compressed captures as a stream of `PacketBatch`es.

A capture may also come through a pipe: standard input (the path "-"), a FIFO or a device. Such
a stream can be read only once, so it is hashed here as it is read (`CaptureReader(hash_stream=
True)`) instead of by a second reader, and it cannot be gzip (give the .gz file, or zcat into
the pipe).

Memory stays bounded: the file is read in chunks of `chunk_bytes`; a record that straddles two
chunks is carried over. A plain file is mapped instead of read (no copy): batches are views of
the mapping, and the pages of batches already handed on are dropped from the process.
A damaged capture is read up to the damage, which is recorded in `CaptureInfo.damage` rather
than raised.

A mapped file may shrink while it is read (a ring of capture files being rotated, a copy made
over it), and a page of it may fail to be read. The mapping is guarded
(`speedups.guard_mapping`): such pages read as zeros instead of killing the process with
SIGBUS. After each chunk, and in `check_unchanged` once the analysis is done, the reader looks
at the file's size and at the pages that read as zeros, and records the loss as damage: records
past it are dropped before they are handed on or, when some were handed on already, the damage
names the first frame that may have been read in part as zeros. Without the C extension a file
is read, not mapped.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import mmap
import os
import stat
import sys
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np

from analyzer.capture.batch import CaptureInfo, Damage, PacketBatch
from analyzer.capture.formats import (
    MAX_BLOCK,
    PcapngWalker,
    PcapWalker,
    RecordArrays,
    RecordColumns,
    Walker,
    WalkResult,
    sniff_format,
)
from analyzer.capture.gunzip import DecompressionError, GunzipStream, open_gunzip
from analyzer.capture.source import STDIN, is_stream
from analyzer.errors import CaptureFormatError, ConfscopeError
from analyzer.speedups import enabled as can_guard_mappings
from analyzer.speedups import guard_mapping, guarded_faults

DEFAULT_CHUNK_BYTES = 64 * 1024 * 1024
PIPE_BYTES = 1024 * 1024  # Linux's default /proc/sys/fs/pipe-max-size
CARRY_ROOM = MAX_BLOCK + 65_536  # room for the largest record left unfinished by a chunk
MIN_CHUNK_BYTES = 4096
# Packets per batch, at most (about): a batch's columns take some 200 bytes a packet besides its
# bytes, so a chunk of small packets (76-byte records: 880,000 in 64 MiB) would take three times
# the memory of the chunk. Chunks shrink to this many packets of the average size seen so far.
MAX_BATCH_PACKETS = 256 * 1024
FIRST_CHUNK_BYTES = 16 * 1024 * 1024
# batches that may still be read besides the ring's: the one being walked, and those queued for
# media workers (analyzer/mediapool.py QUEUED_BATCHES)
RECENT_BEYOND_RING = 3
GZIP_MAGIC = b"\x1f\x8b"
@contextmanager
def open_capture_stream(path: Path, size: int | None = None
                        ) -> Iterator[tuple[io.BufferedIOBase, str]]:
    """`path` opened for reading, gzip decompressed on the fly (from its first `size` bytes,
    if given); one-line errors otherwise."""
    with ExitStack() as stack:
        raw = stack.enter_context(_open_file(path))
        try:
            seekable = raw.seekable()
            compressed = (raw.read(2) if seekable else raw.peek(2)[:2]) == GZIP_MAGIC
            if seekable:
                raw.seek(0)
        except OSError as exc:
            raise ConfscopeError(f"{path}: cannot read ({exc.strerror or exc})") from None
        if compressed and not seekable:
            raise ConfscopeError(f"{path}: gzip data through a pipe; give the .gz file itself, "
                                 "or decompress into the pipe (zcat FILE.gz | confscope ...)")
        if not compressed:
            yield raw, ""
        else:  # decompressed beside the analysis, by a child process
            yield stack.enter_context(open_gunzip(raw, size)), "gzip"


def _why(exc: BaseException) -> str:
    """A read error in one line (a decompressing child's reason as it gave it)."""
    return str(exc) if isinstance(exc, DecompressionError) else f"{type(exc).__name__}: {exc}"


def _open_file(path: Path) -> io.BufferedReader:
    try:
        raw = _stdin() if path == STDIN else path.open("rb")
        _widen_pipe(raw)
        return raw
    except FileNotFoundError:
        raise ConfscopeError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfscopeError(f"{path}: is a directory, not a capture file") from None
    except OSError as exc:
        raise ConfscopeError(f"{path}: cannot open ({exc.strerror or exc})") from None
    except ValueError as exc:  # e.g. a NUL byte in the path
        raise ConfscopeError(f"{path!r}: not a usable path ({exc})") from None


def _stdin() -> io.BufferedReader:
    """Standard input as a binary stream whose closing leaves file descriptor 0 open."""
    return open(sys.stdin.fileno(), "rb", closefd=False)


def _widen_pipe(raw: io.BufferedReader) -> None:
    """A pipe's buffer at its largest allowed size (Linux: 64 KiB by default, usually up to
    1 MiB): fewer, larger reads and writes on both sides."""
    with contextlib.suppress(ImportError, OSError, AttributeError, ValueError):
        import fcntl  # (POSIX)

        fd = raw.fileno()
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def _map_file(stream: io.BufferedIOBase, size: int | None = None) -> mmap.mmap | None:
    """A read-only mapping of a regular file (of its first `size` bytes at most, if given),
    or None (pipes, special files, no mmap)."""
    try:
        fd = stream.fileno()
        info = os.fstat(fd)
        length = info.st_size if size is None else min(size, info.st_size)
        if not stat.S_ISREG(info.st_mode) or length == 0:
            return None
        mapped = mmap.mmap(fd, length, access=mmap.ACCESS_READ)
    except (OSError, ValueError, io.UnsupportedOperation):
        return None
    if hasattr(mapped, "madvise"):
        mapped.madvise(mmap.MADV_SEQUENTIAL)
    return mapped


def _guarded_map(stream: io.BufferedIOBase, size: int | None
                 ) -> tuple[mmap.mmap, int] | None:
    """`_map_file`, guarded against lost pages (module doc), and its guard's slot; None when
    it cannot be mapped or guarded (the file is read then)."""
    mapped = _map_file(stream, size)
    slot = guard_mapping(mapped) if mapped is not None else None
    if mapped is not None and slot is not None:
        return mapped, slot
    if mapped is not None:
        mapped.close()
    return None


def mappable(path: Path) -> bool:
    """Whether `CaptureReader` will map this file (a plain, non-empty regular file), so that
    other processes may map it too and read the bytes of its batches."""
    if is_stream(path) or not can_guard_mappings():
        return False  # (opening a pipe to look would take bytes from the analysis)
    try:
        with path.open("rb") as raw:
            if raw.read(2) == GZIP_MAGIC:
                return False
            mapped = _map_file(raw)
    except OSError:
        return False
    if mapped is None:
        return False
    mapped.close()
    return True


def drop_pages(mapped: mmap.mmap, dropped: int, keep_from: int) -> int:
    """Drop the pages before `keep_from` (page-aligned down) from the process; the new mark."""
    upto = keep_from - keep_from % mmap.PAGESIZE
    if upto > dropped and hasattr(mapped, "madvise"):
        mapped.madvise(mmap.MADV_DONTNEED, dropped, upto - dropped)
        return upto
    return dropped


def file_position(stream: io.BufferedIOBase) -> int:
    """How far into the capture file reading has got (into the compressed file, for gzip,
    which the decompressing child reads); -1 where that cannot be told (a pipe)."""
    raw = getattr(stream, "raw", None)
    if isinstance(raw, GunzipStream):
        return raw.source_position()
    try:
        return stream.tell()
    except OSError:
        return -1


def read_upto(stream: io.BufferedIOBase, size: int) -> tuple[bytes, str]:
    """Up to `size` bytes and, if the stream broke first, why; bytes read before the break kept.

    `read1` asks the (decompressing) stream for one piece at a time, so an error in the
    compressed data loses nothing that was decoded before it.
    """
    parts: list[bytes] = []
    remaining = size
    while remaining > 0:
        try:
            part = stream.read1(remaining)
        except OSError as exc:  # the gunzip child's DecompressionError among them
            return b"".join(parts), _why(exc)
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts), ""


def read_into(stream: io.BufferedIOBase, target: memoryview) -> tuple[int, str]:
    """Fill `target` as far as the stream goes; (bytes read, why it broke or '').

    One `readinto1` at a time, so an error in compressed data keeps what came before it.
    """
    done = 0
    while done < len(target):
        try:
            got = stream.readinto1(target[done:])
        except OSError as exc:  # the gunzip child's DecompressionError among them
            return done, _why(exc)
        if not got:
            break
        done += got
    return done, ""


class _StreamHasher:
    """The SHA-256 of a stream, on a thread of its own: hashlib lets go of the GIL on large
    pieces, so the hash overlaps the walk and the decoding (the 2M capture through a pipe:
    2.7 s, against 3.7 s with the hash on the reading thread). A piece in a ring buffer is
    hashed from the buffer itself: `settle` waits for it before the buffer is written again."""

    def __init__(self) -> None:
        self._sha256 = hashlib.sha256()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="confscope-hash")
        self._pending: dict[int, Future[None]] = {}  # the last piece of each ring buffer

    def add(self, data: bytes | memoryview, slot: int) -> None:
        """Hash `data` after the pieces added before it; `slot` -1: a copy of its own."""
        done = self._pool.submit(self._sha256.update, data)
        if slot >= 0:
            self._pending[slot] = done

    def settle(self, slot: int) -> None:
        done = self._pending.pop(slot, None)
        if done is not None:
            done.result()

    def hexdigest(self) -> str:
        self._pool.shutdown(wait=True)  # (pieces are hashed in order, one thread)
        self._pending.clear()
        return self._sha256.hexdigest()


class CaptureReader:
    """Iterate over the packets of one capture file in batches."""

    def __init__(self, path: str | os.PathLike[str], chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                 buffers: int = 1, hash_stream: bool = False, size: int | None = None):
        """`hash_stream`: a capture read through a pipe (`from_pipe`) is hashed as it is read
        (`stream_sha256`, `stream_bytes`). `size`: read only the file's first `size` bytes
        (compressed ones for gzip), as many as are hashed (`provenance.snapshot_size`): bytes
        a program writing the file adds meanwhile are neither hashed nor analyzed."""
        self.path = Path(path)
        self.size = size
        self.chunk_bytes = max(chunk_bytes, MIN_CHUNK_BYTES)
        self.buffers = max(buffers, 1)
        self.info = CaptureInfo(path=str(self.path))
        self.from_pipe = is_stream(self.path)  # read, not mapped, and hashed here if asked
        self._hasher = _StreamHasher() if hash_stream and self.from_pipe else None
        self.stream_bytes = 0  # bytes read from a pipe
        self._walked = 0  # capture bytes walked into batches (for the average record size)
        self._mapped: mmap.mmap | None = None  # the mapping, held until `check_unchanged`
        self._guard = -1  # its guard slot
        self.mapped_size = 0  # the bytes mapped: the file's size then, or `size` (0: it is read)
        # (first frame, file offset, record ends) of the batches that may still be read
        self._recent: deque[tuple[int, int, np.ndarray]] = deque()

    def _span(self) -> int:
        """How many bytes the next chunk takes: `chunk_bytes`, or less for small packets (see
        MAX_BATCH_PACKETS). Batches never change results, only their size."""
        if not self.info.packets:  # (the first: a sample of the record sizes)
            return min(self.chunk_bytes, FIRST_CHUNK_BYTES)
        average = self._walked / self.info.packets
        return int(min(self.chunk_bytes, max(MIN_CHUNK_BYTES, average * MAX_BATCH_PACKETS)))

    def stream_sha256(self) -> str:
        """The SHA-256 of the bytes read from a pipe (all of them, once `batches` has ended)."""
        return self._hasher.hexdigest() if self._hasher is not None else ""

    def _consumed(self, data: bytes | memoryview, slot: int = -1) -> None:
        """`data` was read (`slot`: the ring buffer it lies in, -1 for a copy of its own)."""
        self.stream_bytes += len(data)
        if self._hasher is not None:
            self._hasher.add(data, slot)

    def _reuse(self, slot: int) -> None:
        """Ring buffer `slot` is about to be written again."""
        if self._hasher is not None:
            self._hasher.settle(slot)

    def batches(self) -> Iterator[PacketBatch]:
        """The capture's packets in file order; `info` is filled in as they are read."""
        self.info = CaptureInfo(path=str(self.path))
        size = None if self.from_pipe else self.size
        with open_capture_stream(self.path, size) as (stream, compressed):
            self.info.compressed = compressed
            # (`size` bytes of the plain file at most; the decompressing child keeps to them)
            left = -1 if size is None or compressed else size
            head, error = read_upto(stream, 24 if left < 0 else min(24, left))
            self._consumed(head)
            walker, start = self._make_walker(head, error)
            self.info.file_format = walker.file_format
            # a stream (even stdin redirected from a file) is read, and hashed, chunk by chunk
            mapping = None if compressed or self.from_pipe else _guarded_map(stream, size)
            if mapping is None:
                yield from self._walk_chunks(stream, walker, head, start,
                                             left if left < 0 else left - len(head))
            else:
                self._watch(*mapping)
                yield from self._walk_mapped(mapping[0], walker, start)

    def check_unchanged(self) -> None:
        """Once the batches have been analyzed: record as damage bytes of the mapped file lost
        after its last chunk was walked (later reads of them gave zeros). Stops watching."""
        if self._mapped is None:
            return
        lost = self._lost_from()
        self._mapped = None  # (its guard ends when the batches' views of it are gone too)
        if lost is not None:
            self._lost(*lost)

    def _watch(self, mapped: mmap.mmap, slot: int) -> None:
        """Hold the mapping and its guard slot: the guard's counts are read until
        `check_unchanged`, and the slot is not reused while the mapping lives."""
        self._mapped, self._guard = mapped, slot
        self.mapped_size = len(mapped)
        self._recent = deque(maxlen=self.buffers + RECENT_BEYOND_RING)

    def _lost_from(self) -> tuple[int, str] | None:
        """Where the mapped file's bytes are lost, and why: it shrank, or pages could not be
        read (they read as zeros); None while neither happened."""
        assert self._mapped is not None
        size = self._mapped.size()  # (the file's size now: mmap keeps a descriptor of it)
        if size < self.mapped_size:
            return size, f"the file shrank to {size:,} bytes while it was being read"
        pages, first = guarded_faults(self._guard)
        if pages:
            return first, (f"bytes from {first:,} on could not be read from the file (a read "
                           "error, or it was cut and grew again)")
        return None

    def _loss_within(self, offset: int, end: int, result: WalkResult) -> tuple[int, str] | None:
        """The loss (`_lost_from`) that the walk of the chunk from `offset` to `end` ran into;
        None if there is none, or it lies past the chunk (a later one meets it), or past
        damage the walk stopped at (reported as such)."""
        lost = self._lost_from()
        if lost is None or lost[0] >= end:
            return None
        return None if result.error and offset + result.stop <= lost[0] else lost

    def _lost(self, offset: int, why: str) -> None:
        """The mapped file's bytes from `offset` on are lost: damage from the first frame past
        them."""
        frame = self._first_frame_past(offset)
        zeros = (f"; frames from {frame:,} on may have been read in part as zeros"
                 if frame <= self.info.packets else "")
        self._damage(offset, why + zeros, frame)

    def _first_frame_past(self, size: int) -> int:
        """The first frame handed on whose record ends past `size` bytes (the oldest one still
        remembered when that is older), or the next frame if none does."""
        for first, offset, ends in self._recent:
            past = np.flatnonzero(offset + ends > size)
            if past.size:
                return first + int(past[0])
        return self.info.packets + 1

    def _make_walker(self, head: bytes, read_error: str) -> tuple[Walker, int]:
        if read_error and len(head) < 24:
            raise CaptureFormatError(f"{self.path}: {self._read_problem()} ({read_error})")
        if not head:
            raise CaptureFormatError(f"{self.path}: empty file")
        try:
            if sniff_format(head) == "pcap":
                return PcapWalker(head), 24
            return PcapngWalker(head), 0
        except CaptureFormatError as exc:
            raise CaptureFormatError(f"{self.path}: {exc}") from None

    def _walk_chunks(
        self, stream: io.BufferedIOBase, walker: Walker, head: bytes, start: int, left: int = -1
    ) -> Iterator[PacketBatch]:
        """Read into a ring of `buffers` reused buffers (`left` more bytes at most, if not
        negative); the unfinished record moves to the front of the next one.

        A batch's arrays point into its buffer, which is refilled `buffers` batches later: a
        consumer may hold at most `buffers - 1` batches at a time (the pipeline holds one, or
        two with the read-ahead thread) and copies whatever it keeps.
        """
        ring = [bytearray(self.chunk_bytes + CARRY_ROOM) for _ in range(self.buffers)]
        turn = 0
        view = memoryview(ring[0])
        carried = len(head)
        view[:carried] = head
        file_offset = 0  # offset of view[0] in the (decompressed) capture
        eof, read_error = False, ""
        while not eof:
            want = self._span() if left < 0 else min(self._span(), left)
            got, read_error = read_into(stream, view[carried : carried + want])
            self._consumed(view[carried : carried + got], turn)
            eof = bool(read_error) or got < want or got == left
            left -= got if left > 0 else 0
            end = carried + got
            result = walker.walk(view[:end], start)
            self._walked += result.stop - start
            self._note_walker(walker)
            if len(result.records.data_offset):
                batch = self._to_batch(view[:end], result)
                batch.file_read = file_position(stream)
                yield batch
            if result.error:
                self._damage(file_offset + result.stop, result.error)
                return
            file_offset += result.stop
            carried, start = end - result.stop, 0
            turn = (turn + 1) % len(ring)
            self._reuse(turn)
            following = memoryview(ring[turn])
            following[:carried] = view[result.stop : end]
            view = following
        if read_error:
            self._damage(file_offset, f"{self._read_problem()} ({read_error})")
        elif carried:
            self._damage(file_offset, f"capture ends inside a record ({carried} bytes left)")

    def _walk_mapped(self, mapped: mmap.mmap, walker: Walker, start: int
                     ) -> Iterator[PacketBatch]:
        """Walk a mapped file chunk by chunk; each batch is a view of the mapping.

        Pages of batches older than `buffers` are dropped from the process (MADV_DONTNEED: the
        page cache keeps them, and a late reader would fault them back in), so the resident
        size stays that of the ring of buffers it replaces.
        """
        data = memoryview(mapped)
        size, offset, dropped = len(data), start, 0
        handed: deque[int] = deque(maxlen=self.buffers)  # starts of the last batches handed on
        while offset < size:
            end, result = self._walk_span(data, walker, offset)
            self._note_walker(walker)
            lost = self._loss_within(offset, end, result)
            if lost is not None:  # (the walk may have read zeros past it)
                result = WalkResult(_records_before(result.records, lost[0] - offset),
                                    min(max(lost[0] - offset, 0), result.stop))
            if len(result.records.data_offset):
                batch = self._to_batch(data[offset:end], result)
                batch.file_offset = offset
                batch.file_read = offset + result.stop
                self._recent.append((int(batch.frame[0]), offset,
                                     batch.data_offset + batch.caplen))
                yield batch
                handed.append(offset)
                dropped = drop_pages(mapped, dropped, handed[0])
            if lost is not None:
                self._lost(*lost)
                return
            if result.error:
                self._damage(offset + result.stop, result.error)
                return
            offset += result.stop
            if end == size or result.stop == 0:
                break
        if offset < size:
            self._damage(offset, f"capture ends inside a record ({size - offset} bytes left)")

    def _walk_span(self, data: memoryview, walker: Walker, offset: int
                   ) -> tuple[int, WalkResult]:
        """Walk one chunk from `offset`; a chunk that holds no whole record grows to take one."""
        span = self._span()
        end = min(offset + span, len(data))
        result = walker.walk(data[offset:end], 0)
        if result.stop == 0 and not result.error and end < len(data):
            end = min(offset + span + CARRY_ROOM, len(data))
            result = walker.walk(data[offset:end], 0)
        self._walked += result.stop
        return end, result

    def _read_problem(self) -> str:
        return "compressed data is damaged" if self.info.compressed else "read error"

    def _note_walker(self, walker: Walker) -> None:
        self.info.linktypes = set(walker.linktypes)
        self.info.timestamp_resolution = walker.timestamp_resolution
        self.info.skipped_blocks = walker.skipped_blocks

    def _damage(self, file_offset: int, reason: str, frame: int = -1) -> None:
        """Record the first damage: at `frame`, by default the next frame."""
        if self.info.damage is None:
            frame = self.info.packets + 1 if frame < 0 else frame
            self.info.damage = Damage(frame=frame, file_offset=file_offset, reason=reason)

    def _to_batch(self, buf: memoryview, result: WalkResult) -> PacketBatch:
        rec = result.records
        count = len(rec.data_offset)
        first = self.info.packets + 1
        batch = PacketBatch(
            buffer=np.frombuffer(buf, dtype=np.uint8),
            frame=np.arange(first, first + count, dtype=np.int64),
            ts_ns=np.asarray(rec.ts_ns, dtype=np.int64),
            data_offset=np.asarray(rec.data_offset, dtype=np.int64),
            caplen=np.asarray(rec.caplen, dtype=np.int64),
            wirelen=np.asarray(rec.wirelen, dtype=np.int64),
            linktype=np.asarray(rec.linktype, dtype=np.int32),
        )
        self.info.packets += count
        self.info.bytes_read += int(batch.caplen.sum())
        self.info.truncated_packets += int(np.count_nonzero(batch.caplen < batch.wirelen))
        return batch


def _records_before(records: RecordColumns | RecordArrays, limit: int) -> RecordArrays:
    """The records whose bytes end at or before `limit` (records are in file order)."""
    arrays = RecordArrays.join([records])
    ends = arrays.data_offset + arrays.caplen
    keep = int(np.argmax(ends > limit)) if ends.size and ends[-1] > limit else ends.size
    return RecordArrays(*(getattr(arrays, name)[:keep] for name in
                          ("data_offset", "caplen", "wirelen", "ts_ns", "linktype")))
