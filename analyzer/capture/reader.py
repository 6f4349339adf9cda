"""Read pcap, pcapng and gzip-compressed captures as a stream of `PacketBatch`es.

Memory stays bounded: the file is read in chunks of `chunk_bytes`; a record that straddles two
chunks is carried over. A damaged capture is read up to the damage, which is recorded in
`CaptureInfo.damage` rather than raised.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from analyzer.capture.batch import CaptureInfo, Damage, PacketBatch
from analyzer.capture.formats import PcapngWalker, PcapWalker, Walker, WalkResult, sniff_format
from analyzer.errors import CaptureFormatError, ConfscopeError

DEFAULT_CHUNK_BYTES = 64 * 1024 * 1024
GZIP_MAGIC = b"\x1f\x8b"
_READ_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile, OSError)


def open_capture_stream(path: Path) -> tuple[BinaryIO, str]:
    """Open `path` for reading, transparently decompressing gzip; one-line errors otherwise."""
    if not path.exists():
        raise ConfscopeError(f"{path}: no such file")
    if path.is_dir():
        raise ConfscopeError(f"{path}: is a directory, not a capture file")
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise ConfscopeError(f"{path}: cannot open ({exc.strerror})") from None
    if raw.read(2) == GZIP_MAGIC:
        raw.seek(0)
        return gzip.GzipFile(fileobj=raw, mode="rb"), "gzip"  # type: ignore[return-value]
    raw.seek(0)
    return raw, ""


class CaptureReader:
    """Iterate over the packets of one capture file in batches."""

    def __init__(self, path: str | os.PathLike[str], chunk_bytes: int = DEFAULT_CHUNK_BYTES):
        self.path = Path(path)
        self.chunk_bytes = max(chunk_bytes, 4096)
        self.info = CaptureInfo(path=str(self.path))

    def batches(self) -> Iterator[PacketBatch]:
        stream, compressed = open_capture_stream(self.path)
        self.info.compressed = compressed
        with stream:
            head = self._read(stream, 24)
            walker, start = self._make_walker(head)
            yield from self._walk_chunks(stream, walker, head, start)
        self.info.file_format = walker.file_format
        self.info.linktypes = set(walker.linktypes)
        self.info.timestamp_resolution = walker.timestamp_resolution
        self.info.skipped_blocks = getattr(walker, "skipped_blocks", 0)

    def _make_walker(self, head: bytes) -> tuple[Walker, int]:
        if not head:
            raise CaptureFormatError(f"{self.path}: empty file")
        try:
            kind = sniff_format(head)
        except CaptureFormatError as exc:
            raise CaptureFormatError(f"{self.path}: {exc}") from None
        if kind == "pcap":
            if len(head) < 24:
                raise CaptureFormatError(f"{self.path}: truncated pcap file header")
            return PcapWalker(head), 24
        return PcapngWalker(), 0

    def _walk_chunks(
        self, stream: BinaryIO, walker: Walker, carry: bytes, start: int
    ) -> Iterator[PacketBatch]:
        file_offset = 0  # file offset of carry[0]
        eof = False
        while not eof:
            chunk, eof = self._next_chunk(stream, file_offset + len(carry))
            buf = carry + chunk
            result = walker.walk(buf, start)
            if result.records.data_offset:
                yield self._to_batch(buf, result)
            if result.error:
                self._damage(file_offset + result.stop, result.error)
                return
            file_offset += result.stop
            carry, start = buf[result.stop :], 0
        if carry:
            self._damage(file_offset, f"capture ends inside a record ({len(carry)} bytes left)")

    def _next_chunk(self, stream: BinaryIO, offset: int) -> tuple[bytes, bool]:
        try:
            chunk = self._read(stream, self.chunk_bytes)
        except _READ_ERRORS as exc:
            self._damage(offset, f"compressed data is damaged ({exc})")
            return b"", True
        return chunk, len(chunk) < self.chunk_bytes

    @staticmethod
    def _read(stream: BinaryIO, size: int) -> bytes:
        parts, remaining = [], size
        while remaining > 0:
            part = stream.read(remaining)
            if not part:
                break
            parts.append(part)
            remaining -= len(part)
        return b"".join(parts)

    def _damage(self, file_offset: int, reason: str) -> None:
        if self.info.damage is None:
            frame = self.info.packets + 1
            self.info.damage = Damage(frame=frame, file_offset=file_offset, reason=reason)

    def _to_batch(self, buf: bytes, result: WalkResult) -> PacketBatch:
        rec = result.records
        count = len(rec.data_offset)
        first = self.info.packets + 1
        batch = PacketBatch(
            buffer=np.frombuffer(buf, dtype=np.uint8),
            frame=np.arange(first, first + count, dtype=np.int64),
            ts_ns=np.array(rec.ts_ns, dtype=np.int64),
            data_offset=np.array(rec.data_offset, dtype=np.int64),
            caplen=np.array(rec.caplen, dtype=np.int64),
            wirelen=np.array(rec.wirelen, dtype=np.int64),
            linktype=np.array(rec.linktype, dtype=np.int32),
        )
        self.info.packets += count
        self.info.bytes_read += int(batch.caplen.sum())
        self.info.truncated_packets += int(np.count_nonzero(batch.caplen < batch.wirelen))
        return batch
