"""Media workers: the media path of one capture spread over processes, flow by flow.

The parent process reads, decodes, keeps the flow table and runs the slow path. For each batch
it hands every worker the UDP payloads of that worker's flows (flow index modulo the number of
workers) as offsets into the capture file, which each worker maps for itself: the page cache
holds the file once, and nothing but offsets and a few columns crosses the pipes. The workers
keep their flows' streams, statistics and ECB samples, and send them back at the end.

What the media path reads of other flows travels with the batches, in order: the flows' endpoints
and the SDP m= lines (for clock rates), so a worker sees at each batch exactly what one process
would have seen. The flow modes (which depend on the slow path's facts) are decided by the
parent and sent per payload.
"""

from __future__ import annotations

import gc
import mmap
import multiprocessing
import multiprocessing.queues
import queue
import signal
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import NoReturn

import numpy as np

from analyzer.capture.batch import PacketBatch
from analyzer.capture.reader import drop_pages
from analyzer.errors import ConfscopeError
from analyzer.facts import CaptureFacts, Endpoint, SdpMedia
from analyzer.flows import Flow, FlowTable
from analyzer.media import MediaExtractor, MediaPart, MediaWork
from analyzer.speedups import guard_mapping

JOIN_SECONDS = 5.0
POLL_SECONDS = 0.5
QUEUED_BATCHES = 2


@dataclass(slots=True)
class BatchWork:
    """One worker's share of a batch, and what it must learn first."""

    file_offset: int  # where the batch's bytes start in the capture file
    size: int
    work: MediaWork
    new_flows: list[Flow]  # flows created since the last batch (all workers get all flows)
    new_sdp: list[tuple[Endpoint, SdpMedia]]  # SDP m= lines seen since the last batch


Message = BatchWork | None  # None: the capture is read, send your findings


class MediaPool:
    """`workers` processes, forked now (before any thread starts), that scan a mapped capture."""

    def __init__(self, path: Path, workers: int, flows: FlowTable, capture: CaptureFacts) -> None:
        self._path, self._flows, self._capture = path, flows, capture
        self._sent_flows = self._sent_sdp = 0
        self._finished = False
        context = multiprocessing.get_context("fork")
        self._conns: list[Connection] = []  # the workers' answers
        self._inboxes: list[multiprocessing.queues.Queue[Message]] = []  # their work
        self._procs: list[multiprocessing.process.BaseProcess] = []
        for _ in range(workers):
            ours, theirs = context.Pipe(duplex=False)
            # a queue's own thread pickles and writes, so the slow path goes on meanwhile;
            # a few batches ahead at most (bounded memory)
            inbox: multiprocessing.queues.Queue[Message] = context.Queue(QUEUED_BATCHES)
            proc = context.Process(target=_worker, args=(inbox, theirs, str(path)),
                                   name="confscope-media", daemon=True)
            proc.start()
            theirs.close()
            self._conns.append(ours)
            self._inboxes.append(inbox)
            self._procs.append(proc)

    def submit(self, batch: PacketBatch, work: MediaWork) -> None:
        """Hand each worker its flows' payloads of `batch` (a view of the file's mapping)."""
        if batch.file_offset < 0:
            raise ConfscopeError(f"{self._path}: the capture could not be mapped for the media "
                                 "workers (was it replaced while being read?)")
        new_flows = self._flows.flows[self._sent_flows:]
        new_sdp = self._capture.sdp_log[self._sent_sdp:]
        self._sent_flows += len(new_flows)
        self._sent_sdp += len(new_sdp)
        owner = work.flow % len(self._inboxes)
        for index in range(len(self._inboxes)):
            part = work.part(np.flatnonzero(owner == index))
            self._send(index, BatchWork(batch.file_offset, batch.buffer.size, part,
                                        new_flows, new_sdp))

    def finish(self, media: MediaExtractor) -> None:
        """Collect the workers' findings into `media` (the parent's extractor)."""
        for index in range(len(self._inboxes)):
            self._send(index, None)
        media.absorb([self._receive(conn) for conn in self._conns])
        self._finished = True

    def close(self) -> None:
        """Stop the workers (they have finished, or the analysis failed)."""
        for inbox in self._inboxes:
            inbox.cancel_join_thread()  # a dead worker leaves its queue unread
            inbox.close()
        for conn in self._conns:
            conn.close()
        for proc in self._procs:
            if self._finished:  # they are exiting
                proc.join(JOIN_SECONDS)
            if proc.is_alive():  # waiting for batches that will not come
                proc.kill()
            proc.join()

    def _send(self, index: int, message: Message) -> None:
        """Queue `message` for worker `index`, waiting while its queue is full (and the worker
        is alive)."""
        while True:
            try:
                self._inboxes[index].put(message, timeout=POLL_SECONDS)
                return
            except queue.Full:
                if not self._procs[index].is_alive():
                    self._failed(self._conns[index])

    def _receive(self, conn: Connection) -> MediaPart:
        try:
            kind, payload = conn.recv()
        except (EOFError, ConnectionResetError):
            self._failed(conn)
        if kind == "error" or not isinstance(payload, MediaPart):
            raise ConfscopeError(f"a media worker failed: {payload}")
        return payload

    def _failed(self, conn: Connection) -> NoReturn:
        """A worker is gone: its error if it sent one, else how it ended."""
        if conn.poll(0):
            try:
                kind, payload = conn.recv()
            except (EOFError, OSError):
                kind, payload = "", None
            if kind == "error":
                raise ConfscopeError(f"a media worker failed: {payload}")
        proc = self._procs[self._conns.index(conn)]
        proc.join(JOIN_SECONDS)
        raise ConfscopeError(f"a media worker stopped unexpectedly (exit code {proc.exitcode})")


def _worker(inbox: multiprocessing.queues.Queue[Message], conn: Connection, path: str) -> None:
    """A media worker's life: batches until "finish", then its findings (or its error)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles ^C and stops us
    gc.enable()  # (forked while the parent's pipeline pauses it: this process runs on alone)
    try:
        with open(path, "rb") as handle:
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        guard_mapping(mapped)  # (a file that shrinks reads as zeros: the reader reports it)
        conn.send(("done", _scan_batches(inbox, mapped)))
    except BaseException as exc:  # reported to the parent, which raises it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _scan_batches(inbox: multiprocessing.queues.Queue[Message], mapped: mmap.mmap
                  ) -> MediaPart:
    flows, capture = FlowTable(), CaptureFacts()
    media = MediaExtractor(flows, capture, [])
    dropped = 0
    while True:
        message = inbox.get()
        if message is None:
            media.finish()
            return media.part()
        flows.flows.extend(message.new_flows)
        for endpoint, entry in message.new_sdp:
            capture.add_sdp(endpoint, entry)
        start, end = message.file_offset, message.file_offset + message.size
        media.scan(np.frombuffer(mapped, np.uint8, count=message.size, offset=start),
                   message.work)
        # what is kept was copied: drop the batch's pages from this process (RSS bound)
        dropped = drop_pages(mapped, dropped, end)
