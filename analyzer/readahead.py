"""Read and decode the next batch on a second thread while the current one is analyzed.

The record walkers and header decoders spend their time in C and numpy code that releases the
GIL, so reading batch i+1 overlaps with the Python-heavy analysis of batch i. Batches come out
in file order, so results are the same with or without the thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
_DONE = object()


class ReadAhead(Generic[T]):
    """Run `produce` on a thread, `depth` items ahead of the consumer."""

    def __init__(self, produce: Callable[[], Iterator[T]], depth: int = 1) -> None:
        self._produce = produce
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="confscope-readahead",
                                        daemon=True)

    def __iter__(self) -> Iterator[T]:
        self._thread.start()
        try:
            while True:
                item = self._queue.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item  # type: ignore[misc]
        finally:
            self._stop.set()
            self._drain()
            self._thread.join()

    def _run(self) -> None:
        try:
            for item in self._produce():
                if not self._put(item):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put(exc)
            return
        self._put(_DONE)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _drain(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return
